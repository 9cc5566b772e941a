use std::time::Duration;

use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use liquidity_cdc::consumer::{ConsumerSettings, run_consumer};
use liquidity_cdc::pubsub::{self, PubSubSettings};
use liquidity_test_support::wait_until;
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

#[tokio::test]
async fn the_consumer_acts_on_pubsub_messages_and_dead_letters_poison() {
    // Arrange: topology with a subscription on the dead-letter topic to observe it
    let h = harness().await;
    let pubsub = settings();
    pubsub::ensure_topology(&pubsub).await.unwrap();
    let endpoint = format!("http://{}", pubsub.emulator_host.as_deref().unwrap());
    let anonymous = || google_cloud_auth::credentials::anonymous::Builder::new().build();
    let dlq_subscription = format!(
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
        .set_name(&dlq_subscription)
        .set_topic(pubsub.topic_path(&pubsub.dead_letter_topic))
        .send()
        .await
        .unwrap();
    let (_, contents) = h.report(0).await;
    let publisher = pubsub::publisher(&pubsub, &pubsub.topic).await.unwrap();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        pubsub.clone(),
        ConsumerSettings {
            max_in_flight: 8,
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
    let subscriber = Subscriber::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous())
        .build()
        .await
        .unwrap();
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
