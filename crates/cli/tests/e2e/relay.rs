//! The CDC relay on the real stack: which row changes become events, and what it says about
//! itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::faults::tap::{Message, Tap};
use crate::world::{Options, TOPIC, World, json_of};

/// Pulls the tap until `done` holds for everything pulled so far, and returns it.
async fn pull_until(tap: &Tap<'_>, what: &str, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s; got {seen:?}"
        );
        seen.extend(tap.pull().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// UPDATEs of `report_contents` counted by PostgreSQL (polls and completions alike).
async fn content_updates(world: &World) -> i64 {
    let mut conn = world.dbs.connect(0).await;
    sqlx::query_scalar("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'report_contents'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn polls_that_only_move_last_run_at_are_no_events_while_every_status_change_is_one() {
    // Arrange: sources that complete after 4 s, polled every second
    let slow = json!({ "completeAfter": "4s" });
    let world = World::start(Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        ..Options::default()
    })
    .await;
    let token = world.user(0).await;
    let tap = Tap::on(&world, TOPIC).await;

    // Act: one report through to the end, then a second one whose INSERTs come after every
    // change of the first in the tenant's WAL, so once they arrived nothing of the first is left
    let report = world.start_report(&token).await;
    assert_eq!(
        world.wait_final(&token, &report, Duration::from_secs(60)).await,
        "completed"
    );
    let sentinel = world.start_report(&token).await;
    let events = pull_until(&tap, "the second report's INSERTs", |seen| {
        seen.iter()
            .filter(|m| m.json()["op"] == "c" && m.json()["after"]["report_id"] == sentinel.as_str())
            .count()
            == 3
    })
    .await;

    // Assert: per content of the first report, its INSERT and its completion, nothing else.
    // Delivery is at least once: a change delivered twice (same LSN) counts once.
    let mut per_content: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
    let mut seen = HashSet::new();
    for event in events.iter().map(Message::json) {
        let change_id = (event["source"]["lsn"].to_string(), event["after"]["id"].to_string());
        if event["after"]["report_id"] == report.as_str() && seen.insert(change_id) {
            let change = (
                event["op"].as_str().unwrap().to_owned(),
                event["before"]["status"].as_str().unwrap_or("-").to_owned(),
                event["after"]["status"].as_str().unwrap().to_owned(),
            );
            assert!(
                event["after"].get("last_run_at").is_none(),
                "last_run_at is not captured: {event}"
            );
            per_content
                .entry(event["after"]["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(change);
        }
    }
    assert_eq!(per_content.len(), 3, "{per_content:?}");
    let events_per_content = per_content.values().map(Vec::len).sum::<usize>() as f64 / 3.0;
    for changes in per_content.values() {
        let expected = [("c", "-", "in_progress"), ("u", "in_progress", "completed")];
        let changes: Vec<(&str, &str, &str)> = changes
            .iter()
            .map(|(op, before, after)| (op.as_str(), before.as_str(), after.as_str()))
            .collect();
        assert_eq!(changes, expected, "{per_content:?}");
    }
    // ... while the polls did write the rows: more updates than the three completions
    let updates = content_updates(&world).await;
    assert!(updates > 3, "the polls updated the rows ({updates} updates)");
    println!(
        "events per content: {events_per_content:.1} (INSERT + completion); {updates} UPDATEs of the 3 \
         contents, {} of them poll-only: {:.1} events per content when every update was one",
        updates - 3,
        (3 + updates) as f64 / 3.0
    );
}

/// The relay's `GET /status`.
async fn relay_status(world: &World) -> Value {
    json_of(world.http.get(&world.relay_status)).await
}

/// Events the relay says it published for a tenant.
fn published(status: &Value, tenant: &str) -> Option<u64> {
    status["tenants"].as_array()?.iter().find(|t| t["id"] == tenant)?["published"].as_u64()
}

#[tokio::test]
async fn the_relay_reports_each_engine_and_the_last_lsn_it_published() {
    // Arrange: the relay alone between the databases and Pub/Sub
    let world = World::relay_only().await;
    let tenant = world.dbs.tenants[0].id.to_string();
    let mut conn = world.dbs.connect(0).await;

    // Act: a report and its three contents are written in tenant 0's database
    sqlx::query(
        "WITH r AS (INSERT INTO report (tenant_id, user_id) VALUES ($1::uuid, gen_random_uuid()) RETURNING id)
         INSERT INTO report_contents (report_id, source)
         SELECT r.id, s FROM r, unnest(ARRAY['source_1', 'source_2', 'source_3']) s",
    )
    .bind(&tenant)
    .execute(&mut conn)
    .await
    .unwrap();
    let (world_ref, tenant_ref) = (&world, &tenant);
    liquidity_test_support::wait_until(
        Duration::from_secs(30),
        "three events of tenant 0 published",
        || async move { published(&relay_status(world_ref).await, tenant_ref) == Some(3) },
    )
    .await;
    let status = relay_status(&world).await;

    // Assert: every tenant's engine runs, on Debezium's change queue without its idle spin (the
    // rewrite applies to the Debezium the relay ships with); tenant 0's published up to an LSN
    // PostgreSQL wrote
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["queuePollFixed"], true, "{status}");
    let tenants = status["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 3, "{status}");
    assert!(tenants.iter().all(|t| t["state"] == "running"), "{status}");
    let first = tenants.iter().find(|t| t["id"] == tenant.as_str()).unwrap();
    assert_eq!(first["deadLettered"], 0, "{first}");
    let lsn = first["lastPublishedLsn"].as_i64().unwrap();
    let written: i64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(0 < lsn && lsn <= written, "lsn {lsn}, written {written}");
}
