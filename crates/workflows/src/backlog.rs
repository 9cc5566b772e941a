//! Watches the task queue's activity backlog: contents whose poll loop waits for a slot.
//!
//! A content gets its poll loop when a workflow worker has a free activity slot
//! (`WORKER_MAX_ACTIVITIES`). When every replica's slots are taken, Temporal keeps the new
//! `pollSource` tasks in the task queue's backlog, and those contents are not polled at all until
//! a loop ends somewhere. No worker sees those tasks, so each replica asks the server
//! (`DescribeTaskQueue` with stats) every [`WATCH_EVERY`], publishes what it says as
//! `lqdty_workflow_activity_backlog` and `lqdty_workflow_activity_backlog_age_seconds`, and logs a
//! warning while the oldest waiting task is older than [`TOLERATED_AGE`]. A backlog with free
//! slots is the other cause the warning names: a server too busy to dispatch (the README's
//! `capacity` bench saw 640 tasks waiting at 9,000 contents with 10,000 slots, the dev server
//! using a full core).

use std::time::Duration;

use temporalio_client::Client;
use temporalio_client::tonic::IntoRequest as _;
use temporalio_common::protos::temporal::api::enums::v1::{TaskQueueKind, TaskQueueType};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeTaskQueueRequest;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::temporal::TemporalSettings;

/// How often the backlog is read: a tenth of the default poll interval would be 1 s, which costs
/// the server a query per replica per second for a figure that moves slowly; 10 s is the scrape
/// interval of a typical Prometheus.
pub const WATCH_EVERY: Duration = Duration::from_secs(10);

/// A `pollSource` task may wait this long for a poller without a warning: the dispatch of a task
/// to an idle worker takes milliseconds, so anything older is waiting for a slot.
pub const TOLERATED_AGE: Duration = Duration::from_secs(2);

/// The activity backlog of a task queue, as the server reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivityBacklog {
    /// `pollSource` tasks waiting (approximate, converges).
    pub tasks: i64,
    /// Age of the oldest waiting task.
    pub oldest: Duration,
}

/// Reads the activity backlog of the settings' task queue.
///
/// # Errors
/// The server's answer, when the call fails.
pub async fn read(
    client: &Client,
    settings: &TemporalSettings,
) -> Result<ActivityBacklog, temporalio_client::tonic::Status> {
    let request = DescribeTaskQueueRequest {
        namespace: settings.namespace.clone(),
        task_queue: Some(TaskQueue {
            name: settings.task_queue.clone(),
            kind: TaskQueueKind::Normal.into(),
            normal_name: String::new(),
        }),
        task_queue_type: TaskQueueType::Activity.into(),
        report_stats: true,
        ..Default::default()
    };
    let described = client
        .connection()
        .workflow_service()
        .describe_task_queue(request.into_request())
        .await?
        .into_inner();
    let stats = described.stats.unwrap_or_default();
    let oldest = stats
        .approximate_backlog_age
        .and_then(|age| Duration::try_from(age).ok())
        .unwrap_or_default();
    Ok(ActivityBacklog {
        tasks: stats.approximate_backlog_count.max(0),
        oldest,
    })
}

/// Publishes the backlog every [`WATCH_EVERY`] until `shutdown`, warning while contents wait
/// longer than [`TOLERATED_AGE`]. A failed read is logged and tried again at the next tick: the
/// worker's own connection reports Temporal outages louder.
pub async fn watch(client: Client, settings: &TemporalSettings, max_activities: usize, shutdown: &CancellationToken) {
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match read(&client, settings).await {
            Ok(backlog) => {
                metrics::activity_backlog(backlog);
                if backlog.tasks > 0 && backlog.oldest > TOLERATED_AGE {
                    tracing::warn!(
                        waiting = backlog.tasks,
                        oldest = ?backlog.oldest,
                        slots_per_worker = max_activities,
                        task_queue = %settings.task_queue,
                        "contents wait in Temporal's activity backlog and are not polled: every activity slot is taken (add workflow-worker replicas or raise WORKER_MAX_ACTIVITIES), or the server dispatches tasks slower than they come (see its CPU)"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the task queue's activity backlog"),
        }
    }
}
