//! Starting the workflow of a content exactly once, from the CDC worker and the reconciler.

use liquidity_core::reports::ReportContent;
use liquidity_core::{ReportContentId, TenantId};
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::tonic::Code;
use temporalio_client::{Client, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions};

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

/// Why a workflow could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Temporal is down, overloaded or too slow: retry later (do not ack the CDC message).
    #[error("Temporal is unavailable to start workflow {workflow_id}")]
    Unavailable {
        /// The workflow.
        workflow_id: String,
        /// The client's error.
        #[source]
        source: WorkflowStartError,
    },
    /// Anything else (bad namespace, payload conversion...): retrying will not help by itself.
    #[error("cannot start workflow {workflow_id}")]
    Other {
        /// The workflow.
        workflow_id: String,
        /// The client's error.
        #[source]
        source: WorkflowStartError,
    },
}

/// Starts `fetchReportContent` workflows on one task queue.
#[derive(Clone)]
pub struct WorkflowStarter {
    client: Client,
    task_queue: String,
}

impl WorkflowStarter {
    /// A starter targeting `task_queue` through `client`.
    pub fn new(client: Client, task_queue: impl Into<String>) -> Self {
        Self {
            client,
            task_queue: task_queue.into(),
        }
    }

    /// Makes sure a workflow fetches `content`, idempotently.
    ///
    /// Policies: `UseExisting` (a running workflow of the content is returned, not duplicated)
    /// and `AllowDuplicateFailedOnly` (a completed workflow is not started again; one that
    /// failed, timed out or was terminated is, so the reconciler can recover its content).
    ///
    /// # Errors
    /// [`StartError::Unavailable`] for transient gRPC failures, [`StartError::Other`] otherwise.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, content_id = %content.id))]
    pub async fn ensure_started(
        &self,
        tenant_id: TenantId,
        content: &ReportContent,
    ) -> Result<StartOutcome, StartError> {
        let workflow_id = workflow_id(tenant_id, content.id);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
            .build();
        let input = FetchReportContentInput {
            tenant_id,
            report_content: content.clone(),
        };
        match self
            .client
            .start_workflow(FetchReportContentWorkflow::run, input, options)
            .await
        {
            Ok(handle) => Ok(StartOutcome::Started {
                run_id: handle.run_id().unwrap_or_default().to_owned(),
            }),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(StartOutcome::AlreadyClosed),
            Err(source) if is_transient(&source) => Err(StartError::Unavailable { workflow_id, source }),
            Err(source) => Err(StartError::Other { workflow_id, source }),
        }
    }
}

fn is_transient(error: &WorkflowStartError) -> bool {
    matches!(
        error,
        WorkflowStartError::Rpc(status)
            if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted)
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
    }
}
