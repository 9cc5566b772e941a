//! `liquidity cdc-worker`: the Pub/Sub consumer of Debezium events, plus the reconciler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use liquidity_cdc::CdcDeps;
use liquidity_cdc::consumer::{ConsumerSettings, run_consumer};
use liquidity_cdc::pubsub::{PubSubSettings, SubscriptionProbe};
use liquidity_cdc::reconciler::{Reconciler, ReconcilerSettings};
use liquidity_observability::{Ops, PoolGauges, Readiness};
use liquidity_workflows::{TemporalProbe, WorkflowStarter};

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
    /// Messages handled at once by this replica. 1..=10000.
    #[arg(long, env = "CDC_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Workflow starts and reconciler describes this replica sends to Temporal at once; more
    /// wait their turn. Lower it when a backlog of starts crowds out the server's work on the
    /// workflows already started (README, capacity). 1..=1000.
    #[arg(long, env = "CDC_MAX_STARTS", default_value_t = liquidity_workflows::starter::DEFAULT_MAX_REQUESTS)]
    pub max_starts: usize,
    /// Messages of tenants in backoff (their database or Temporal failing) held by this replica
    /// without taking a CDC_MAX_IN_FLIGHT slot; past it they are nacked and redelivered.
    /// 1..=100000.
    #[arg(long, env = "CDC_MAX_PARKED", default_value_t = 1000)]
    pub max_parked: usize,
    /// On SIGTERM, how long in-flight messages may take to finish. More than zero, at most 1h.
    #[arg(long, env = "CDC_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "20s")]
    pub drain_timeout: Duration,
    /// Time between reconciliation passes. At least 1s, at most 24h.
    #[arg(long, env = "RECONCILE_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    pub reconcile_interval: Duration,
    /// An in-progress content no workflow checked for this long gets its workflow started
    /// again if none is running. Must exceed the workflow worker's POLL_INTERVAL. At least 1s,
    /// at most 24h.
    #[arg(long, env = "RECONCILE_STALE_AFTER", value_parser = humantime::parse_duration, default_value = "60s")]
    pub reconcile_stale_after: Duration,
    /// Most rows per tenant and kind looked at by one reconciliation pass. 1..=100000.
    #[arg(long, env = "RECONCILE_BATCH", default_value_t = 500)]
    pub reconcile_batch: i64,
    /// Most stale contents the reconciler checks against Temporal per second, over all
    /// tenants: the stale set is largest when Temporal is saturated, and the checks must not
    /// crowd out the starts it is behind on. 1..=10000.
    #[arg(long, env = "RECONCILE_CHECKS_PER_SECOND", default_value_t = 20)]
    pub reconcile_checks_per_second: u32,
    /// A content still in progress this long after its creation is failed by the reconciler,
    /// even if no workflow is alive. The workflow worker's own SOURCE_DEADLINE: set both the
    /// same. At least 1s, less than 24h.
    #[arg(long, env = "SOURCE_DEADLINE", value_parser = humantime::parse_duration, default_value = "1h")]
    pub source_deadline: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` (Pub/Sub and Temporal reachable) are served.
    /// Scraped from inside the network only: do not publish it.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
}

/// The CDC worker's validated settings.
#[derive(Clone, Copy, Debug)]
pub struct CdcWorkerSettings {
    /// The consumer's.
    pub consumer: ConsumerSettings,
    /// The reconciler's.
    pub reconciler: ReconcilerSettings,
    /// Requests to Temporal in flight at once (`CDC_MAX_STARTS`).
    pub max_starts: usize,
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl CdcWorkerArgs {
    /// Every count, size and interval, checked: `0` would stall the consumer
    /// (`CDC_MAX_IN_FLIGHT`) or panic the reconciler (`RECONCILE_INTERVAL`).
    ///
    /// # Errors
    /// The first refused setting, named by its variable, with what it must be.
    pub fn settings(&self) -> anyhow::Result<CdcWorkerSettings> {
        check_count("CDC_MAX_IN_FLIGHT", self.max_in_flight, 1..=10_000)?;
        check_count("CDC_MAX_PARKED", self.max_parked, 1..=100_000)?;
        check_count("CDC_MAX_STARTS", self.max_starts, 1..=1_000)?;
        check_count("RECONCILE_BATCH", self.reconcile_batch, 1..=100_000)?;
        check_count(
            "RECONCILE_CHECKS_PER_SECOND",
            self.reconcile_checks_per_second,
            1..=10_000,
        )?;
        check_duration("CDC_DRAIN_TIMEOUT", self.drain_timeout, Duration::from_millis(1), HOUR)?;
        check_duration("RECONCILE_INTERVAL", self.reconcile_interval, SECOND, DAY)?;
        check_duration("RECONCILE_STALE_AFTER", self.reconcile_stale_after, SECOND, DAY)?;
        check_duration("SOURCE_DEADLINE", self.source_deadline, SECOND, DAY - SECOND)?;
        Ok(CdcWorkerSettings {
            consumer: ConsumerSettings {
                max_in_flight: self.max_in_flight,
                max_parked: self.max_parked,
                drain_timeout: self.drain_timeout,
            },
            reconciler: ReconcilerSettings {
                interval: self.reconcile_interval,
                stale_after: self.reconcile_stale_after,
                deadline: self.source_deadline,
                batch: self.reconcile_batch,
                checks_per_second: self.reconcile_checks_per_second,
            },
            max_starts: self.max_starts,
        })
    }
}

fn check_count<T: PartialOrd + std::fmt::Display>(
    variable: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        range.contains(&value),
        "{variable}={value} is refused: it must be {}..={}",
        range.start(),
        range.end()
    );
    Ok(())
}

fn check_duration(variable: &str, value: Duration, min: Duration, max: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        (min..=max).contains(&value),
        "{variable}={} is refused: it must be {}..={}",
        humantime::format_duration(value),
        humantime::format_duration(min),
        humantime::format_duration(max)
    );
    Ok(())
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
    pub(crate) fn settings(&self) -> PubSubSettings {
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
    let settings = args.settings()?;
    let registry = args.tenancy.registry()?;
    let temporal = args.temporal.settings()?;
    let pubsub = args.pubsub.settings();
    // Served from the start: a worker waiting for Temporal is alive, and says it is not ready.
    let pubsub_probe = Arc::new(SubscriptionProbe::new(&pubsub).await?);
    let temporal_probe = Arc::new(TemporalProbe::new(temporal.clone()));
    let readiness = Readiness::new()
        .check("pubsub", move || {
            let probe = pubsub_probe.clone();
            async move { probe.check().await }
        })
        .check("temporal", move || {
            let probe = temporal_probe.clone();
            async move { probe.check().await }
        });
    let pools = PoolGauges::new(registry.clone());
    liquidity_observability::serve(args.metrics_addr, Ops { readiness, pools }).await?;
    let shutdown = super::shutdown_token();
    // Temporal may still be booting (or restarting): wait for it, logging, instead of exiting.
    let Some(client) = liquidity_workflows::connect_waiting(&temporal, &shutdown).await else {
        tracing::info!("shut down while waiting for Temporal");
        registry.close().await;
        return Ok(());
    };
    let deps = Arc::new(CdcDeps {
        registry: registry.clone(),
        starter: WorkflowStarter::new(client, temporal.task_queue).with_max_requests(settings.max_starts),
    });
    let reconciler = tokio::spawn(Reconciler::new(deps.clone(), settings.reconciler).run(shutdown.clone()));
    let consumed = run_consumer(pubsub, settings.consumer, deps, shutdown.clone()).await;
    // The consumer only returns early on a fatal error: stop the reconciler too.
    shutdown.cancel();
    reconciler.await.context("reconciler task failed")?;
    registry.close().await;
    consumed
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CdcWorkerArgs,
    }

    fn settings(extra: &[&str]) -> anyhow::Result<CdcWorkerSettings> {
        let base = ["liquidity", "--tenants-config", "[]"];
        Cli::try_parse_from(base.iter().chain(extra))?.args.settings()
    }

    fn refusal(extra: &[&str]) -> String {
        format!("{:#}", settings(extra).expect_err("refused"))
    }

    #[test]
    fn the_defaults_are_accepted() {
        // Act
        let settings = settings(&[]).unwrap();

        // Assert
        assert_eq!(settings.consumer.max_in_flight, 64);
        assert_eq!(settings.consumer.max_parked, 1000);
        assert_eq!(settings.reconciler.deadline, HOUR);
        assert_eq!(settings.reconciler.interval, Duration::from_secs(30));
        assert_eq!(settings.reconciler.checks_per_second, 20);
        assert_eq!(settings.max_starts, 64);
    }

    #[test]
    fn a_zero_count_is_refused_naming_its_variable() {
        assert!(refusal(&["--max-in-flight", "0"]).starts_with("CDC_MAX_IN_FLIGHT=0 is refused"));
        assert!(refusal(&["--max-parked", "0"]).starts_with("CDC_MAX_PARKED=0 is refused"));
        assert!(refusal(&["--max-starts", "0"]).starts_with("CDC_MAX_STARTS=0 is refused"));
        assert!(refusal(&["--reconcile-batch", "0"]).starts_with("RECONCILE_BATCH=0 is refused"));
        assert!(refusal(&["--reconcile-batch=-5"]).starts_with("RECONCILE_BATCH=-5 is refused"));
        assert!(
            refusal(&["--reconcile-checks-per-second", "0"]).starts_with("RECONCILE_CHECKS_PER_SECOND=0 is refused")
        );
    }

    #[test]
    fn a_zero_or_huge_interval_is_refused_naming_its_variable() {
        assert!(refusal(&["--reconcile-interval", "0s"]).starts_with("RECONCILE_INTERVAL=0s is refused"));
        assert!(refusal(&["--reconcile-stale-after", "0s"]).starts_with("RECONCILE_STALE_AFTER=0s is refused"));
        assert!(refusal(&["--drain-timeout", "0s"]).starts_with("CDC_DRAIN_TIMEOUT=0s is refused"));
        assert!(refusal(&["--source-deadline", "24h"]).starts_with("SOURCE_DEADLINE=1day is refused"));
        assert!(refusal(&["--reconcile-interval", "2days"]).starts_with("RECONCILE_INTERVAL=2days is refused"));
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        let settings = settings(&[
            "--max-in-flight",
            "1",
            "--max-parked",
            "100000",
            "--reconcile-interval",
            "1s",
            "--source-deadline",
            "23h 59m 59s",
        ])
        .unwrap();
        assert_eq!(settings.consumer.max_in_flight, 1);
        assert_eq!(settings.reconciler.interval, SECOND);
    }
}
