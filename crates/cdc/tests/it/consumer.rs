use std::time::{Duration, SystemTime};

use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use liquidity_cdc::consumer::{ConsumerSettings, run_consumer};
use liquidity_cdc::pubsub::{self, PubSubSettings};
use liquidity_core::reports;
use liquidity_test_support::wait_until;
use sqlx::{Connection as _, Executor as _, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::helpers::{event, harness};

fn settings() -> PubSubSettings {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    PubSubSettings {
        emulator_host: Some(std::env::var("LQDTY_TEST_PUBSUB_HOST").unwrap_or_else(|_| "127.0.0.1:8095".to_owned())),
        project: "lqdty-test".to_owned(),
        topic: format!("tenant-cdc-{suffix}"),
        subscription: format!("tenant-cdc-worker-{suffix}"),
        dead_letter_topic: format!("tenant-cdc-dlq-{suffix}"),
        auto_create: true,
    }
}

/// A subscription of the test's own on the dead-letter topic, and a subscriber to read it.
async fn watch_dead_letters(pubsub: &PubSubSettings) -> (Subscriber, String) {
    let endpoint = format!("http://{}", pubsub.emulator_host.as_deref().unwrap());
    let anonymous = || google_cloud_auth::credentials::anonymous::Builder::new().build();
    let subscription = format!(
        "projects/{}/subscriptions/dlq-{}",
        pubsub.project,
        uuid::Uuid::new_v4().simple()
    );
    SubscriptionAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous())
        .build()
        .await
        .unwrap()
        .create_subscription()
        .set_name(&subscription)
        .set_topic(pubsub.topic_path(&pubsub.dead_letter_topic))
        .send()
        .await
        .unwrap();
    let subscriber = Subscriber::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous())
        .build()
        .await
        .unwrap();
    (subscriber, subscription)
}

#[tokio::test]
async fn the_consumer_acts_on_pubsub_messages_and_dead_letters_poison() {
    // Arrange: topology with a subscription on the dead-letter topic to observe it
    let h = harness().await;
    let pubsub = settings();
    pubsub::ensure_topology(&pubsub).await.unwrap();
    let (subscriber, dlq_subscription) = watch_dead_letters(&pubsub).await;
    let (_, contents) = h.report(0).await;
    let publisher = pubsub::publisher(&pubsub, &pubsub.topic).await.unwrap();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        pubsub.clone(),
        ConsumerSettings {
            max_in_flight: 8,
            max_parked: 100,
            drain_timeout: Duration::from_secs(5),
        },
        h.deps.clone(),
        shutdown.clone(),
    ));

    // Act: a valid INSERT and a poison message
    let insert = event(h.tenant(0), "report_contents", "c", None, Some(&contents[0]));
    publisher.publish(Message::new().set_data(insert)).await.unwrap();
    publisher
        .publish(Message::new().set_data("garbage").set_attributes([("op", "c")]))
        .await
        .unwrap();

    // Assert: the content's workflow exists (nobody but the consumer could have started it)...
    wait_until(Duration::from_secs(20), "the consumer to start the workflow", || {
        h.workflow_exists(0, &contents[0])
    })
    .await;
    // ...and the garbage arrived on the dead-letter topic with the reason
    let mut stream = subscriber.subscribe(&dlq_subscription).build();
    let (message, handler) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    handler.ack();
    assert_eq!(message.data, "garbage".as_bytes());
    assert!(
        message.attributes["dead_letter_reason"].contains("not a Debezium JSON envelope"),
        "{:?}",
        message.attributes
    );

    shutdown.cancel();
    consumer.await.unwrap().unwrap();
}

/// Publish -> workflow start latency of each content, from Temporal's start times.
async fn start_latencies(
    h: &crate::helpers::Harness,
    published: &[(liquidity_core::reports::ReportContent, SystemTime)],
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for (content, at) in published {
        let started = h.workflow_started_at(0, content).await.expect("workflow started");
        latencies.push(started.duration_since(*at).unwrap_or_default());
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).saturating_sub(1)]
}

/// Publishes one INSERT per new report of tenant 1 and waits until every workflow started.
async fn t1_inserts_started(
    h: &crate::helpers::Harness,
    publisher: &google_cloud_pubsub::client::Publisher,
    count: usize,
    within: Duration,
    what: &str,
) -> Vec<Duration> {
    let mut published = Vec::new();
    for _ in 0..count {
        let (_, contents) = h.report(0).await;
        let insert = event(h.tenant(0), "report_contents", "c", None, Some(&contents[0]));
        let at = SystemTime::now();
        publisher.publish(Message::new().set_data(insert)).await.unwrap();
        published.push((contents[0].clone(), at));
    }
    wait_until(within, what, || async {
        for (content, _) in &published {
            if h.workflow_started_at(0, content).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    start_latencies(h, &published).await
}

async fn set_allow_connections(database: &str, allow: bool) {
    let mut admin = PgConnection::connect(&liquidity_test_support::admin_url())
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            r#"ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allow}"#
        )))
        .await
        .unwrap();
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_tenant_whose_database_is_down_does_not_delay_the_other_tenants_events() {
    // Arrange: a consumer with 8 permits; tenant 2 has 200 reports whose contents all
    // completed, whose UPDATE events (each finishes its report in tenant 2's database) are
    // about to arrive
    let h = harness().await;
    let pubsub = settings();
    pubsub::ensure_topology(&pubsub).await.unwrap();
    let publisher = pubsub::publisher(&pubsub, &pubsub.topic).await.unwrap();
    let t2_pool = h.deps.registry.pool(h.tenant(1)).await.unwrap();
    let mut t2_reports = Vec::new();
    let mut t2_events = Vec::new();
    for _ in 0..200 {
        let (report_id, contents) = h.report(1).await;
        for content in &contents {
            reports::complete_content(t2_pool, content.id, "{}").await.unwrap();
        }
        let after = h.content(1, &contents[0]).await;
        t2_events.push(event(
            h.tenant(1),
            "report_contents",
            "u",
            Some(&contents[0]),
            Some(&after),
        ));
        t2_reports.push(report_id);
    }
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        pubsub.clone(),
        ConsumerSettings {
            max_in_flight: 8,
            max_parked: 1000,
            drain_timeout: Duration::from_secs(5),
        },
        h.deps.clone(),
        shutdown.clone(),
    ));
    let baseline = t1_inserts_started(&h, &publisher, 30, Duration::from_secs(30), "the baseline t1 workflows").await;

    // Act: tenant 2's database refuses connections, its 200 events arrive, then 30 of tenant 1
    set_allow_connections(&h.dbs.tenants[1].database, false).await;
    let published: Vec<_> = t2_events
        .into_iter()
        .map(|data| publisher.publish(Message::new().set_data(data)))
        .collect();
    for sent in published {
        sent.await.unwrap();
    }
    let during_outage = t1_inserts_started(
        &h,
        &publisher,
        30,
        Duration::from_secs(10),
        "tenant 1's workflows while tenant 2 is down",
    )
    .await;
    set_allow_connections(&h.dbs.tenants[1].database, true).await;

    // Assert: tenant 1 kept its latency (a consumer whose permits sleep in tenant 2's backoff
    // takes minutes here), and tenant 2 drains once its database is back
    eprintln!(
        "t1 publish -> workflow start, 30 events: baseline p50 {:?} p95 {:?}; with t2's database down and 200 of its events pending p50 {:?} p95 {:?}",
        percentile(&baseline, 50),
        percentile(&baseline, 95),
        percentile(&during_outage, 50),
        percentile(&during_outage, 95),
    );
    assert!(
        percentile(&during_outage, 95) < Duration::from_secs(2),
        "t1 p95 {:?} with t2 down",
        percentile(&during_outage, 95)
    );
    wait_until(Duration::from_secs(90), "tenant 2's 200 reports to finish", || async {
        let finished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM report WHERE id = ANY($1) AND finished_at IS NOT NULL")
                .bind(&t2_reports)
                .fetch_one(t2_pool)
                .await
                .unwrap_or(0);
        finished == 200
    })
    .await;

    shutdown.cancel();
    consumer.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_start_temporal_keeps_refusing_is_dead_lettered_with_its_reason_after_bounded_attempts() {
    // Arrange: a consumer whose starter targets a namespace Temporal does not have, and a
    // subscription on the dead-letter topic to observe it
    let h = harness().await;
    let pubsub = settings();
    pubsub::ensure_topology(&pubsub).await.unwrap();
    let (subscriber, dlq_subscription) = watch_dead_letters(&pubsub).await;
    let missing = liquidity_workflows::TemporalSettings {
        namespace: format!("lqdty-missing-{}", uuid::Uuid::new_v4().simple()),
        ..h.temporal.clone()
    };
    let deps = std::sync::Arc::new(liquidity_cdc::CdcDeps {
        registry: h.deps.registry.clone(),
        starter: liquidity_workflows::WorkflowStarter::new(
            liquidity_workflows::connect(&missing).await.unwrap(),
            missing.task_queue.clone(),
        ),
    });
    let (_, contents) = h.report(0).await;
    let publisher = pubsub::publisher(&pubsub, &pubsub.topic).await.unwrap();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        pubsub.clone(),
        ConsumerSettings {
            max_in_flight: 8,
            max_parked: 100,
            drain_timeout: Duration::from_secs(5),
        },
        deps,
        shutdown.clone(),
    ));

    // Act
    let insert = event(h.tenant(0), "report_contents", "c", None, Some(&contents[0]));
    publisher
        .publish(Message::new().set_data(insert.clone()))
        .await
        .unwrap();

    // Assert: the message arrives on the dead-letter topic with Temporal's refusal
    let mut stream = subscriber.subscribe(&dlq_subscription).build();
    let (message, handler) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("dead-lettered within 30s")
        .unwrap()
        .unwrap();
    handler.ack();
    assert_eq!(message.data, insert);
    assert!(
        message.attributes["dead_letter_reason"].contains("Temporal rejected the start"),
        "{:?}",
        message.attributes
    );

    shutdown.cancel();
    consumer.await.unwrap().unwrap();
}
