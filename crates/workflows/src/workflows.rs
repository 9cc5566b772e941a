//! The `fetchReportContent` workflow. Deterministic code only: it schedules the `pollSource`
//! activity and returns its outcome; every side effect happens in the activity.

use std::time::Duration;

use liquidity_core::TenantId;
use liquidity_core::reports::ReportContent;
use liquidity_core::trace_context::TraceParent;
use serde::{Deserialize, Serialize};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::activities::SourceActivities;

/// Workflow type name of [`FetchReportContentWorkflow`], as other languages and `temporal`
/// CLI users see it.
pub const FETCH_REPORT_CONTENT_WORKFLOW: &str = "fetchReportContent";

/// Activity type name of [`SourceActivities::poll_source`].
pub const POLL_SOURCE_ACTIVITY: &str = "pollSource";

/// Upper bound of one `pollSource` attempt. The activity ends itself at the fetch deadline
/// (`SOURCE_DEADLINE`, which must stay below this), so this only catches a stuck attempt.
pub const POLL_SOURCE_START_TO_CLOSE: Duration = Duration::from_secs(24 * 60 * 60);

/// A worker that stops heartbeating for this long is considered dead and the activity is
/// retried elsewhere, resuming from its last heartbeat details.
///
/// Each heartbeat the server receives is a write of the workflow's state, and a poll loop sends
/// one per 0.8 x this timeout (`poll_loop::HEARTBEAT_EVERY`) for every polling content, while the server re-arms a timeout check
/// per content once per period: about 2.25 writes per content per period, all on the Temporal
/// dev server's single SQLite connection, which also has to start every new workflow. With 60 s,
/// 6,000 polling contents were ~250 writes a second and the next 3,000 starts no longer got
/// through; 120 s halves that. The price is that the contents of a worker killed without a
/// drain resume up to two minutes later (a drained worker hands its contents over at once, see
/// `worker::SHUTDOWN_GRACE`).
pub const POLL_SOURCE_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(120);

/// Input of the workflow and of its activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchReportContentInput {
    /// The tenant whose database holds the content; the activity picks the pool with it.
    pub tenant_id: TenantId,
    /// The content row as CDC saw it. The activity re-reads the row before acting, so a stale
    /// copy here is harmless.
    pub report_content: ReportContent,
    /// The `traceparent` of the span that started the workflow (the CDC worker's handling of
    /// the content): the activity's span continues that trace. Absent with traces off, and in
    /// inputs of workflows started before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<TraceParent>,
}

/// How a fetch ended; the result of the workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum FetchOutcome {
    /// The source's document was stored and the content marked completed.
    Completed,
    /// The content was marked failed with `reason` in its data.
    Failed {
        /// The reason stored in the content's `data`.
        reason: String,
    },
    /// The content was already completed or failed (a retried activity or a duplicate
    /// workflow): nothing was changed.
    AlreadyFinished,
    /// The content row no longer exists (its report was deleted): nothing to do.
    Gone,
}

/// Options of the `pollSource` activity: one long attempt that heartbeats, retried without limit
/// (with backoff up to a minute) after worker crashes and database errors. The loop itself ends
/// at the fetch deadline, which bounds the retries.
pub fn poll_source_options() -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        // 0 = unlimited attempts.
        .maximum_attempts(0)
        .build();
    ActivityOptions::with_start_to_close_timeout(POLL_SOURCE_START_TO_CLOSE)
        .heartbeat_timeout(POLL_SOURCE_HEARTBEAT_TIMEOUT)
        .retry_policy(retry)
        .build()
}

/// Fetches one report content: runs `pollSource` to its end. About 11 history events whatever
/// the duration of the fetch, because heartbeats are not history events.
#[workflow]
#[derive(Default)]
pub struct FetchReportContentWorkflow;

#[workflow_methods]
impl FetchReportContentWorkflow {
    /// Runs the poll loop activity and returns its outcome.
    #[run(name = "fetchReportContent")]
    // The macro turns the method name into an undocumented marker constant; it copies `allow`s.
    #[allow(missing_docs)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: FetchReportContentInput) -> WorkflowResult<FetchOutcome> {
        // The activity is cancelled with the workflow through a child of the workflow's token,
        // held here. Left to inherit the root token, the SDK (temporalio-workflow 1.1.1) stores
        // the activity's cancellation callback, which holds the workflow's context, in that
        // same context: a reference cycle that is only broken when the activity resolves. A
        // workflow dropped while its activity runs (evicted from the sticky cache, as most
        // polling contents are) then leaked its context, ~4 KiB, for the life of the process.
        // The child token is owned by this future: dropping the workflow drops it, and with it
        // the callback (the root token keeps only a weak reference to a child).
        let cancellation = ctx.cancellation_token().child_token();
        let mut options = poll_source_options();
        options.cancellation_token = Some(cancellation.clone());
        let outcome = ctx
            .execute_activity(SourceActivities::poll_source, input, options)
            .await?;
        drop(cancellation);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use temporalio_common::WorkflowDefinition as _;

    use super::*;

    #[test]
    fn the_workflow_and_activity_have_their_documented_type_names() {
        assert_eq!(FetchReportContentWorkflow::run.name(), FETCH_REPORT_CONTENT_WORKFLOW);
        assert_eq!(SourceActivities::poll_source.name(), POLL_SOURCE_ACTIVITY);
    }

    #[test]
    fn outcomes_serialize_with_a_camel_case_tag() {
        let failed = FetchOutcome::Failed { reason: "r".into() };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"outcome":"failed","reason":"r"}"#
        );
        assert_eq!(
            serde_json::to_string(&FetchOutcome::AlreadyFinished).unwrap(),
            r#"{"outcome":"alreadyFinished"}"#
        );
    }
}
