//! The Temporal worker of the `fetchReportContent` workflow and its `pollSource` activity.

use std::time::Duration;

use anyhow::Context as _;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

use crate::activities::SourceActivities;
use crate::settings::InvalidSetting;
use crate::temporal::{TemporalSettings, connect_waiting};
use crate::workflows::FetchReportContentWorkflow;

/// After shutdown starts, in-flight poll loops get this long before they are cancelled. A
/// cancelled attempt is reported as a retryable failure carrying its heartbeat details, so
/// another worker resumes it about a second later instead of after the heartbeat timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Slots of the kinds of tasks this worker does not bound explicitly (the SDK's default).
const DEFAULT_SLOTS: usize = 100;

/// Largest `WORKER_MAX_ACTIVITIES` accepted. A poll loop is a sleeping task, but each holds a
/// tenant connection during its passes: beyond this, a replica would starve the tenant pools.
pub const MAX_WORKER_ACTIVITIES: usize = 10_000;

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

/// Runs a worker until `shutdown` is cancelled, then drains it: polling stops, poll loops are
/// cancelled after [`SHUTDOWN_GRACE`] (Temporal retries them elsewhere) and the call returns once
/// every task has reported.
///
/// Temporal unreachable at start is waited for, with a logged backoff ([`connect_waiting`]);
/// a shutdown during that wait returns `Ok` at once.
///
/// `max_concurrent_activities` bounds the poll loops this process carries at once. Each is an
/// async task that mostly sleeps, so a thousand cost little; the bound is there to spread
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
    max_concurrent_activities: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = Runtime::from_current_tokio(Default::default()).context("cannot create the Temporal runtime")?;
    let Some(client) = connect_waiting(settings, &shutdown).await else {
        tracing::info!("shut down while waiting for Temporal");
        return Ok(());
    };
    let tuner = TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(DEFAULT_SLOTS))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(max_concurrent_activities.max(1)))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(DEFAULT_SLOTS))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(DEFAULT_SLOTS))
        .build();
    let options = WorkerOptions::new(settings.task_queue.clone())
        .register_workflow::<FetchReportContentWorkflow>()
        .context("cannot register the workflow")?
        .register_activities(activities)
        .tuner(tuner)
        .graceful_shutdown_period(SHUTDOWN_GRACE)
        .build();
    let mut worker = Worker::new(&runtime, client, options).context("cannot create the Temporal worker")?;
    // Taken before `run()`, which borrows the worker for its whole life.
    let initiate_shutdown = worker.shutdown_handle();
    tracing::info!(
        address = %settings.address,
        namespace = %settings.namespace,
        task_queue = %settings.task_queue,
        max_concurrent_activities,
        "workflow worker polling"
    );
    let run = worker.run();
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.context("the Temporal worker failed"),
        () = shutdown.cancelled() => {
            tracing::info!(grace = ?SHUTDOWN_GRACE, "workflow worker draining");
            initiate_shutdown();
        }
    }
    run.await.context("the Temporal worker failed while draining")?;
    tracing::info!("workflow worker stopped");
    Ok(())
}
