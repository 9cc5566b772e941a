//! Pub/Sub clients for the emulator (local) or Google (production), and topic set-up: the one
//! place where the CDC path's topics and subscriptions are created ([`ensure_topology`], run
//! by `liquidity pubsub-setup` and by the CDC worker with `PUBSUB_AUTO_CREATE`).

use google_cloud_auth::credentials::anonymous;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};

/// Where Pub/Sub is and which names we use.
#[derive(Clone, Debug)]
pub struct PubSubSettings {
    /// `host:port` of the emulator (`PUBSUB_EMULATOR_HOST`); `None` means Google's Pub/Sub with
    /// Application Default Credentials. The official crate ignores the variable by itself.
    pub emulator_host: Option<String>,
    /// Project id (`PUBSUB_PROJECT`).
    pub project: String,
    /// Topic Debezium publishes to (`PUBSUB_TOPIC`, `tenant-cdc`).
    pub topic: String,
    /// Our subscription to it (`PUBSUB_SUBSCRIPTION`, `tenant-cdc-worker`).
    pub subscription: String,
    /// Where poison messages go (`PUBSUB_DEAD_LETTER_TOPIC`, `tenant-cdc-dlq`).
    pub dead_letter_topic: String,
    /// Create the topics and subscription when missing (`PUBSUB_AUTO_CREATE`): for the
    /// emulator, which forgets them on every restart. In production they are provisioned.
    pub auto_create: bool,
}

impl PubSubSettings {
    /// `projects/P/topics/T`.
    pub fn topic_path(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project)
    }

    /// `projects/P/subscriptions/S`.
    pub fn subscription_path(&self) -> String {
        self.subscription_path_of(&self.subscription)
    }

    /// `projects/P/subscriptions/<dead-letter topic>-inspect`: where people read dead letters.
    pub fn dead_letter_subscription_path(&self) -> String {
        self.subscription_path_of(&format!("{}-inspect", self.dead_letter_topic))
    }

    fn subscription_path_of(&self, subscription: &str) -> String {
        format!("projects/{}/subscriptions/{subscription}", self.project)
    }

    fn endpoint(&self) -> Option<String> {
        self.emulator_host.as_ref().map(|host| format!("http://{host}"))
    }
}

macro_rules! build_client {
    ($builder:expr, $settings:expr) => {{
        let mut builder = $builder;
        if let Some(endpoint) = $settings.endpoint() {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        builder.build().await.map_err(anyhow::Error::from)
    }};
}

/// A streaming-pull subscriber client.
///
/// # Errors
/// Client construction failures (credentials).
pub async fn subscriber(settings: &PubSubSettings) -> anyhow::Result<Subscriber> {
    build_client!(Subscriber::builder(), settings)
}

/// A publisher of one topic.
///
/// # Errors
/// Client construction failures (credentials).
pub async fn publisher(settings: &PubSubSettings, topic: &str) -> anyhow::Result<Publisher> {
    build_client!(Publisher::builder(settings.topic_path(topic)), settings)
}

/// Creates the CDC topic and the workers' subscription to it, the dead-letter topic and its
/// subscription `<dead-letter topic>-inspect` (without one, dead letters would be dropped),
/// each only if missing. Subscriptions have no message ordering: correctness never depends on
/// order, and the emulator leaks a thread per ordering key on ordered subscriptions
/// (docs/stack-notes.md, "Ordered subscriptions on the emulator").
///
/// # Errors
/// Any failure other than "already exists".
pub async fn ensure_topology(settings: &PubSubSettings) -> anyhow::Result<()> {
    let topics = build_client!(TopicAdmin::builder(), settings)?;
    let subscriptions = build_client!(SubscriptionAdmin::builder(), settings)?;
    let pairs = [
        (&settings.topic, settings.subscription_path()),
        (&settings.dead_letter_topic, settings.dead_letter_subscription_path()),
    ];
    for (topic, subscription) in pairs {
        let created = topics.create_topic().set_name(settings.topic_path(topic)).send().await;
        ignore_already_exists(created.map(drop))?;
        let created = subscriptions
            .create_subscription()
            .set_name(subscription)
            .set_topic(settings.topic_path(topic))
            .set_ack_deadline_seconds(30)
            .send()
            .await;
        ignore_already_exists(created.map(drop))?;
    }
    Ok(())
}

fn ignore_already_exists(result: Result<(), google_cloud_pubsub::Error>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.status().is_some_and(|s| s.code == Code::AlreadyExists) => Ok(()),
        other => Ok(other?),
    }
}

/// Pub/Sub's part of the CDC worker's readiness: the workers' subscription can be read (the
/// service answers and the subscription exists).
pub struct SubscriptionProbe {
    admin: SubscriptionAdmin,
    subscription: String,
}

impl SubscriptionProbe {
    /// A probe of the settings' subscription.
    ///
    /// # Errors
    /// Client construction failures (credentials).
    pub async fn new(settings: &PubSubSettings) -> anyhow::Result<Self> {
        Ok(Self {
            admin: build_client!(SubscriptionAdmin::builder(), settings)?,
            subscription: settings.subscription_path(),
        })
    }

    /// One metadata read of the subscription.
    ///
    /// # Errors
    /// Pub/Sub unreachable, or the subscription missing (an emulator that restarted).
    pub async fn check(&self) -> Result<(), google_cloud_pubsub::Error> {
        self.admin
            .get_subscription()
            .set_subscription(self.subscription.clone())
            .send()
            .await
            .map(drop)
    }
}
