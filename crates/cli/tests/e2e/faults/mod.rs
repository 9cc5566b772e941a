//! The fault suite: every scenario breaks one component mid-flight on the real stack, then
//! checks the same invariants ([`invariants::assert_invariants`]).
//!
//! **Who recovered.** Scenarios that the CDC path must survive on its own run with the
//! reconciler out of the way (the world's default) and assert that it repaired nothing
//! ([`World::reconciler_repairs`]), plus a bound on the time to final. Scenarios that need the
//! safety net (a Pub/Sub emulator restart loses its messages for good) turn it on and say so
//! in their name.
//!
//! Run alone: `scripts/test.sh --faults` (they restart shared services of the test stack, so
//! they never run beside other tests).

mod invariants;
mod readiness;
pub mod tap;

use std::time::Duration;

use serde_json::json;

use crate::world::{DLQ_TOPIC, Options, TOPIC, World};
use invariants::{Acknowledged, assert_invariants};
use liquidity_workflows::workflows::POLL_SOURCE_HEARTBEAT_TIMEOUT;
use tap::{Message, Tap, publish};

/// How long the reports of a `kill -9`ed workflow worker may take: its polls resume only once
/// Temporal times their attempts out (the heartbeat timeout), then the sources need their time.
const AFTER_A_DEAD_WORKFLOW_WORKER: Duration = POLL_SOURCE_HEARTBEAT_TIMEOUT.saturating_add(Duration::from_secs(90));

/// Sources that complete after 8 s, so that faults hit while workflows are polling.
fn slow_sources() -> Options {
    let slow = json!({ "completeAfter": "8s" });
    Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        ..Options::default()
    }
}

/// One user per tenant.
async fn users(world: &World) -> Vec<(usize, String)> {
    let mut users = Vec::new();
    for tenant in 0..world.dbs.tenants.len() {
        users.push((tenant, world.user(tenant).await));
    }
    users
}

/// One report per tenant.
async fn one_each(world: &World, users: &[(usize, String)]) -> Vec<Acknowledged> {
    let mut acknowledged = Vec::new();
    for (tenant, token) in users {
        acknowledged.push(Acknowledged::start(world, *tenant, token).await);
    }
    acknowledged
}

/// Waits until every content of these reports has been polled once: their workflows run.
async fn wait_polling(world: &World, acknowledged: &[Acknowledged]) {
    for ack in acknowledged {
        let url = world.dbs.tenants[ack.tenant].url.clone();
        let report = ack.report.clone();
        liquidity_test_support::wait_until(Duration::from_secs(60), "every content polled once", || {
            let (url, report) = (url.clone(), report.clone());
            async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                let unpolled: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM report_contents WHERE report_id = $1::uuid AND last_run_at = created_at",
                )
                .bind(&report)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                unpolled == 0
            }
        })
        .await;
    }
}

/// The CDC path did all the work: the reconciler repaired nothing.
fn assert_cdc_recovered(world: &World) {
    let repairs = world.reconciler_repairs();
    assert!(
        repairs.is_empty(),
        "the reconciler repaired work the CDC path should have done: {repairs:?}"
    );
}

#[tokio::test]
async fn relay_kill_9_mid_stream_loses_no_event() {
    // Arrange
    let mut world = World::start(Options::default()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;

    // Act: kill -9 while the first events flow; reports started while it is down; restart
    world.kill("relay");
    acknowledged.extend(one_each(&world, &users).await);
    world.restart("relay").await;
    acknowledged.extend(one_each(&world, &users).await);

    // Assert
    let outcome = assert_invariants(&world, &acknowledged, Duration::from_secs(90)).await;
    assert_cdc_recovered(&world);
    assert!(outcome.until_final < Duration::from_secs(90));
}

#[tokio::test]
async fn relay_sigterm_mid_stream_loses_no_event() {
    // Arrange
    let mut world = World::start(Options::default()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;

    // Act
    world.terminate("relay").await;
    acknowledged.extend(one_each(&world, &users).await);
    world.restart("relay").await;

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(90)).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn cdc_worker_kill_9_loses_no_event() {
    // Arrange
    let mut world = World::start(slow_sources()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act: the completion updates arrive while it is down
    world.kill("cdc-worker");
    acknowledged.extend(one_each(&world, &users).await);
    world.restart("cdc-worker").await;

    // Assert: unacknowledged messages are redelivered
    assert_invariants(&world, &acknowledged, Duration::from_secs(120)).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn workflow_worker_kill_9_resumes_every_poll() {
    // Arrange
    let mut world = World::start(slow_sources()).await;
    let users = users(&world).await;
    let acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act
    world.kill("workflow-worker");
    world.restart("workflow-worker").await;

    // Assert: Temporal retries the activities whose heartbeats stopped
    assert_invariants(&world, &acknowledged, AFTER_A_DEAD_WORKFLOW_WORKER).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn both_workers_kill_9_mid_flight_lose_nothing() {
    // Arrange
    let mut world = World::start(slow_sources()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act: both down, more reports meanwhile, both back
    world.kill("cdc-worker");
    world.kill("workflow-worker");
    acknowledged.extend(one_each(&world, &users).await);
    world.restart("cdc-worker").await;
    world.restart("workflow-worker").await;

    // Assert
    assert_invariants(&world, &acknowledged, AFTER_A_DEAD_WORKFLOW_WORKER).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn emulator_restart_loses_its_messages_and_the_reconciler_recovers_them() {
    // Arrange: this scenario needs the safety net
    let mut world = World::start(Options {
        reconciler: true,
        ..slow_sources()
    })
    .await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act: the emulator dies (forgetting topics, subscriptions and undelivered messages),
    // reports are started while it is down, and it comes back empty
    world.kill("pubsub");
    acknowledged.extend(one_each(&world, &users).await);
    world.restart("pubsub").await;

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(150)).await;
}

#[tokio::test]
async fn one_tenant_database_refusing_connections_does_not_delay_the_others() {
    // Arrange
    let world = World::start(Options::default()).await;
    let users = users(&world).await;
    let t2 = world.dbs.tenants[1].database.clone();
    let mut admin = admin().await;

    // Act: t2 refuses connections, its walsender and sessions are cut; t1 and t3 start reports
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{t2}" ALLOW_CONNECTIONS false"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND backend_type IN ('client backend', 'walsender')",
    )
    .bind(&t2)
    .execute(&mut admin)
    .await
    .unwrap();
    let healthy: Vec<Acknowledged> = futures::future::join_all(
        users
            .iter()
            .filter(|(tenant, _)| *tenant != 1)
            .map(|(tenant, token)| Acknowledged::start(&world, *tenant, token)),
    )
    .await;

    // Assert: t1 and t3 complete while t2 is still down, within a healthy run's time
    let started = std::time::Instant::now();
    for ack in &healthy {
        assert_eq!(
            world.wait_final(&ack.token, &ack.report, Duration::from_secs(30)).await,
            "completed"
        );
    }
    eprintln!(
        "t1 and t3 final in {:.1} s with t2 down",
        started.elapsed().as_secs_f64()
    );
    // then t2 comes back and works, and the invariants hold across all three
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{t2}" ALLOW_CONNECTIONS true"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut all = healthy;
    all.push(Acknowledged::start(&world, 1, &users[1].1).await);
    assert_invariants(&world, &all, Duration::from_secs(90)).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_pipeline_goes_on() {
    // Arrange
    let world = World::start(Options::default()).await;
    let users = users(&world).await;
    let dead_letters = Tap::on(&world, DLQ_TOPIC).await;

    // Act: garbage, an envelope of an unknown tenant, then real reports
    let poison = [
        Message { data: b"not json at all".to_vec(), attributes: Default::default() },
        Message {
            data: json!({ "op": "c", "source": { "name": "no-such-tenant", "table": "report_contents" },
                          "after": { "id": uuid::Uuid::new_v4(), "report_id": uuid::Uuid::new_v4(), "source": "source_1", "status": "in_progress" } })
            .to_string()
            .into_bytes(),
            attributes: Default::default(),
        },
    ];
    publish(&world, TOPIC, &poison).await;
    let acknowledged = one_each(&world, &users).await;

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(60)).await;
    assert_cdc_recovered(&world);
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "poison messages not dead-lettered: {dead:?}"
        );
        dead.extend(dead_letters.pull().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dead.iter().any(|m| m.data == b"not json at all"), "{dead:?}");
}

#[tokio::test]
async fn every_event_published_twice_still_gives_one_successful_run_per_content() {
    // Arrange: a tap that publishes every CDC event a second time
    let world = World::start(Options::default()).await;
    let users = users(&world).await;
    let tap = Tap::on(&world, TOPIC).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let duplicator = async {
        let mut duplicated = 0;
        while !stop.is_cancelled() {
            let originals: Vec<Message> = tap
                .pull()
                .await
                .into_iter()
                .filter(|m| !m.attributes.contains_key("duplicate"))
                .map(|mut m| {
                    m.attributes.insert("duplicate".into(), json!("1"));
                    m
                })
                .collect();
            duplicated += originals.len();
            if !originals.is_empty() {
                publish(&world, TOPIC, &originals).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        duplicated
    };

    // Act
    let check = async {
        let acknowledged = one_each(&world, &users).await;
        let second = one_each(&world, &users).await;
        let all: Vec<Acknowledged> = acknowledged.into_iter().chain(second).collect();
        let outcome = assert_invariants(&world, &all, Duration::from_secs(90)).await;
        stop.cancel();
        outcome
    };
    let (duplicated, _outcome) = tokio::join!(duplicator, check);

    // Assert: events were really duplicated (inserts and updates of 6 reports), and the
    // invariants above held (one successful run per content, finished_at set once)
    assert!(duplicated >= 6 * 3 * 2, "only {duplicated} events duplicated");
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn an_insert_delivered_after_its_completion_update_starts_nothing_new() {
    // Arrange: capture the INSERT events of finished reports
    let world = World::start(Options::default()).await;
    let users = users(&world).await;
    let tap = Tap::on(&world, TOPIC).await;
    let acknowledged = one_each(&world, &users).await;
    assert_invariants(&world, &acknowledged, Duration::from_secs(60)).await;
    let mut inserts: Vec<Message> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while inserts.len() < 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} INSERT events seen, 9 expected",
            inserts.len()
        );
        inserts.extend(tap.pull().await.into_iter().filter(|m| m.json()["op"] == "c"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(inserts.len(), 9, "one INSERT per content");

    // Act: the INSERTs again, after the completions; then a marker report behind them
    publish(&world, TOPIC, &inserts).await;
    let marker = one_each(&world, &users).await;
    assert_invariants(&world, &marker, Duration::from_secs(60)).await;

    // Assert: still one workflow run per content of the first reports
    for ack in &acknowledged {
        let report = world.report(&ack.token, &ack.report).await;
        for content in report["contents"].as_array().unwrap() {
            let workflow = liquidity_workflows::workflow_id(
                world.dbs.tenants[ack.tenant].id,
                content["id"].as_str().unwrap().parse().unwrap(),
            );
            assert_eq!(world.workflow_runs(&workflow).await, 1, "{workflow}");
        }
    }
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn two_cdc_workers_racing_the_finish_set_each_finished_at_once() {
    // Arrange: two replicas of each worker, ten users per tenant
    let world = World::start(Options {
        replicas: 2,
        ..Options::default()
    })
    .await;
    let mut users = Vec::new();
    for tenant in 0..3 {
        for _ in 0..10 {
            users.push((tenant, world.user(tenant).await));
        }
    }

    // Act: thirty reports at once
    let acknowledged: Vec<Acknowledged> = futures::future::join_all(
        users
            .iter()
            .map(|(tenant, token)| Acknowledged::start(&world, *tenant, token)),
    )
    .await;

    // Assert
    let outcome = assert_invariants(&world, &acknowledged, Duration::from_secs(180)).await;
    assert_eq!(outcome.duplicate_runs, 0);
    assert_cdc_recovered(&world);
}

/// A report whose `source` content failed, the others completed, with a reason containing
/// `reason`.
async fn assert_failed_source(world: &World, ack: &Acknowledged, source: &str, reason: &str) {
    let report = world.report(&ack.token, &ack.report).await;
    assert_eq!(report["status"], "failed", "{report}");
    for content in report["contents"].as_array().unwrap() {
        if content["source"] == source {
            assert_eq!(content["status"], "failed", "{content}");
            let data = content["data"].as_str().unwrap_or_default();
            assert!(data.contains(reason), "reason {data:?} should mention {reason:?}");
        } else {
            assert_eq!(content["status"], "completed", "{content}");
        }
    }
}

/// A source that never gives a usable answer (`behaviour`): after two bad answers its content
/// fails with a reason mentioning `reason`, the other two complete, and the CDC path alone ends
/// every report.
async fn a_broken_source_fails_only_its_content(source: &str, behaviour: serde_json::Value, reason: &str) {
    // Arrange
    let world = World::start(Options {
        simulator: json!({ source: behaviour }),
        workflow_env: vec![("SOURCE_MAX_BAD_ANSWERS", "2".to_owned())],
        ..Options::default()
    })
    .await;
    let users = users(&world).await;

    // Act
    let acknowledged = one_each(&world, &users).await;

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(90)).await;
    for ack in &acknowledged {
        assert_failed_source(&world, ack, source, reason).await;
    }
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn an_oversize_source_answer_fails_its_content_with_the_reason() {
    // 2 MB documents, above SOURCE_MAX_BODY (1 MiB)
    a_broken_source_fails_only_its_content("source_2", json!({ "documentPadding": 2_000_000 }), "SOURCE_MAX_BODY")
        .await;
}

#[tokio::test]
async fn a_redirecting_source_is_not_followed_and_its_content_fails_saying_so() {
    // a 307 elsewhere for every job request
    a_broken_source_fails_only_its_content("source_3", json!({ "redirectTo": "http://127.0.0.1:9" }), "redirect").await;
}

#[tokio::test]
async fn a_content_whose_workflow_was_closed_is_restarted_by_the_reconciler() {
    // Arrange: this scenario needs the safety net: a closed workflow never writes its row again
    let mut world = World::start(Options {
        reconciler: true,
        ..slow_sources()
    })
    .await;
    let users = users(&world).await;
    let acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act: with no worker alive (so no activity can still write the row), one content's
    // workflow is terminated, as Temporal data loss or an operator would; then the worker
    // comes back
    world.kill("workflow-worker");
    let report = world.report(&acknowledged[0].token, &acknowledged[0].report).await;
    let content = report["contents"][0]["id"].as_str().unwrap().parse().unwrap();
    let workflow = liquidity_workflows::workflow_id(world.dbs.tenants[0].id, content);
    world
        .temporal_client()
        .await
        .get_workflow_handle::<liquidity_workflows::FetchReportContentWorkflow>(workflow.clone())
        .terminate(
            temporalio_client::WorkflowTerminateOptions::builder()
                .reason("fault suite".to_owned())
                .build(),
        )
        .await
        .unwrap();
    world.restart("workflow-worker").await;

    // Assert: the content completes through a second run, and the reconciler says it did it
    assert_invariants(&world, &acknowledged, AFTER_A_DEAD_WORKFLOW_WORKER).await;
    assert_eq!(
        world.workflow_runs(&workflow).await,
        2,
        "{workflow}: the terminated run and the restarted one"
    );
    assert!(
        !world.reconciler_repairs().is_empty(),
        "the reconciler logged no repair"
    );
}

/// `scripts/stack.sh ARGS` on the test stack: the supervisor's `kill` and `pg-restart`, which
/// return once the service answers again.
fn stack(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/stack.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .env("LQDTY_STACK", "test")
        .status()
        .unwrap();
    assert!(status.success(), "scripts/stack.sh {args:?} failed: {status}");
}

async fn postgres_restart(mode: &str) {
    // Arrange
    let world = World::start(slow_sources()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act: PostgreSQL goes down under every role and the relay, and comes back
    stack(&["pg-restart", mode]);
    acknowledged.extend(one_each(&world, &users).await);

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(120)).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn postgres_fast_restart_loses_nothing() {
    postgres_restart("fast").await;
}

#[tokio::test]
async fn postgres_immediate_restart_loses_nothing() {
    postgres_restart("immediate").await;
}

#[tokio::test]
async fn temporal_kill_9_and_restart_loses_nothing() {
    // Arrange
    let world = World::start(slow_sources()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;
    wait_polling(&world, &acknowledged).await;

    // Act: the supervisor restarts Temporal (its state is in its SQLite file)
    stack(&["kill", "temporal"]);
    acknowledged.extend(one_each(&world, &users).await);

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(150)).await;
    assert_cdc_recovered(&world);
}

/// The walsender of tenant `tenant`'s replication slot (Debezium's connection).
async fn terminate_walsender(world: &World, tenant: usize) {
    let slot = format!("dbz_{}", world.dbs.tenants[tenant].database.to_lowercase());
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active",
    )
    .bind(&slot)
    .fetch_all(&mut admin().await)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "walsender of {slot}");
}

#[tokio::test]
async fn a_terminated_walsender_is_reconnected_and_loses_no_event() {
    // Arrange
    let world = World::start(Options::default()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;

    // Act: t1's Debezium connection is cut; its engine restarts while t2 and t3 stream on
    terminate_walsender(&world, 0).await;
    acknowledged.extend(one_each(&world, &users).await);

    // Assert
    assert_invariants(&world, &acknowledged, Duration::from_secs(90)).await;
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn a_dropped_replication_slot_is_recreated_and_the_re_snapshot_recovers_the_gap() {
    // Arrange: slow sources, so that reports started while the slot is gone are still in
    // progress when it is back
    let world = World::start(slow_sources()).await;
    let users = users(&world).await;
    let mut acknowledged = one_each(&world, &users).await;
    let slot = format!("dbz_{}", world.dbs.tenants[0].database.to_lowercase());

    // Act: drop t1's slot under the relay; start reports while it is gone
    liquidity_test_support::wait_until(Duration::from_secs(30), "t1's slot dropped", || {
        let slot = slot.clone();
        async move {
            let mut admin = admin().await;
            let _ = sqlx::query(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active",
            )
            .bind(&slot)
            .execute(&mut admin)
            .await;
            sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(&slot)
                .execute(&mut admin)
                .await
                .is_ok()
        }
    })
    .await;
    acknowledged.extend(one_each(&world, &users).await);

    // Assert: the relay re-created the slot and re-snapshotted (snapshot.mode=when_needed), and
    // that alone finished everything: the reconciler stayed idle
    assert_invariants(&world, &acknowledged, Duration::from_secs(120)).await;
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
        .bind(&slot)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    assert_eq!(slots, 1, "slot {slot} re-created");
    assert_cdc_recovered(&world);
}

#[tokio::test]
async fn an_event_over_the_pubsub_limit_is_dead_lettered_and_the_slot_moves_on() {
    // Arrange: a finished report of t1
    let world = World::start(Options::default()).await;
    let users = users(&world).await;
    let dead_letters = Tap::on(&world, DLQ_TOPIC).await;
    let first = one_each(&world, &users).await;
    assert_invariants(&world, &first, Duration::from_secs(60)).await;

    // Act: one of its contents gets an 11 MB document; with REPLICA IDENTITY FULL the event
    // would be over 22 MB
    use sqlx::Connection as _;
    let mut t1 = sqlx::PgConnection::connect(&world.dbs.tenants[0].url).await.unwrap();
    let updated = sqlx::query(
        "UPDATE report_contents SET data = repeat('x', 11 * 1024 * 1024) WHERE id = (
             SELECT id FROM report_contents WHERE report_id = $1::uuid AND source = 'source_1')",
    )
    .bind(&first[0].report)
    .execute(&mut t1)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    let after = one_each(&world, &users).await;

    // Assert: later reports of t1 still complete (the slot moved on), and the event's dead
    // letter names its tenant and reason
    assert_invariants(&world, &after, Duration::from_secs(60)).await;
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter for the oversize event"
        );
        dead.extend(
            dead_letters
                .pull()
                .await
                .into_iter()
                .filter(|m| m.attributes.contains_key("dead_letter_reason")),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = dead[0].json();
    assert_eq!(record["tenant"], world.dbs.tenants[0].id.to_string(), "{record}");
    assert!(record["size"].as_u64().unwrap() > 10_000_000, "{record}");
    assert_cdc_recovered(&world);
}

async fn admin() -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(&liquidity_test_support::admin_url())
        .await
        .unwrap()
}
