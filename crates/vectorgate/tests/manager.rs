//! Deterministic tests of the failover manager: in-memory stores behind the
//! fault-injecting wrapper, on tokio's paused clock (no real sleeps).
//! Replication is off here: it is tested in real time in `replication.rs`,
//! since the journal's blocking I/O and a paused clock do not mix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use vectorgate::{
    BreakerState, DynStore, Error, ErrorKind, IndexSpec, ManagerConfig, ManagerStatus, Metric,
    RecallQuery, Record, VectorManager, VectorStore,
};
use vectorgate_testkit::fault::{Fault, FaultyStore};
use vectorgate_testkit::memory::MemoryStore;

const DIM: u32 = 4;

fn spec() -> IndexSpec {
    IndexSpec::new(DIM, Metric::Cosine)
}

fn record(i: usize) -> Record {
    Record {
        id: format!("r{i}"),
        team_id: "team".into(),
        dataset_id: "ds".into(),
        collection_id: "c".into(),
        vector: vec![1.0, i as f32, 0.5, 0.25],
        created_at_ms: 1_700_000_000_000 + i as i64,
        payload: None,
    }
}

fn query() -> RecallQuery {
    RecallQuery {
        team_id: "team".into(),
        dataset_ids: vec!["ds".into()],
        vector: vec![1.0, 2.0, 0.5, 0.25],
        limit: 3,
        ..Default::default()
    }
}

struct Rig {
    manager: VectorManager,
    primary: Arc<FaultyStore>,
    fallback: Arc<FaultyStore>,
}

/// Two in-memory stores holding the same 10 records, each behind a fault wrapper.
async fn rig_with(config: ManagerConfig) -> Rig {
    let mut wrapped = Vec::new();
    for name in ["primary", "fallback"] {
        let store = Arc::new(MemoryStore::new(name));
        store.ensure_schema(&spec()).await.unwrap();
        store
            .upsert(&(0..10).map(record).collect::<Vec<_>>())
            .await
            .unwrap();
        wrapped.push(FaultyStore::wrap(store));
    }
    let stores: Vec<DynStore> = wrapped.iter().map(|s| s.clone() as DynStore).collect();
    let manager = VectorManager::start(config, stores).await.unwrap();
    // Let the first probe of each store (made at once) finish, so tests
    // script faults against requests, not against that probe.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let fallback = wrapped.pop().unwrap();
    let primary = wrapped.pop().unwrap();
    Rig {
        manager,
        primary,
        fallback,
    }
}

async fn rig() -> Rig {
    rig_with(ManagerConfig::new(spec()).without_replication()).await
}

fn breaker_of(status: &ManagerStatus, store: &str) -> BreakerState {
    status.store(store).unwrap().breaker
}

#[tokio::test(start_paused = true)]
async fn request_that_hits_a_hard_failure_is_answered_by_the_fallback() {
    let rig = rig().await;
    assert_eq!(rig.manager.status().active.as_deref(), Some("primary"));
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));

    let calls_before = rig.primary.data_calls();
    let routed = rig
        .manager
        .recall_routed(&query())
        .await
        .expect("no error reaches the caller");
    assert_eq!(routed.served_by, "fallback");
    assert_eq!(routed.value.len(), 3);
    assert_eq!(
        rig.primary.data_calls() - calls_before,
        3,
        "the request tried the primary (3 attempts) before the fallback answered it"
    );
    let status = rig.manager.status();
    assert_eq!(breaker_of(&status, "primary"), BreakerState::Open);
    assert_eq!(status.active.as_deref(), Some("fallback"));

    // Later requests skip the open primary entirely.
    let calls_before = rig.primary.data_calls();
    for _ in 0..10 {
        assert_eq!(
            rig.manager.recall_routed(&query()).await.unwrap().served_by,
            "fallback"
        );
    }
    assert_eq!(rig.primary.data_calls(), calls_before);
}

#[tokio::test(start_paused = true)]
async fn hung_primary_is_cut_off_and_the_fallback_answers_within_the_deadline() {
    let rig = rig().await;
    rig.primary.set(Fault::Hang);
    let started = Instant::now();
    let routed = rig.manager.recall_routed(&query()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(routed.served_by, "fallback");
    // One attempt timeout (1 s) on the hung store, then the fallback: a
    // store that just hung is not tried again while another is usable.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "one 1 s attempt on the primary, then the fallback; took {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_half_opens_and_closes_after_three_successful_probes() {
    let rig = rig().await;
    let updates = rig.manager.subscribe();
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
    rig.manager.recall_routed(&query()).await.unwrap();
    assert_eq!(
        breaker_of(&rig.manager.status(), "primary"),
        BreakerState::Open
    );
    assert!(
        updates.has_changed().unwrap(),
        "the breaker change was published"
    );

    // The store recovers right away, but the breaker keeps it out for the
    // open period (5 s), and then for three successful probes (2 s apart).
    rig.primary.set(Fault::None);
    let opened = Instant::now();
    let mut states = Vec::new();
    while opened.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = rig.manager.status();
        let state = breaker_of(&status, "primary");
        if states.last().map(|(s, _)| *s) != Some(state) {
            states.push((state, opened.elapsed()));
        }
        let served = rig.manager.recall_routed(&query()).await.unwrap().served_by;
        let expected = if state == BreakerState::Closed {
            "primary"
        } else {
            "fallback"
        };
        assert_eq!(
            served,
            expected,
            "at {:?} in state {state:?}",
            opened.elapsed()
        );
    }
    let sequence: Vec<BreakerState> = states.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        sequence,
        vec![
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
    let half_open_at = states[1].1;
    let closed_at = states[2].1;
    assert!(
        half_open_at >= Duration::from_secs(5),
        "half-open at {half_open_at:?}"
    );
    assert!(
        closed_at >= half_open_at + Duration::from_secs(4),
        "closed at {closed_at:?}: three probes 2 s apart are needed after half-open at {half_open_at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flapping_store_does_not_bounce_traffic() {
    let rig = rig().await;
    let mut updates = rig.manager.subscribe();
    let watcher = tokio::spawn(async move {
        let mut actives = vec![updates.borrow_and_update().active.clone()];
        while updates.changed().await.is_ok() {
            let active = updates.borrow_and_update().active.clone();
            if actives.last() != Some(&active) {
                actives.push(active);
            }
        }
        actives
    });

    // Up 0.5 s, down 1 s: probes (every 2 s) never see it up three times
    // in a row, while requests keep meeting failures.
    rig.primary.set(Fault::Flap {
        up: Duration::from_millis(500),
        down: Duration::from_millis(1000),
    });
    let started = Instant::now();
    let mut failed = 0;
    while started.elapsed() < Duration::from_secs(60) {
        if rig.manager.recall_routed(&query()).await.is_err() {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed, 0, "no caller saw an error");
    rig.manager.shutdown().await;
    drop(rig);
    let actives = watcher.await.unwrap();
    assert_eq!(
        actives,
        vec![Some("primary".to_owned()), Some("fallback".to_owned())],
        "exactly one switch in 60 s of flapping"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_flapping_switches_at_most_once_per_open_period() {
    let rig = rig().await;
    let mut updates = rig.manager.subscribe();
    let watcher = tokio::spawn(async move {
        let mut switches = 0;
        let mut last = updates.borrow_and_update().active.clone();
        while updates.changed().await.is_ok() {
            let active = updates.borrow_and_update().active.clone();
            if active != last {
                switches += 1;
                last = active;
            }
        }
        switches
    });
    // Up 9 s, down 3 s: long enough to come back each cycle.
    rig.primary.set(Fault::Flap {
        up: Duration::from_secs(9),
        down: Duration::from_secs(3),
    });
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        rig.manager.recall_routed(&query()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.manager.shutdown().await;
    drop(rig);
    let switches = watcher.await.unwrap();
    let open_periods = 120 / 5;
    assert!(
        switches >= 2,
        "it should fail over and come back at least once, saw {switches}"
    );
    assert!(
        switches <= open_periods,
        "{switches} switches in 120 s: more than one per 5 s open period"
    );
}

#[tokio::test(start_paused = true)]
async fn every_store_down_gives_one_error_listing_each_store() {
    let rig = rig().await;
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
    rig.fallback.set(Fault::Fail(ErrorKind::Timeout));
    let error = rig.manager.recall_routed(&query()).await.unwrap_err();
    let Error::AllStoresFailed(failures) = &error else {
        panic!("expected AllStoresFailed, got {error:?}");
    };
    let names: Vec<&str> = failures.iter().map(|f| f.store.as_str()).collect();
    assert_eq!(names, vec!["primary", "fallback"]);
    assert_eq!(failures[0].kind, ErrorKind::Unavailable);
    assert_eq!(failures[0].attempts, 3);
    assert_eq!(failures[1].kind, ErrorKind::Timeout);
    let text = error.to_string();
    assert!(
        text.contains("primary (3 attempts)") && text.contains("fallback (3 attempts)"),
        "{text}"
    );
    assert!(error.is_retriable());

    // With both breakers open, the next request fails fast, saying why.
    let started = Instant::now();
    let error = rig.manager.recall_routed(&query()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(1));
    assert!(error.to_string().contains("circuit open"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn invalid_input_is_not_retried_not_failed_over_and_leaves_breakers_alone() {
    let rig = rig().await;
    // Rejected at the manager's edge: no store is called.
    let mut bad = query();
    bad.vector = vec![1.0, 2.0, 3.0];
    let before = (rig.primary.data_calls(), rig.fallback.data_calls());
    let error = rig.manager.recall_routed(&bad).await.unwrap_err();
    assert!(
        matches!(error, Error::InvalidInput { ref field, .. } if field == "vector"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("vector has 3 values, index dimension is 4")
    );
    assert_eq!(
        (rig.primary.data_calls(), rig.fallback.data_calls()),
        before
    );

    // Refused by the store itself: returned as is, once.
    rig.primary.fail_next(5, ErrorKind::InvalidInput);
    for _ in 0..5 {
        let error = rig.manager.recall_routed(&query()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(
        rig.primary.data_calls(),
        before.0 + 5,
        "one attempt each, no retry"
    );
    assert_eq!(rig.fallback.data_calls(), before.1, "no failover");
    let status = rig.manager.status();
    let primary = status.store("primary").unwrap();
    assert_eq!(primary.breaker, BreakerState::Closed);
    assert_eq!(primary.consecutive_failures, 0);
    assert_eq!(status.active.as_deref(), Some("primary"));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_on_the_same_store() {
    let rig = rig().await;
    let (primary_before, fallback_before) = (rig.primary.data_calls(), rig.fallback.data_calls());
    rig.primary.fail_next(2, ErrorKind::Unavailable);
    let routed = rig.manager.recall_routed(&query()).await.unwrap();
    assert_eq!(
        routed.served_by, "primary",
        "third attempt succeeds on the primary"
    );
    assert_eq!(rig.primary.data_calls() - primary_before, 3);
    assert_eq!(rig.fallback.data_calls(), fallback_before, "no failover");
    assert_eq!(
        breaker_of(&rig.manager.status(), "primary"),
        BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn writes_fail_over_and_keep_their_ids() {
    let rig = rig().await;
    rig.primary.set(Fault::Fail(ErrorKind::Unavailable));
    let mut fresh = record(100);
    fresh.id = String::new();
    let outcome = rig.manager.upsert(&[fresh]).await.unwrap();
    assert_eq!(outcome.ids.len(), 1);
    rig.primary.set(Fault::None);
    let on_fallback = rig
        .fallback
        .scan(&vectorgate::ScanRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(on_fallback.records.iter().any(|r| r.id == outcome.ids[0]));
}

#[tokio::test(start_paused = true)]
async fn operators_can_drain_force_and_resume() {
    let rig = rig().await;
    rig.manager.drain("primary").unwrap();
    assert_eq!(
        rig.manager.recall_routed(&query()).await.unwrap().served_by,
        "fallback"
    );
    assert!(rig.manager.status().store("primary").unwrap().drained);
    rig.manager.resume_auto();
    assert_eq!(
        rig.manager.recall_routed(&query()).await.unwrap().served_by,
        "primary"
    );
    rig.manager.force_active("fallback").unwrap();
    assert_eq!(rig.manager.status().active.as_deref(), Some("fallback"));
    assert_eq!(
        rig.manager.recall_routed(&query()).await.unwrap().served_by,
        "fallback"
    );
    rig.manager.resume_auto();
    assert_eq!(
        rig.manager.recall_routed(&query()).await.unwrap().served_by,
        "primary"
    );
    let error = rig.manager.drain("nope").unwrap_err();
    assert!(
        error.to_string().contains("no store named \"nope\""),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_down_at_start_joins_once_reachable() {
    let down = FaultyStore::wrap(Arc::new(MemoryStore::new("primary")));
    down.set(Fault::Fail(ErrorKind::Unavailable));
    let fallback = Arc::new(MemoryStore::new("fallback"));
    let manager = VectorManager::start(
        ManagerConfig::new(spec()).without_replication(),
        vec![down.clone() as DynStore, fallback as DynStore],
    )
    .await
    .unwrap();
    let status = manager.status();
    assert!(!status.store("primary").unwrap().schema_ready);
    assert_eq!(status.active.as_deref(), Some("fallback"));
    manager.upsert(&[record(1)]).await.unwrap();

    down.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = manager.status();
    assert!(status.store("primary").unwrap().schema_ready);
    assert_eq!(status.active.as_deref(), Some("primary"));
    manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_store_with_another_schema_stops_the_start() {
    let other = Arc::new(MemoryStore::new("old"));
    other
        .ensure_schema(&IndexSpec::new(8, Metric::L2))
        .await
        .unwrap();
    let error = VectorManager::start(
        ManagerConfig::new(spec()).without_replication(),
        vec![
            Arc::new(MemoryStore::new("new")) as DynStore,
            other as DynStore,
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::SchemaMismatch);
    let text = error.to_string();
    assert!(
        text.contains("dim 4, metric cosine") && text.contains("dim 8, metric l2"),
        "{text}"
    );

    let error = VectorManager::start(
        ManagerConfig::new(spec()).without_replication(),
        vec![
            Arc::new(MemoryStore::new("same")) as DynStore,
            Arc::new(MemoryStore::new("same")) as DynStore,
        ],
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("names must be unique"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_and_drop_leave_no_task_running() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let first = rig().await;
    assert_eq!(first.manager.running_tasks(), 2, "one probe per store");
    assert_eq!(metrics.num_alive_tasks(), baseline + 2);
    first.manager.shutdown().await;
    assert_eq!(first.manager.running_tasks(), 0);
    assert_eq!(metrics.num_alive_tasks(), baseline);
    let error = first.manager.recall_routed(&query()).await.unwrap_err();
    assert!(error.to_string().contains("shutting down"), "{error}");
    assert!(first.manager.status().shutting_down);

    // Dropping without shutdown cancels the probes too.
    let second = rig().await;
    assert_eq!(metrics.num_alive_tasks(), baseline + 2);
    drop(second);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), baseline);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_requests_leave_the_state_bounded() {
    let rig = rig().await;
    // Warm up: a minute of probes fills both sliding windows.
    for _ in 0..1000 {
        rig.manager.recall_routed(&query()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let warmed = rig.manager.footprint();
    // Exercise failures too: every 7th call fails once and is retried.
    for i in 0..100_000u32 {
        if i % 7 == 0 {
            rig.primary.fail_next(1, ErrorKind::Unavailable);
        }
        rig.manager.recall_routed(&query()).await.unwrap();
    }
    let after = rig.manager.footprint();
    assert_eq!(
        after, warmed,
        "internal state grew from {warmed} to {after}"
    );
    assert_eq!(
        after,
        2 * 20,
        "two full sliding windows of 20, nothing else"
    );
    assert_eq!(rig.manager.running_tasks(), 2);
}

#[tokio::test(start_paused = true)]
async fn config_from_toml_drives_the_manager() {
    let config = ManagerConfig::from_toml(
        r#"
        name = "vectors"
        [index]
        dim = 4
        metric = "cosine"
        [breaker]
        consecutive_failures = 1
        open_ms = 1000
        [retry]
        attempts = 1
        [replication]
        mode = "off"
        "#,
    )
    .unwrap();
    let rig = rig_with(config).await;
    rig.primary.fail_next(1, ErrorKind::Unavailable);
    let calls = rig.primary.data_calls();
    assert_eq!(
        rig.manager.recall_routed(&query()).await.unwrap().served_by,
        "fallback"
    );
    assert_eq!(rig.primary.data_calls() - calls, 1, "attempts = 1");
    assert_eq!(
        breaker_of(&rig.manager.status(), "primary"),
        BreakerState::Open
    );
    assert_eq!(rig.manager.name(), "vectors");
}
