//! A subscription of the test's own on a topic of the world's emulator, over REST: to see what
//! flowed (dead letters), and to publish it again (duplicates, late INSERTs).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::world::{PROJECT, World, json_of};

/// One message: its data and attributes.
#[derive(Clone, Debug)]
pub struct Message {
    pub data: Vec<u8>,
    pub attributes: serde_json::Map<String, Value>,
}

impl Message {
    /// The data as JSON (a Debezium envelope, a dead letter record...).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).unwrap_or(Value::Null)
    }
}

/// A subscription on `topic` created now: it sees what is published from now on.
pub struct Tap<'w> {
    world: &'w World,
    subscription: String,
}

impl<'w> Tap<'w> {
    pub async fn on(world: &'w World, topic: &str) -> Self {
        let subscription = format!("tap-{}", uuid::Uuid::new_v4().simple());
        let response = world
            .http
            .put(world.pubsub_url(&format!("subscriptions/{subscription}")))
            .json(&json!({ "topic": format!("projects/{PROJECT}/topics/{topic}"), "ackDeadlineSeconds": 60 }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "create tap on {topic}: {}",
            response.status()
        );
        Self { world, subscription }
    }

    /// Whatever arrived since the last pull (acknowledged, so each message is returned once).
    pub async fn pull(&self) -> Vec<Message> {
        let url = self
            .world
            .pubsub_url(&format!("subscriptions/{}:pull", self.subscription));
        let pull = self
            .world
            .http
            .post(url)
            .json(&json!({ "maxMessages": 1000, "returnImmediately": true }));
        let body = json_of(pull).await;
        let received = body["receivedMessages"].as_array().cloned().unwrap_or_default();
        if received.is_empty() {
            return Vec::new();
        }
        let ack_ids: Vec<&Value> = received.iter().map(|m| &m["ackId"]).collect();
        let ack = self
            .world
            .pubsub_url(&format!("subscriptions/{}:acknowledge", self.subscription));
        let acked = self
            .world
            .http
            .post(ack)
            .json(&json!({ "ackIds": ack_ids }))
            .send()
            .await
            .unwrap();
        assert!(acked.status().is_success(), "ack: {}", acked.status());
        received
            .iter()
            .map(|m| Message {
                data: STANDARD
                    .decode(m["message"]["data"].as_str().unwrap_or_default())
                    .unwrap(),
                attributes: m["message"]["attributes"].as_object().cloned().unwrap_or_default(),
            })
            .collect()
    }
}

/// Publishes messages to a topic of the world's emulator.
pub async fn publish(world: &World, topic: &str, messages: &[Message]) {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "data": STANDARD.encode(&m.data), "attributes": m.attributes }))
        .collect();
    let response = world
        .http
        .post(world.pubsub_url(&format!("topics/{topic}:publish")))
        .json(&json!({ "messages": messages }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "publish to {topic}: {}",
        response.status()
    );
}
