//! `temporal-ceiling`: how many workflows per second the test stack's Temporal dev server
//! completes on this machine, each with one no-op activity, with the worker tuning of
//! `liquidity workflow-worker`. The drain rate of the `burst` scenario is reported as a share of it.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use liquidity_workflows::worker::WorkerTuning;
use temporalio_client::{Client, WorkflowStartOptions};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowResult};

/// Workflows started per run: enough for a backlog to form, so that the rate is the engine's.
const WORKFLOWS: usize = 2000;

/// Starts in flight at once, as the CDC worker's `CDC_MAX_IN_FLIGHT` would.
const START_CONCURRENCY: usize = 64;

/// One no-op activity, the shape of `fetchReportContent` without its poll loop.
#[workflow]
#[derive(Default)]
pub struct CeilingWorkflow;

#[workflow_methods]
impl CeilingWorkflow {
    #[run(name = "ceiling")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, n: u64) -> WorkflowResult<u64> {
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60)).build();
        Ok(ctx.execute_activity(Noop::noop, n, options).await?)
    }
}

pub struct Noop;

#[activities]
impl Noop {
    #[activity(name = "noop")]
    pub async fn noop(_ctx: ActivityContext, n: u64) -> Result<u64, ActivityError> {
        Ok(n)
    }
}

/// The backlogs of a task queue (workflow tasks, activity tasks) and their dispatch rates, as the
/// `temporal` CLI of the test stack reports them; `None` when the CLI could not tell.
pub fn backlog(task_queue: &str) -> Option<QueueStats> {
    let cli = std::path::Path::new(&std::env::var("LQDTY_TEST_VENV").ok()?).join("bin/temporal");
    let address = std::env::var("LQDTY_TEST_TEMPORAL_ADDRESS").ok()?;
    let address = address.trim_start_matches("http://");
    let output = std::process::Command::new(cli)
        .args([
            "task-queue",
            "describe",
            "--address",
            address,
            "--task-queue",
            task_queue,
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    let described: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let of = |kind: &str| {
        let stats = described["stats"]
            .as_array()?
            .iter()
            .find(|s| s["taskQueueType"] == kind)?
            .clone();
        Some((
            stats["approximateBacklogCount"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| stats["approximateBacklogCount"].as_u64())?,
            stats["tasksDispatchRate"].as_f64().unwrap_or_default(),
        ))
    };
    let (workflow_backlog, workflow_dispatch) = of("workflow")?;
    let (activity_backlog, activity_dispatch) = of("activity")?;
    Some(QueueStats {
        workflow_backlog,
        workflow_dispatch,
        activity_backlog,
        activity_dispatch,
    })
}

/// What [`backlog`] reads.
pub struct QueueStats {
    pub workflow_backlog: u64,
    pub workflow_dispatch: f64,
    pub activity_backlog: u64,
    pub activity_dispatch: f64,
}

impl std::fmt::Display for QueueStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backlog: workflow tasks {} ({:.1}/s dispatched), activity tasks {} ({:.1}/s)",
            self.workflow_backlog, self.workflow_dispatch, self.activity_backlog, self.activity_dispatch
        )
    }
}

/// Completed workflows of the task queue, by Temporal's visibility.
async fn completed(client: &Client, task_queue: &str) -> usize {
    let query = format!("TaskQueue = '{task_queue}' AND ExecutionStatus = 'Completed'");
    client
        .count_workflows(query, Default::default())
        .await
        .map(|count| count.count())
        .unwrap_or_default()
}

/// Starts [`WORKFLOWS`] workflows on a fresh task queue served by one in-process worker tuned
/// with `tuning`, and returns the workflows completed per second, from the first start to the
/// last completion.
pub async fn ceiling(name: &str, tuning: WorkerTuning) -> f64 {
    let settings = liquidity_workflows::TemporalSettings {
        address: std::env::var("LQDTY_TEST_TEMPORAL_ADDRESS")
            .expect("LQDTY_TEST_TEMPORAL_ADDRESS")
            .parse()
            .unwrap(),
        task_queue: format!("ceiling-{}", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    };
    let client = liquidity_workflows::connect(&settings).await.unwrap();
    let runtime = Runtime::from_current_tokio(Default::default()).unwrap();
    let mut options = WorkerOptions::new(settings.task_queue.clone())
        .register_workflow::<CeilingWorkflow>()
        .unwrap()
        .register_activities(Noop)
        .build();
    tuning.apply(&mut options);
    let mut worker = Worker::new(&runtime, client.clone(), options).unwrap();
    let shutdown = worker.shutdown_handle();
    let task_queue = settings.task_queue.clone();

    let persistence_before = crate::stats::temporal_persistence_requests().await;
    let load = async {
        let started = Instant::now();
        futures::stream::iter(0..WORKFLOWS)
            .map(|i| {
                let options = WorkflowStartOptions::new(task_queue.clone(), format!("ceiling-{i}")).build();
                let client = client.clone();
                async move {
                    client
                        .start_workflow(CeilingWorkflow::run, i as u64, options)
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(START_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let all_started = started.elapsed();
        let mut last_print = Instant::now();
        loop {
            let done = completed(&client, &task_queue).await;
            if done >= WORKFLOWS {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                let queue = backlog(&task_queue).map(|q| q.to_string()).unwrap_or_default();
                println!(
                    "  {name}: {:>4.0} s, {done} completed; {queue}; load {}",
                    started.elapsed().as_secs_f64(),
                    crate::stats::load_average()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let elapsed = started.elapsed();
        shutdown();
        (all_started, elapsed)
    };
    let (run, (all_started, elapsed)) = tokio::join!(worker.run(), load);
    run.unwrap();
    let rate = WORKFLOWS as f64 / elapsed.as_secs_f64();
    println!(
        "temporal-ceiling {name}: {WORKFLOWS} workflows started in {:.1} s ({:.0}/s), all completed after {:.1} s: {rate:.1} workflows/s; load {}",
        all_started.as_secs_f64(),
        WORKFLOWS as f64 / all_started.as_secs_f64(),
        elapsed.as_secs_f64(),
        crate::stats::load_average(),
    );
    let persistence_after = crate::stats::temporal_persistence_requests().await;
    println!(
        "temporal-ceiling {name}: Temporal's persistence requests per workflow: {}",
        crate::stats::persistence_per_unit(persistence_before.as_ref(), persistence_after.as_ref(), WORKFLOWS)
    );
    rate
}

/// The ceiling with the SDK's defaults and with the tuning `liquidity workflow-worker` starts
/// with, one after the other.
pub async fn run() {
    ceiling("SDK defaults", WorkerTuning::sdk_defaults(1000)).await;
    ceiling("liquidity defaults", WorkerTuning::default()).await;
}
