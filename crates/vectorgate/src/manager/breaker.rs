//! The per-store circuit breaker: a pure state machine, fed with outcomes
//! and the current time, so it can be tested without a clock.
//!
//! Real calls are admitted only while the breaker is Closed. Trials in the
//! HalfOpen state are made by the store's health probe, never by a caller's
//! request: a recovering store earns traffic back without any caller paying
//! for the experiment.

use super::config::BreakerConfig;
use std::time::Duration;
use tokio::time::Instant;

/// Breaker state, as reported in status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Serving traffic.
    Closed,
    /// Taken out of rotation after failures; waits for the open period.
    Open,
    /// Open period over; health probes are the trials.
    HalfOpen,
}

impl BreakerState {
    /// Lowercase label for logs, metrics and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// Fixed-size ring of recent outcomes (true = failure). Never grows.
#[derive(Debug)]
struct Window {
    slots: Box<[bool]>,
    next: usize,
    len: usize,
    failures: usize,
}

impl Window {
    fn new(size: usize) -> Self {
        Window {
            slots: vec![false; size.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            failures: 0,
        }
    }

    fn push(&mut self, failed: bool) {
        if self.len == self.slots.len() {
            if self.slots[self.next] {
                self.failures -= 1;
            }
        } else {
            self.len += 1;
        }
        self.slots[self.next] = failed;
        if failed {
            self.failures += 1;
        }
        self.next = (self.next + 1) % self.slots.len();
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.failures = 0;
    }
}

/// One store's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    open_until: Instant,
    consecutive_failures: u32,
    trial_successes: u32,
    window: Window,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Breaker {
            window: Window::new(config.window),
            config,
            state: BreakerState::Closed,
            open_until: now,
            consecutive_failures: 0,
            trial_successes: 0,
        }
    }

    /// Current state, after moving Open → HalfOpen if the open period is over.
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if self.state == BreakerState::Open && now >= self.open_until {
            self.state = BreakerState::HalfOpen;
            self.trial_successes = 0;
        }
        self.state
    }

    /// Whether a caller's request may use the store now.
    pub fn admits(&mut self, now: Instant) -> bool {
        self.state(now) == BreakerState::Closed
    }

    /// Failures in a row, for status.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Outcomes held in the sliding window (bounded by its size).
    pub fn window_len(&self) -> usize {
        self.window.len
    }

    /// Records the outcome of a caller's request (`failed` = retriable error).
    /// Outcomes that arrive while the breaker is not closed (calls that were
    /// already in flight when it opened) are ignored: they say nothing new.
    pub fn on_call(&mut self, failed: bool, now: Instant) {
        if self.state(now) != BreakerState::Closed {
            return;
        }
        self.record_closed(failed, now);
    }

    /// Records a health probe. While closed it counts like a call; while
    /// half-open it is the trial; while open it changes nothing.
    pub fn on_probe(&mut self, failed: bool, now: Instant) {
        match self.state(now) {
            BreakerState::Closed => self.record_closed(failed, now),
            BreakerState::Open => {}
            BreakerState::HalfOpen => {
                if failed {
                    self.trip(now);
                } else {
                    self.trial_successes += 1;
                    if self.trial_successes >= self.config.close_after_successes {
                        self.state = BreakerState::Closed;
                        self.consecutive_failures = 0;
                        self.window.clear();
                    }
                }
            }
        }
    }

    fn record_closed(&mut self, failed: bool, now: Instant) {
        self.window.push(failed);
        if failed {
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
        let ratio_tripped = self.window.len >= self.config.min_calls
            && (self.window.failures as f64) >= self.config.failure_ratio * self.window.len as f64;
        if failed
            && (self.consecutive_failures >= self.config.consecutive_failures || ratio_tripped)
        {
            self.trip(now);
        }
    }

    fn trip(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.open_until = now + Duration::from_millis(self.config.open_ms);
        self.trial_successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (Breaker, Instant) {
        let now = Instant::now();
        (Breaker::new(BreakerConfig::default(), now), now)
    }

    #[test]
    fn opens_after_three_consecutive_failures() {
        let (mut b, now) = breaker();
        b.on_call(true, now);
        b.on_call(true, now);
        assert!(b.admits(now));
        b.on_call(true, now);
        assert_eq!(b.state(now), BreakerState::Open);
        assert!(!b.admits(now));
    }

    #[test]
    fn a_success_resets_the_run() {
        let (mut b, now) = breaker();
        for _ in 0..10 {
            b.on_call(true, now);
            b.on_call(true, now);
            b.on_call(false, now);
            b.on_call(false, now);
            b.on_call(false, now);
            b.on_call(false, now);
        }
        // Two failures in a row at most, and at most 40% of any window.
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn opens_on_failure_ratio_once_enough_calls() {
        let (mut b, now) = breaker();
        // Alternate: never 3 in a row, but 50% failures.
        for i in 0..9 {
            b.on_call(i % 2 == 0, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed, "9 calls < min_calls");
        b.on_call(false, now);
        b.on_call(true, now); // 11 calls, 6 failures
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn half_open_after_open_period_then_closes_after_three_trials() {
        let (mut b, now) = breaker();
        for _ in 0..3 {
            b.on_call(true, now);
        }
        let open = Duration::from_millis(5000);
        assert_eq!(
            b.state(now + open - Duration::from_millis(1)),
            BreakerState::Open
        );
        let later = now + open;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(!b.admits(later), "callers never trial a half-open store");
        b.on_probe(false, later);
        b.on_probe(false, later);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        b.on_probe(false, later);
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.window_len(), 0);
    }

    #[test]
    fn failed_trial_reopens_for_a_full_period() {
        let (mut b, now) = breaker();
        for _ in 0..3 {
            b.on_call(true, now);
        }
        let t1 = now + Duration::from_millis(5000);
        b.on_probe(false, t1);
        b.on_probe(true, t1);
        assert_eq!(b.state(t1), BreakerState::Open);
        assert_eq!(
            b.state(t1 + Duration::from_millis(4999)),
            BreakerState::Open
        );
        assert_eq!(
            b.state(t1 + Duration::from_millis(5000)),
            BreakerState::HalfOpen
        );
    }

    #[test]
    fn calls_while_open_are_ignored_and_window_is_bounded() {
        let (mut b, now) = breaker();
        for _ in 0..1000 {
            b.on_call(false, now);
        }
        assert_eq!(b.window_len(), 20);
        for _ in 0..3 {
            b.on_call(true, now);
        }
        b.on_call(false, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }
}
