//! The Temporal worker of the `fetchReportContent` workflow and its `pollSource` activity.

use std::time::Duration;

use anyhow::Context as _;
use temporalio_sdk::runtime::PollerBehavior;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use crate::activities::SourceActivities;
use crate::backlog;
use crate::poll_loops::HANDOFF_SLOTS;
use crate::settings::InvalidSetting;
use crate::temporal::{TemporalSettings, connect_waiting};
use crate::workflows::{FetchReportContentWorkflow, POLL_SOURCE_HEARTBEAT_TIMEOUT};

/// After shutdown starts, running poll loops get this long before they hand over: each reports
/// its attempt as a retryable failure carrying its progress, so another worker resumes it about
/// a second later instead of after the heartbeat timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Slots of the kinds of tasks this worker does not bound explicitly (the SDK's default).
const DEFAULT_SLOTS: usize = 100;

/// Largest `WORKER_MAX_ACTIVITIES` accepted. A poll loop is a sleeping task of about a kibibyte,
/// but each pass takes a tenant connection and a source call: 50,000 loops at the default 10 s
/// interval are 5,000 passes a second, more than one replica's cores serve.
pub const MAX_WORKER_ACTIVITIES: usize = 50_000;

/// Validates `WORKER_MAX_ACTIVITIES`: within 1..=[`MAX_WORKER_ACTIVITIES`].
///
/// # Errors
/// An [`InvalidSetting`] naming the variable.
pub fn validate_max_activities(max_concurrent_activities: usize) -> Result<usize, InvalidSetting> {
    if (1..=MAX_WORKER_ACTIVITIES).contains(&max_concurrent_activities) {
        Ok(max_concurrent_activities)
    } else {
        Err(InvalidSetting::new(
            "WORKER_MAX_ACTIVITIES",
            max_concurrent_activities,
            format!("within 1..={MAX_WORKER_ACTIVITIES}"),
        ))
    }
}

/// Default of `WORKER_MAX_ACTIVITIES`: a poll loop for each content of 3,000 reports (9,000
/// contents) and then some. In the `capacity` bench no content waited for a slot at any step;
/// what limited it was starting workflows on the Temporal dev server.
pub const DEFAULT_MAX_ACTIVITIES: usize = 10_000;

/// How a worker takes its tasks from Temporal: slots, pollers and the sticky cache.
///
/// Measured with the `temporal-ceiling` bench (2,000 workflows of one no-op activity each,
/// 2026-12-01, 2 cores; the dev server with SQLite in WAL mode): the SDK's defaults complete
/// 39 workflows/s, [`WorkerTuning::default`] 47-53/s. What made the difference is the number of
/// workflow-task polls on the normal queue: every new workflow's first task is taken from it,
/// and the SDK's default (5 polls, a fifth of them on the normal queue) polls it once at a time,
/// so the backlog of first tasks drains at one task per poll round trip (~35 ms under load:
/// ~28/s) while the server has CPU to spare. More polls than 10 (20) changed nothing measurable;
/// fewer on the sticky queue (8 of 10 on the normal queue) were slower (42-46/s), since every
/// workflow's second task is sticky. Eager activity dispatch (the SDK's default, kept) is worth
/// it: without it, 30/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerTuning {
    /// Poll loops this worker runs at once (`WORKER_MAX_ACTIVITIES`). The SDK's own activity
    /// slots only hand contents over to loops: there are this many up to [`HANDOFF_SLOTS`].
    pub max_activities: usize,
    /// Workflow tasks this worker processes at once.
    pub max_workflow_tasks: usize,
    /// Concurrent workflow-task polls, sticky and normal queue together (at least 2).
    pub workflow_pollers: usize,
    /// Share of `workflow_pollers` that poll the normal (non-sticky) queue.
    pub nonsticky_ratio: f32,
    /// Concurrent activity-task polls.
    pub activity_pollers: usize,
    /// Workflows kept in memory between their tasks (the sticky cache).
    pub max_cached_workflows: usize,
    /// Activity slots a workflow task may reserve to receive its activities in the completion
    /// response (eager activity dispatch); 0 disables it.
    pub eager_activities: usize,
}

/// Default of `WORKER_MAX_CACHED_WORKFLOWS`, the sticky cache (the SDK's is 1,000). A cached
/// workflow costs ~50 KiB of this process, most of it Core's state machines and history; one
/// that is not cached costs nothing until its next task, which then fetches and replays its
/// history (about 11 events). Each polling content's workflow sits idle for as long as its
/// source takes, so a cache of 1,000 held 1,000 idle workflows, ~50 MiB, for nothing; 250 keeps
/// the workflows of a burst's last few seconds, whose next task (their content's end) is near.
pub const DEFAULT_MAX_CACHED_WORKFLOWS: u16 = 250;

/// The tuning `liquidity workflow-worker` starts with (see [`WorkerTuning`] for the numbers).
impl Default for WorkerTuning {
    fn default() -> Self {
        Self {
            workflow_pollers: 10,
            nonsticky_ratio: 0.5,
            max_cached_workflows: DEFAULT_MAX_CACHED_WORKFLOWS.into(),
            ..Self::sdk_defaults(DEFAULT_MAX_ACTIVITIES)
        }
    }
}

impl WorkerTuning {
    /// The SDK's defaults, with `max_activities` activity slots: the baseline of the
    /// `temporal-ceiling` bench.
    pub fn sdk_defaults(max_activities: usize) -> Self {
        Self {
            max_activities,
            max_workflow_tasks: DEFAULT_SLOTS,
            workflow_pollers: 5,
            nonsticky_ratio: 0.2,
            activity_pollers: 5,
            max_cached_workflows: 1000,
            eager_activities: 3,
        }
    }

    /// Applies the tuning to options built with the SDK's builder.
    pub fn apply(&self, options: &mut WorkerOptions) {
        options.tuner = TunerHolder::builder()
            .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(self.max_workflow_tasks.max(2)))
            .activity_task_slot_supplier(FixedSizeSlotSupplier::new(self.max_activities.clamp(1, HANDOFF_SLOTS)))
            .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(DEFAULT_SLOTS))
            .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(DEFAULT_SLOTS))
            .build()
            .into();
        // Set explicitly: left unset, a server that offers poller autoscaling could enrol the
        // worker in it, and the figures above would no longer describe what runs.
        options.workflow_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(self.workflow_pollers.max(2)));
        options.nonsticky_to_sticky_poll_ratio = self.nonsticky_ratio;
        options.activity_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(self.activity_pollers.max(1)));
        options.max_cached_workflows = self.max_cached_workflows;
        options.max_eager_activity_reservations_per_workflow_task = self.eager_activities;
    }
}

/// Runs a worker until `shutdown` is cancelled, then drains it: polling stops, poll loops hand
/// over after [`SHUTDOWN_GRACE`] (Temporal retries them elsewhere) and the call returns once
/// every task and loop has reported.
///
/// Temporal unreachable at start is waited for, with a logged backoff ([`connect_waiting`]);
/// a shutdown during that wait returns `Ok` at once.
///
/// `tuning.max_activities` bounds the poll loops this process carries at once. Each is an
/// async task that mostly sleeps, so ten thousand cost little; the bound is there to spread
/// contents over the workers.
///
/// The returned future is not `Send` (the SDK's worker is not): await it on the main task (or
/// a `LocalSet`).
///
/// # Errors
/// A fatal worker error (e.g. the namespace does not exist).
pub async fn run_worker(
    settings: &TemporalSettings,
    activities: SourceActivities,
    tuning: WorkerTuning,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = Runtime::from_current_tokio(Default::default()).context("cannot create the Temporal runtime")?;
    let Some(client) = connect_waiting(settings, &shutdown).await else {
        tracing::info!("shut down while waiting for Temporal");
        return Ok(());
    };
    // Contents waiting for a slot are invisible to every worker: the watcher asks the server,
    // on this task, until shutdown.
    let watcher = backlog::watch(client.clone(), settings, tuning.max_activities, &shutdown);
    let loops = activities.loops().clone();
    loops.open(client.clone(), tuning.max_activities);
    let mut options = WorkerOptions::new(settings.task_queue.clone())
        .register_workflow::<FetchReportContentWorkflow>()
        .context("cannot register the workflow")?
        .register_activities(activities)
        .graceful_shutdown_period(SHUTDOWN_GRACE)
        // Only an activity waiting for a loop slot heartbeats through the SDK (the loops send
        // their own). The SDK sends one per 0.8 x the heartbeat timeout but caps that period at
        // 60 s by default, which would keep the write rate of a 60 s timeout for our 120 s.
        .max_heartbeat_throttle_interval(POLL_SOURCE_HEARTBEAT_TIMEOUT)
        .build();
    tuning.apply(&mut options);
    let mut worker = Worker::new(&runtime, client, options).context("cannot create the Temporal worker")?;
    // Taken before `run()`, which borrows the worker for its whole life.
    let initiate_shutdown = worker.shutdown_handle();
    tracing::info!(
        address = %settings.address,
        namespace = %settings.namespace,
        task_queue = %settings.task_queue,
        ?tuning,
        "workflow worker polling"
    );
    let run = worker.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.context("the Temporal worker failed"),
        ((), ()) = async { tokio::join!(shutdown.cancelled(), watcher) } => {
            tracing::info!(grace = ?SHUTDOWN_GRACE, "workflow worker draining");
            initiate_shutdown();
        }
    }
    let (run, ()) = tokio::join!(run, loops.drain(SHUTDOWN_GRACE));
    run.context("the Temporal worker failed while draining")?;
    tracing::info!("workflow worker stopped");
    Ok(())
}
