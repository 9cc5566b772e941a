//! `relay`: Debezium relay throughput, CPU per event, memory and idle cost.
//!
//! Only what lies between PostgreSQL and Pub/Sub runs ([`World::relay_only`]): the tenant
//! databases, the emulator and the relay. Rows are inserted into the three tenants' databases as
//! fast as PostgreSQL takes them (3,000 contents per transaction), while a streaming pull on the
//! CDC workers' subscription counts what arrives. A first, smaller burst warms the relay's JVM up
//! (its JIT compiles the hot path during the first seconds of load) and is reported as the cold
//! figure; the idle cost and the measured burst come after it, as in a relay that has run a while.
//! A Rust bench rather than a script: it reuses the harness that starts the relay exactly as the
//! end-to-end tests do.

use std::time::{Duration, Instant};

use liquidity_cdc::pubsub::{self, PubSubSettings};

use crate::stats::{cpu_seconds, load_average};
use crate::world::{PROJECT, TOPIC, World};

/// Reports per INSERT transaction (three contents each).
const REPORTS_PER_TRANSACTION: usize = 1_000;
/// INSERT transactions per tenant (three tenants) of the measured burst: 90,000 contents.
const MEASURED_TRANSACTIONS: usize = 10;
/// INSERT transactions per tenant of the warm-up burst: 9,000 contents.
const WARM_UP_TRANSACTIONS: usize = 1;

/// Inserts `transactions` transactions of `REPORTS_PER_TRANSACTION` reports into one tenant.
async fn insert(world: &World, tenant: usize, transactions: usize) {
    let mut conn = world.dbs.connect(tenant).await;
    let tenant_id = world.dbs.tenants[tenant].id.to_string();
    for _ in 0..transactions {
        sqlx::query(
            "WITH r AS (
                 INSERT INTO report (tenant_id, user_id)
                 SELECT $1::uuid, gen_random_uuid() FROM generate_series(1, $2) RETURNING id)
             INSERT INTO report_contents (report_id, source)
             SELECT r.id, s FROM r, unnest(ARRAY['source_1', 'source_2', 'source_3']) s",
        )
        .bind(&tenant_id)
        .bind(REPORTS_PER_TRANSACTION as i32)
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

/// Counts the messages of the subscription until `expected` arrived; returns when each tenth
/// arrived, for the throughput of the middle of the run.
async fn count(emulator_host: String, expected: usize) -> Vec<Instant> {
    let settings = PubSubSettings {
        emulator_host: Some(emulator_host),
        project: PROJECT.to_owned(),
        topic: TOPIC.to_owned(),
        subscription: "tenant-cdc-worker".to_owned(),
        dead_letter_topic: "tenant-cdc-dlq".to_owned(),
        auto_create: false,
    };
    let subscriber = pubsub::subscriber(&settings).await.unwrap();
    let mut stream = subscriber
        .subscribe(settings.subscription_path())
        .set_max_outstanding_messages(20_000)
        .build();
    let mut received = 0;
    let mut marks = Vec::new();
    while received < expected {
        let (_, handler) = tokio::time::timeout(Duration::from_secs(120), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {received} of {expected} events within 120 s of the last one"))
            .expect("stream ended")
            .unwrap();
        handler.ack();
        received += 1;
        if received % (expected / 10) == 0 {
            marks.push(Instant::now());
        }
    }
    marks
}

/// Inserts `transactions` transactions into each tenant at once and prints how fast the
/// subscription received the events and what they cost the relay.
async fn burst(world: &World, relay: u32, label: &str, transactions: usize) {
    let total = 3 * 3 * REPORTS_PER_TRANSACTION * transactions;
    let (cpu0, started) = (cpu_seconds(relay), Instant::now());
    let inserting = async {
        futures::future::join_all((0..3).map(|tenant| insert(world, tenant, transactions))).await;
        started.elapsed()
    };
    let (inserted, marks) = tokio::join!(inserting, count(world.pubsub_host(), total));
    let drained = started.elapsed();
    let cpu = cpu_seconds(relay) - cpu0;
    let middle = (marks[8] - marks[0]).as_secs_f64();
    println!(
        "relay {label} burst: {total} contents inserted in {:.1} s ({:.0} rows/s); all {total} events received after \
         {:.1} s: {:.0} events/s overall, {:.0} events/s from 10% to 90%; load {}",
        inserted.as_secs_f64(),
        total as f64 / inserted.as_secs_f64(),
        drained.as_secs_f64(),
        total as f64 / drained.as_secs_f64(),
        0.8 * total as f64 / middle,
        load_average()
    );
    println!(
        "relay {label} CPU: {cpu:.1} s for {total} events = {:.0} us per event = {:.0} events per CPU-second; \
         RSS now {} MiB, peak {} MiB",
        cpu * 1e6 / total as f64,
        total as f64 / cpu,
        crate::stats::proc_status_kib(relay, "VmRSS:") / 1024,
        crate::stats::proc_status_kib(relay, "VmHWM:") / 1024
    );
}

pub async fn run() {
    let world = World::relay_only().await;
    let relay = world.pid("relay");
    println!(
        "relay: RSS after start {} MiB; load {}",
        crate::stats::proc_status_kib(relay, "VmRSS:") / 1024,
        load_average()
    );
    burst(&world, relay, "cold (warm-up)", WARM_UP_TRANSACTIONS).await;

    // Idle: nothing changes; the engines poll, heartbeat every 10 s
    let (cpu0, t0) = (cpu_seconds(relay), Instant::now());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = (cpu_seconds(relay) - cpu0) / t0.elapsed().as_secs_f64();
    println!(
        "relay idle: {:.2}% of one core over 30 s; load {}",
        idle * 100.0,
        load_average()
    );

    burst(&world, relay, "warm", MEASURED_TRANSACTIONS).await;
}
