//! `liquidity workflow-worker`: the Temporal worker that fetches report contents from the
//! source servers (the `fetchReportContent` workflow and its `pollSource` activity).

use std::time::Duration;

use anyhow::Context as _;
use liquidity_workflows::{
    FetchPolicy, SourceActivities, SourceClient, SourcesConfig, TemporalSettings, Url, run_worker,
};

use crate::args::TenancyArgs;

/// Where Temporal is; shared by every process that talks to it.
#[derive(clap::Args)]
pub struct TemporalArgs {
    /// gRPC address of the Temporal frontend, e.g. `http://127.0.0.1:7233`.
    #[arg(long, env = "TEMPORAL_ADDRESS", default_value = "http://127.0.0.1:7233")]
    pub temporal_address: String,
    /// Temporal namespace of the report workflows.
    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    pub temporal_namespace: String,
    /// Task queue the workflow workers poll and the CDC worker starts workflows on; every
    /// process of one deployment must use the same.
    #[arg(long, env = "TEMPORAL_TASK_QUEUE", default_value = "liquidity-reports")]
    pub temporal_task_queue: String,
}

impl TemporalArgs {
    /// The validated settings.
    ///
    /// # Errors
    /// An address that is not an http(s) URL, or an empty namespace or task queue.
    pub fn settings(&self) -> anyhow::Result<TemporalSettings> {
        let address = Url::parse(self.temporal_address.trim())
            .with_context(|| format!("TEMPORAL_ADDRESS {:?} is not a URL", self.temporal_address))?;
        anyhow::ensure!(
            matches!(address.scheme(), "http" | "https"),
            "TEMPORAL_ADDRESS must be an http(s) URL, not {address}"
        );
        let namespace = self.temporal_namespace.trim();
        anyhow::ensure!(!namespace.is_empty(), "TEMPORAL_NAMESPACE must not be empty");
        let task_queue = self.temporal_task_queue.trim();
        anyhow::ensure!(!task_queue.is_empty(), "TEMPORAL_TASK_QUEUE must not be empty");
        Ok(TemporalSettings {
            address,
            namespace: namespace.to_owned(),
            task_queue: task_queue.to_owned(),
        })
    }
}

/// `liquidity workflow-worker`.
#[derive(clap::Args)]
pub struct WorkflowWorkerArgs {
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    #[command(flatten)]
    pub temporal: TemporalArgs,
    /// JSON object of source name -> base URL, one entry per report source:
    /// `{"source_1":"http://127.0.0.1:9101","source_2":"...","source_3":"..."}`.
    #[arg(long, env = "SOURCES_CONFIG")]
    pub sources_config: String,
    /// Wait between two checks of a job still in progress at its source.
    #[arg(long, env = "POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub poll_interval: Duration,
    /// A content still in progress this long after its creation is marked failed. Less than 24h
    /// (the activity's start-to-close timeout).
    #[arg(long, env = "SOURCE_DEADLINE", value_parser = humantime::parse_duration, default_value = "1h")]
    pub source_deadline: Duration,
    /// Bad answers of a source (malformed bodies, 4xx, lost jobs) tolerated per content; the
    /// next one marks the content failed.
    #[arg(long, env = "SOURCE_MAX_BAD_ANSWERS", default_value_t = 5)]
    pub source_max_bad_answers: u32,
    /// Bound of one HTTP call to a source, connect included; at most 20s, so that a call fits
    /// in the activity's 30s heartbeat timeout.
    #[arg(long, env = "SOURCE_HTTP_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub source_http_timeout: Duration,
    /// Poll loops (one per content being fetched) this replica runs at once. Each mostly
    /// sleeps, so a thousand cost little.
    #[arg(long, env = "WORKER_MAX_ACTIVITIES", default_value_t = 1000)]
    pub worker_max_activities: usize,
}

pub async fn run(args: WorkflowWorkerArgs) -> anyhow::Result<()> {
    let policy = FetchPolicy {
        poll_interval: args.poll_interval,
        deadline: args.source_deadline,
        max_bad_answers: args.source_max_bad_answers,
        http_timeout: args.source_http_timeout,
    };
    policy
        .validate()
        .context("invalid POLL_INTERVAL / SOURCE_DEADLINE / SOURCE_HTTP_TIMEOUT")?;
    anyhow::ensure!(
        args.worker_max_activities > 0,
        "WORKER_MAX_ACTIVITIES must be at least 1"
    );
    let sources = SourcesConfig::parse(&args.sources_config)?;
    let client = SourceClient::new(sources, policy.http_timeout).context("cannot build the source HTTP client")?;
    let settings = args.temporal.settings()?;
    let registry = args.tenancy.registry()?;
    let activities = SourceActivities::new(registry.clone(), client, policy);
    let shutdown = super::shutdown_token();
    let result = run_worker(&settings, activities, args.worker_max_activities, shutdown).await;
    registry.close().await;
    result
}
