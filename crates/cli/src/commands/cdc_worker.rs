//! `liquidity cdc-worker`: the Pub/Sub consumer of Debezium events, plus the reconciler.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use liquidity_cdc::CdcDeps;
use liquidity_cdc::consumer::{ConsumerSettings, run_consumer};
use liquidity_cdc::pubsub::PubSubSettings;
use liquidity_cdc::reconciler::{ReconcilerSettings, run_reconciler};
use liquidity_workflows::WorkflowStarter;

use super::workflow_worker::TemporalArgs;
use crate::args::TenancyArgs;

/// `liquidity cdc-worker`.
#[derive(clap::Args)]
pub struct CdcWorkerArgs {
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    #[command(flatten)]
    pub pubsub: PubSubArgs,
    /// Messages handled at once by this replica.
    #[arg(long, env = "CDC_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// On SIGTERM, how long in-flight messages may take to finish.
    #[arg(long, env = "CDC_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "20s")]
    pub drain_timeout: Duration,
    /// Time between reconciliation passes.
    #[arg(long, env = "RECONCILE_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub reconcile_interval: Duration,
    /// An in-progress content no workflow checked for this long gets its workflow (re)started.
    /// Must exceed the workflow worker's POLL_INTERVAL.
    #[arg(long, env = "RECONCILE_STALE_AFTER", value_parser = humantime::parse_duration, default_value = "60s")]
    pub reconcile_stale_after: Duration,
    /// Most rows per tenant looked at by one reconciliation pass.
    #[arg(long, env = "RECONCILE_BATCH", default_value_t = 500)]
    pub reconcile_batch: i64,
}

/// Where Pub/Sub is.
#[derive(clap::Args)]
pub struct PubSubArgs {
    /// `host:port` of the Pub/Sub emulator; unset means Google Pub/Sub with Application
    /// Default Credentials.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pub pubsub_emulator_host: Option<String>,
    /// Google Cloud project of the topics.
    #[arg(long, env = "PUBSUB_PROJECT", default_value = "lqdty-local")]
    pub pubsub_project: String,
    /// Topic Debezium publishes change events to.
    #[arg(long, env = "PUBSUB_TOPIC", default_value = "tenant-cdc")]
    pub pubsub_topic: String,
    /// Subscription of the CDC workers to that topic (all replicas share it).
    #[arg(long, env = "PUBSUB_SUBSCRIPTION", default_value = "tenant-cdc-worker")]
    pub pubsub_subscription: String,
    /// Topic receiving messages that can never be handled.
    #[arg(long, env = "PUBSUB_DLQ_TOPIC", default_value = "tenant-cdc-dlq")]
    pub pubsub_dlq_topic: String,
    /// Create the topics and subscription when missing (the emulator forgets them on restart).
    #[arg(long, env = "PUBSUB_AUTO_CREATE", default_value_t = false)]
    pub pubsub_auto_create: bool,
}

impl PubSubArgs {
    fn settings(&self) -> PubSubSettings {
        PubSubSettings {
            emulator_host: self.pubsub_emulator_host.clone(),
            project: self.pubsub_project.clone(),
            topic: self.pubsub_topic.clone(),
            subscription: self.pubsub_subscription.clone(),
            dead_letter_topic: self.pubsub_dlq_topic.clone(),
            auto_create: self.pubsub_auto_create,
        }
    }
}

pub async fn run(args: CdcWorkerArgs) -> anyhow::Result<()> {
    let registry = args.tenancy.registry()?;
    let temporal = args.temporal.settings()?;
    let client = liquidity_workflows::connect(&temporal)
        .await
        .context("TEMPORAL_ADDRESS unreachable")?;
    let deps = Arc::new(CdcDeps {
        registry: registry.clone(),
        starter: WorkflowStarter::new(client, temporal.task_queue),
    });
    let shutdown = super::shutdown_token();
    let reconciler = tokio::spawn(run_reconciler(
        deps.clone(),
        ReconcilerSettings {
            interval: args.reconcile_interval,
            stale_after: args.reconcile_stale_after,
            batch: args.reconcile_batch,
        },
        shutdown.clone(),
    ));
    let consumed = run_consumer(
        args.pubsub.settings(),
        ConsumerSettings {
            max_in_flight: args.max_in_flight,
            drain_timeout: args.drain_timeout,
        },
        deps,
        shutdown.clone(),
    )
    .await;
    // The consumer only returns early on a fatal error: stop the reconciler too.
    shutdown.cancel();
    reconciler.await.context("reconciler task failed")?;
    registry.close().await;
    consumed
}
