//! `liquidity workflow-worker`: the Temporal worker that fetches report contents from the
//! source servers (the `fetchReportContent` workflow and its `pollSource` activity).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use liquidity_observability::{Ops, PoolGauges, Readiness};
use liquidity_workflows::worker::{WorkerTuning, validate_max_activities};
use liquidity_workflows::{
    FetchPolicy, SourceActivities, SourceClient, SourcesConfig, TemporalProbe, TemporalSettings, Url, parse_byte_size,
    run_worker,
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
    /// Wait between two checks of a job still in progress at its source. More than zero, at
    /// most 1h, less than SOURCE_DEADLINE.
    #[arg(long, env = "POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "10s")]
    pub poll_interval: Duration,
    /// A content still in progress this long after its creation is marked failed, whatever
    /// restarts happened in between. At least 1s, less than 24h (the activity's start-to-close
    /// timeout).
    #[arg(long, env = "SOURCE_DEADLINE", value_parser = humantime::parse_duration, default_value = "1h")]
    pub source_deadline: Duration,
    /// Bad answers of a source (malformed, 4xx, redirects, bodies above SOURCE_MAX_BODY, lost
    /// jobs) tolerated per content; the next one marks the content failed. 1..=1000.
    #[arg(long, env = "SOURCE_MAX_BAD_ANSWERS", default_value_t = 5)]
    pub source_max_bad_answers: u32,
    /// Bound of one HTTP call to a source, connect included. More than zero, at most 20s.
    #[arg(long, env = "SOURCE_HTTP_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub source_http_timeout: Duration,
    /// Largest body of a source's answer (`1MiB`, `512KiB`, bytes); a longer one is a bad
    /// answer, and reading stops there. 1KiB..=2MiB: the stored document travels in a CDC event
    /// (row before and after) that must fit a 10 MB Pub/Sub message.
    #[arg(long, env = "SOURCE_MAX_BODY", value_parser = parse_byte_size, default_value = "1MiB")]
    pub source_max_body: usize,
    /// Poll loops (one per content being fetched) this replica runs at once. Each is a sleeping
    /// task of about a kibibyte; contents beyond this wait for a slot, up to 100 per replica in
    /// the worker (`lqdty_workflow_contents_waiting_for_a_loop`), the rest in Temporal's
    /// activity backlog (`lqdty_workflow_activity_backlog`), both logged. 1..=50000.
    #[arg(long, env = "WORKER_MAX_ACTIVITIES", default_value_t = liquidity_workflows::worker::DEFAULT_MAX_ACTIVITIES)]
    pub worker_max_activities: usize,
    /// Workflows this replica keeps in memory between their tasks (Temporal's sticky cache),
    /// ~50 KiB each. A workflow no longer cached replays its short history when its content
    /// ends: one more history read on the server, and a little CPU here. 1..=10000.
    #[arg(
        long,
        env = "WORKER_MAX_CACHED_WORKFLOWS",
        value_parser = clap::value_parser!(u16).range(1..=10_000),
        default_value_t = liquidity_workflows::worker::DEFAULT_MAX_CACHED_WORKFLOWS
    )]
    pub worker_max_cached_workflows: u16,
    /// Where `/metrics`, `/healthz` and `/readyz` (Temporal reachable) are served. Scraped from
    /// inside the network only: do not publish it.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: SocketAddr,
}

impl WorkflowWorkerArgs {
    /// The validated fetch policy.
    ///
    /// # Errors
    /// The first refused setting, named by its variable.
    pub fn policy(&self) -> anyhow::Result<FetchPolicy> {
        let policy = FetchPolicy {
            poll_interval: self.poll_interval,
            deadline: self.source_deadline,
            max_bad_answers: self.source_max_bad_answers,
            http_timeout: self.source_http_timeout,
            max_body: self.source_max_body,
        };
        policy.validate()?;
        Ok(policy)
    }
}

pub async fn run(args: WorkflowWorkerArgs) -> anyhow::Result<()> {
    let policy = args.policy()?;
    let max_activities = validate_max_activities(args.worker_max_activities)?;
    let sources = SourcesConfig::parse(&args.sources_config)?;
    let client = SourceClient::new(sources, policy.http_timeout, policy.max_body)
        .context("cannot build the source HTTP client")?;
    let settings = args.temporal.settings()?;
    let registry = args.tenancy.registry()?;
    let activities = SourceActivities::new(registry.clone(), client, policy);
    // Served from the start: a worker waiting for Temporal is alive, and says it is not ready.
    let temporal_probe = Arc::new(TemporalProbe::new(settings.clone()));
    let readiness = Readiness::new().check("temporal", move || {
        let probe = temporal_probe.clone();
        async move { probe.check().await }
    });
    let pools = PoolGauges::new(registry.clone());
    liquidity_observability::serve(args.metrics_addr, Ops { readiness, pools }).await?;
    liquidity_workflows::metrics::activity_slots(max_activities);
    let shutdown = super::shutdown_token();
    let tuning = WorkerTuning {
        max_activities,
        max_cached_workflows: args.worker_max_cached_workflows.into(),
        ..WorkerTuning::default()
    };
    let result = run_worker(&settings, activities, tuning, shutdown).await;
    registry.close().await;
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WorkflowWorkerArgs,
    }

    fn parse(extra: &[&str]) -> Result<WorkflowWorkerArgs, clap::Error> {
        let base = ["liquidity", "--tenants-config", "[]", "--sources-config", "{}"];
        Cli::try_parse_from(base.iter().chain(extra)).map(|cli| cli.args)
    }

    #[test]
    fn the_defaults_make_a_valid_policy_with_a_one_mebibyte_body_limit() {
        // Act
        let policy = parse(&[]).unwrap().policy().unwrap();

        // Assert
        assert_eq!(policy.max_body, 1024 * 1024);
        assert_eq!(policy, FetchPolicy::default());
    }

    #[test]
    fn a_bad_setting_stops_the_worker_with_a_message_naming_its_variable() {
        // Arrange
        let cases: [(&[&str], &str); 9] = [
            (&["--poll-interval", "0s"], "POLL_INTERVAL"),
            (&["--poll-interval", "2h"], "POLL_INTERVAL"),
            (&["--source-deadline", "0s"], "SOURCE_DEADLINE"),
            (&["--source-deadline", "30d"], "SOURCE_DEADLINE"),
            (&["--source-max-bad-answers", "0"], "SOURCE_MAX_BAD_ANSWERS"),
            (&["--source-http-timeout", "0s"], "SOURCE_HTTP_TIMEOUT"),
            (&["--source-http-timeout", "1m"], "SOURCE_HTTP_TIMEOUT"),
            (&["--source-max-body", "10MiB"], "SOURCE_MAX_BODY"),
            (&["--source-max-body", "12"], "SOURCE_MAX_BODY"),
        ];

        // Act
        let errors: Vec<String> = cases
            .iter()
            .map(|(flags, _)| parse(flags).unwrap().policy().unwrap_err().to_string())
            .collect();

        // Assert
        for ((flags, variable), error) in cases.iter().zip(errors) {
            assert!(error.starts_with(&format!("{variable}=")), "{flags:?}: {error}");
        }
    }

    #[test]
    fn a_zero_or_absurd_worker_max_activities_is_refused_by_name() {
        for value in ["0", "1000000"] {
            let args = parse(&["--worker-max-activities", value]).unwrap();
            let error = validate_max_activities(args.worker_max_activities).unwrap_err();
            assert!(error.to_string().starts_with("WORKER_MAX_ACTIVITIES="), "{error}");
        }
        assert_eq!(validate_max_activities(1000), Ok(1000));
    }

    #[test]
    fn values_that_do_not_parse_are_refused_by_clap_naming_the_variable() {
        for (flags, variable) in [
            (["--source-max-body", "lots"], "SOURCE_MAX_BODY"),
            (["--poll-interval", "soon"], "POLL_INTERVAL"),
            (["--worker-max-cached-workflows", "0"], "WORKER_MAX_CACHED_WORKFLOWS"),
            (
                ["--worker-max-cached-workflows", "10001"],
                "WORKER_MAX_CACHED_WORKFLOWS",
            ),
        ] {
            let error = parse(&flags).err().expect("refused").to_string();
            assert!(error.contains(variable), "{error}");
        }
    }
}
