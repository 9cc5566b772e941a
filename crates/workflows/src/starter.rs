//! Starting the workflow of a content exactly once, from the CDC worker and the reconciler.

use std::sync::Arc;

use tokio::sync::Semaphore;

use liquidity_core::reports::ReportContent;
use liquidity_core::trace_context::TraceParent;
use liquidity_core::{ReportContentId, TenantId};
use temporalio_client::errors::{WorkflowInteractionError, WorkflowStartError};
use temporalio_client::tonic::{Code, Status};
use temporalio_client::{
    Client, WorkflowExecutionStatus, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};

use crate::workflows::{FetchReportContentInput, FetchReportContentWorkflow};

/// The workflow id of a content: `report-content-{tenant_id}-{content_id}`. Deterministic, so
/// Temporal deduplicates every start of the same content (CDC redeliveries, reconciler).
pub fn workflow_id(tenant_id: TenantId, content_id: ReportContentId) -> String {
    format!("report-content-{tenant_id}-{content_id}")
}

/// What [`WorkflowStarter::ensure_started`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// A run of the content's workflow is running: just started, or already running (the
    /// client API does not tell the two apart: with `UseExisting` both return the run id).
    Started {
        /// The run fetching the content.
        run_id: String,
    },
    /// The content's workflow already completed; nothing was started.
    AlreadyClosed,
}

/// Where the workflow of a content stands, as [`WorkflowStarter::state`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkflowState {
    /// A run is running: it owns the content.
    Running,
    /// The latest run is closed (completed, failed, terminated, timed out...): nothing fetches
    /// the content any more.
    Closed(WorkflowExecutionStatus),
    /// Temporal never heard of it (or its history was deleted after retention).
    NotFound,
}

/// Why a workflow could not be started (or described).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Temporal is down, overloaded or too slow: retry later (do not ack the CDC message).
    #[error("Temporal is unavailable for workflow {workflow_id}")]
    Unavailable {
        /// The workflow.
        workflow_id: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Temporal refused the request and will refuse it again (unknown namespace, invalid
    /// argument, permission denied, payload conversion...): retrying does not help by itself,
    /// so the CDC worker dead-letters the message after a few attempts.
    #[error("Temporal rejected the request for workflow {workflow_id}")]
    Rejected {
        /// The workflow.
        workflow_id: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartError {
    /// Whether retrying later may succeed on its own.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    fn classify(workflow_id: String, transient: bool, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let source = Box::new(source);
        if transient {
            Self::Unavailable { workflow_id, source }
        } else {
            Self::Rejected { workflow_id, source }
        }
    }
}

/// Default of [`WorkflowStarter::with_max_requests`] (`CDC_MAX_STARTS`): as many as the CDC
/// worker's default messages in flight, so by default the bound changes nothing.
///
/// Measured on the Temporal dev server (one SQLite connection), a lower bound is a trade: with
/// 8, the first workflow tasks of a step of 3,000 new contents in the `capacity` bench were
/// dispatched at 4.5-9.5 a second while the starts ran, against 0.4-1.3 with 64 (the worker's
/// polls wait behind the queue of starts), and 95% of the 6,000 contents had their first check
/// within 240 s (with 64, the p95 was 265-269 s); but the 2,000-report `burst` drained at 73% of
/// Temporal's ceiling instead of 80-91%: messages waiting for a start turn outlived their
/// acknowledgement deadline and were redelivered (11,723 starts handled for 6,000 contents).
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// Starts `fetchReportContent` workflows on one task queue.
#[derive(Clone)]
pub struct WorkflowStarter {
    client: Client,
    task_queue: String,
    /// Bounds the starts and describes in flight, over every clone of this starter.
    requests: Arc<Semaphore>,
}

impl WorkflowStarter {
    /// A starter targeting `task_queue` through `client`, with at most
    /// [`DEFAULT_MAX_REQUESTS`] requests in flight.
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        Self {
            client,
            task_queue: task_queue.into(),
            requests: Arc::new(Semaphore::new(DEFAULT_MAX_REQUESTS)),
        }
    }

    /// At most `max` starts and describes in flight at once (at least one): callers beyond it
    /// wait their turn, so that a backlog of starts cannot crowd the server's work on the
    /// workflows already started.
    #[must_use]
    pub fn with_max_requests(mut self, max: usize) -> Self {
        self.requests = Arc::new(Semaphore::new(max.max(1)));
        self
    }

    /// Makes sure a workflow fetches `content`, idempotently.
    ///
    /// Policies: `UseExisting` (a running workflow of the content is returned, not duplicated)
    /// and `AllowDuplicateFailedOnly` (a completed workflow is not started again; one that
    /// failed, timed out or was terminated is, so the reconciler can recover its content).
    ///
    /// # Errors
    /// [`StartError::Unavailable`] for transient gRPC failures, [`StartError::Rejected`] otherwise.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, content_id = %content.id))]
    pub async fn ensure_started(
        &self,
        tenant_id: TenantId,
        content: &ReportContent,
    ) -> Result<StartOutcome, StartError> {
        self.start(tenant_id, content, WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
            .await
    }

    /// Makes sure a run of the content's workflow is running, even if the latest one
    /// completed: the reconciler's repair of a content left in progress by a closed workflow.
    ///
    /// Policies: `UseExisting` (a running run is returned, so there is never more than one
    /// running per content) and `AllowDuplicate` (any closed run, completed included, is
    /// followed by a new one). Only the reconciler uses this: a redelivered CDC INSERT must
    /// not restart a completed fetch, which [`Self::ensure_started`] guarantees.
    ///
    /// # Errors
    /// As [`Self::ensure_started`].
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, content_id = %content.id))]
    pub async fn ensure_running(
        &self,
        tenant_id: TenantId,
        content: &ReportContent,
    ) -> Result<StartOutcome, StartError> {
        self.start(tenant_id, content, WorkflowIdReusePolicy::AllowDuplicate)
            .await
    }

    /// Where the content's workflow stands (its latest run).
    ///
    /// # Errors
    /// [`StartError::Unavailable`] for transient gRPC failures, [`StartError::Rejected`] otherwise.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, content_id = %content_id))]
    pub async fn state(&self, tenant_id: TenantId, content_id: ReportContentId) -> Result<WorkflowState, StartError> {
        let workflow_id = workflow_id(tenant_id, content_id);
        let _turn = self.turn().await;
        let described = self
            .client
            .get_workflow_handle::<FetchReportContentWorkflow>(workflow_id.clone())
            .describe(Default::default())
            .await;
        match described {
            Ok(description) => Ok(match description.status() {
                WorkflowExecutionStatus::Running => WorkflowState::Running,
                closed => WorkflowState::Closed(closed),
            }),
            Err(WorkflowInteractionError::NotFound(_)) => Ok(WorkflowState::NotFound),
            Err(source) => {
                let transient = matches!(&source, WorkflowInteractionError::Rpc(status) if is_transient_status(status));
                Err(StartError::classify(workflow_id, transient, source))
            }
        }
    }

    /// Waits for a free request slot; the permit gives it back when dropped.
    async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.requests
            .acquire()
            .await
            .expect("the starter never closes its semaphore")
    }

    async fn start(
        &self,
        tenant_id: TenantId,
        content: &ReportContent,
        reuse: WorkflowIdReusePolicy,
    ) -> Result<StartOutcome, StartError> {
        let workflow_id = workflow_id(tenant_id, content.id);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(reuse)
            .build();
        let input = FetchReportContentInput {
            tenant_id,
            report_content: content.clone(),
            // The span of `ensure_started`/`ensure_running`, inside the caller's.
            trace_parent: TraceParent::current(),
        };
        let _turn = self.turn().await;
        match self
            .client
            .start_workflow(FetchReportContentWorkflow::run, input, options)
            .await
        {
            Ok(handle) => Ok(StartOutcome::Started {
                run_id: handle.run_id().unwrap_or_default().to_owned(),
            }),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(StartOutcome::AlreadyClosed),
            Err(source) => {
                let transient = is_transient(&source);
                Err(StartError::classify(workflow_id, transient, source))
            }
        }
    }
}

fn is_transient(error: &WorkflowStartError) -> bool {
    matches!(error, WorkflowStartError::Rpc(status) if is_transient_status(status))
}

/// The gRPC codes of a server that is down, overloaded, too slow or whose connection broke
/// (tonic reports a broken transport as `Unknown` or `Cancelled`). Every other code is a
/// refusal that will repeat: `NotFound` (namespace), `InvalidArgument`, `PermissionDenied`,
/// `Unauthenticated`, `FailedPrecondition`, `Unimplemented`, `Internal`...
fn is_transient_status(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use temporalio_client::tonic::Status;

    use super::*;

    #[test]
    fn the_workflow_id_names_tenant_and_content() {
        let tenant: TenantId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let content: ReportContentId = "00000000-0000-4000-8000-0000000000c1".parse().unwrap();
        assert_eq!(
            workflow_id(tenant, content),
            "report-content-00000000-0000-4000-8000-000000000001-00000000-0000-4000-8000-0000000000c1"
        );
    }

    #[test]
    fn unavailable_and_overloaded_servers_are_transient_but_refusals_are_not() {
        assert!(is_transient(&WorkflowStartError::Rpc(Status::unavailable("down"))));
        assert!(is_transient(&WorkflowStartError::Rpc(Status::deadline_exceeded(
            "slow"
        ))));
        assert!(is_transient(&WorkflowStartError::Rpc(Status::resource_exhausted(
            "busy"
        ))));
        assert!(!is_transient(&WorkflowStartError::Rpc(Status::not_found("namespace"))));
        assert!(!is_transient(&WorkflowStartError::Rpc(Status::invalid_argument("bad"))));
        assert!(!is_transient(&WorkflowStartError::Rpc(Status::permission_denied("no"))));
    }

    #[test]
    fn a_refused_start_is_rejected_and_an_unreachable_server_is_unavailable() {
        // Arrange
        let refused = WorkflowStartError::Rpc(Status::not_found("namespace lqdty not found"));
        let down = WorkflowStartError::Rpc(Status::unavailable("connection refused"));

        // Act
        let refused = StartError::classify("w".to_owned(), is_transient(&refused), refused);
        let down = StartError::classify("w".to_owned(), is_transient(&down), down);

        // Assert
        assert!(matches!(refused, StartError::Rejected { .. }) && !refused.is_transient());
        assert!(matches!(down, StartError::Unavailable { .. }) && down.is_transient());
    }
}
