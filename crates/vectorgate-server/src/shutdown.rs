//! Graceful shutdown.
//!
//! On SIGTERM or SIGINT, [`crate::server::run`] drains in this order:
//! 1. `grpc.health.v1` turns NOT_SERVING and `/readyz` 503, so load
//!    balancers stop sending traffic;
//! 2. the gRPC listener closes (new connections are refused at once, see
//!    [`StopOnCancel`]) and the open connections get HTTP/2 GOAWAY: new
//!    calls are refused, in-flight calls (including streaming scans) run to
//!    completion;
//! 3. after at most `drain_timeout_ms` the remaining calls are abandoned;
//! 4. the HTTP port closes, the manager shuts down (its probe tasks are
//!    joined), and the process exits 0.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// SIGTERM and SIGINT handlers. Install them before announcing that the
/// server listens: from then on a signal drains instead of killing.
#[derive(Debug)]
pub struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl Signals {
    /// Installs the handlers (a failure is logged; Ctrl-C still works).
    pub fn install() -> Signals {
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot install a {name} handler");
                None
            }
        };
        Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Waits for SIGTERM or SIGINT and names the one that came.
    pub async fn received(&mut self) -> &'static str {
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        if self.terminate.is_none() && self.interrupt.is_none() {
            return match tokio::signal::ctrl_c().await {
                Ok(()) => "SIGINT",
                Err(error) => {
                    tracing::error!(%error, "cannot wait for signals; serving until killed");
                    std::future::pending().await
                }
            };
        }
        tokio::select! {
            () = next(&mut self.terminate) => "SIGTERM",
            () = next(&mut self.interrupt) => "SIGINT",
        }
    }
}

/// An accept stream that ends, and closes its listener, as soon as `stop`
/// is cancelled: while in-flight calls drain, new connections are refused
/// at once instead of waiting in the listen backlog.
///
/// tonic treats the end of the stream like its shutdown signal (it then
/// shuts every open connection down gracefully), provided a signal future
/// was given at all: pass `std::future::pending()`.
pub struct StopOnCancel<S> {
    inner: Option<S>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> std::fmt::Debug for StopOnCancel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopOnCancel")
            .field("open", &self.inner.is_some())
            .finish()
    }
}

impl<S> StopOnCancel<S> {
    /// Wraps `inner` until `stop` is cancelled.
    pub fn new(inner: S, stop: CancellationToken) -> Self {
        StopOnCancel {
            inner: Some(inner),
            stop: Box::pin(stop.cancelled_owned()),
        }
    }
}

impl<S: Stream + Unpin> Stream for StopOnCancel<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if self.stop.as_mut().poll(cx).is_ready() {
            // Dropping the stream closes the listening socket.
            self.inner = None;
            return Poll::Ready(None);
        }
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}
