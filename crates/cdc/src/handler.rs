//! The single-step core of the CDC worker, called by the consumer loop and by the tests.

use std::collections::HashMap;
use std::sync::Arc;

use liquidity_core::reports::{self, ReportContent, ReportStatus};
use liquidity_core::tenancy::{TenancyError, TenantRegistry};
use liquidity_core::trace_context;
use liquidity_core::{ReportId, TenantId};
use liquidity_workflows::starter::{StartError, StartOutcome, WorkflowStarter};
use tracing::Instrument as _;

use crate::envelope::{self, ChangeEvent, DecodeError, Op, REPORT_CONTENTS};

/// What the handler needs.
pub struct CdcDeps {
    /// Tenant id -> pool; also decides which tenants we accept events from.
    pub registry: Arc<TenantRegistry>,
    /// Starts `fetchReportContent` workflows idempotently.
    pub starter: WorkflowStarter,
}

/// What handling a change did. Every variant means the message can be acked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The content's workflow is running (just started, or it already was).
    WorkflowRunning {
        /// The run fetching the content.
        run_id: String,
    },
    /// The content's workflow already completed: a redelivered INSERT.
    WorkflowAlreadyClosed,
    /// This change finished the report: `finished_at` was set now.
    ReportFinished(ReportId),
    /// The content is final but others are not (or the report was already finished).
    ReportNotFinished(ReportId),
    /// Nothing to do for this change.
    Ignored(&'static str),
}

/// Why a message could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// The message can never succeed: dead-letter it and ack it. Never touched a database.
    #[error("poison message: {0}")]
    Poison(#[from] PoisonError),
    /// Temporal refused the work and will refuse it again (unknown namespace, invalid input):
    /// the consumer retries it a few times, in case the refusal was momentary (a namespace
    /// being created), then dead-letters it with this reason.
    #[error("rejected: {0}")]
    Rejected(#[source] StartError),
    /// Temporal or a database is unavailable: leave the message unacked so it comes back.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

impl From<StartError> for CdcError {
    fn from(e: StartError) -> Self {
        if e.is_transient() {
            Self::Transient(e.into())
        } else {
            Self::Rejected(e)
        }
    }
}

/// Why a message is poison.
#[derive(Debug, thiserror::Error)]
pub enum PoisonError {
    /// Not a Debezium event of ours.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// `source.name` is a UUID but not a tenant of the registry.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// A table we do not capture.
    #[error("unexpected table {0:?}")]
    UnexpectedTable(String),
    /// An INSERT or UPDATE without an `after` row.
    #[error("{0:?} event without an after row")]
    MissingAfter(Op),
}

/// Decodes a Pub/Sub message and handles the change.
///
/// # Errors
/// [`CdcError::Poison`] for messages that can never succeed, [`CdcError::Rejected`] when
/// Temporal refuses the start, [`CdcError::Transient`] when a dependency is down.
pub async fn handle_message(
    deps: &CdcDeps,
    data: &[u8],
    attributes: &HashMap<String, String>,
) -> Result<Outcome, CdcError> {
    let event = envelope::decode(data, attributes).map_err(PoisonError::from)?;
    handle_change(deps, event).await
}

/// Handles one decoded change of `report_contents`, in a span that continues the trace of the
/// API request that wrote the row (see [`liquidity_core::trace_context`]).
///
/// # Errors
/// As [`handle_message`].
pub async fn handle_change(deps: &CdcDeps, event: ChangeEvent) -> Result<Outcome, CdcError> {
    let span = tracing::info_span!("handle_change", tenant_id = %event.tenant_id, op = ?event.op);
    trace_context::follow(&span, event.trace_parent.as_ref());
    handle(deps, event).instrument(span).await
}

async fn handle(deps: &CdcDeps, event: ChangeEvent) -> Result<Outcome, CdcError> {
    if !deps.registry.contains(event.tenant_id) {
        return Err(PoisonError::UnknownTenant(event.tenant_id).into());
    }
    if event.table != REPORT_CONTENTS {
        return Err(PoisonError::UnexpectedTable(event.table).into());
    }
    match event.op {
        Op::Create | Op::Read => {
            let after = event.after.ok_or(PoisonError::MissingAfter(event.op))?;
            match (event.op, after.status.is_terminal()) {
                (_, false) => start_fetch(deps, event.tenant_id, &after).await,
                // A re-snapshot (after a lost replication slot) replaces the updates made
                // while nothing was decoded: a final content may be the one that ends its
                // report. Idempotent: a finished report stays as it is.
                (Op::Read, true) => finish_report(deps, event.tenant_id, after.report_id).await,
                (_, true) => Ok(Outcome::Ignored("content already final")),
            }
        }
        Op::Update => {
            let after = event.after.ok_or(PoisonError::MissingAfter(event.op))?;
            let was_in_progress = event
                .before
                .as_ref()
                .is_some_and(|b| b.status == ReportStatus::InProgress);
            if was_in_progress && after.status.is_terminal() {
                finish_report(deps, event.tenant_id, after.report_id).await
            } else {
                // e.g. a poll that only moved last_run_at
                Ok(Outcome::Ignored("no status transition"))
            }
        }
        Op::Delete | Op::Truncate => Ok(Outcome::Ignored("deletes need no work")),
    }
}

/// Makes sure the content's workflow runs. Shared by INSERT events and the reconciler.
///
/// # Errors
/// [`CdcError::Transient`] when Temporal cannot be reached, [`CdcError::Rejected`] when it
/// refuses the start.
pub async fn start_fetch(deps: &CdcDeps, tenant_id: TenantId, content: &ReportContent) -> Result<Outcome, CdcError> {
    let outcome = deps.starter.ensure_started(tenant_id, content).await?;
    Ok(match outcome {
        StartOutcome::Started { run_id } => {
            tracing::info!(content_id = %content.id, source = %content.source, %run_id, "fetch workflow running");
            Outcome::WorkflowRunning { run_id }
        }
        StartOutcome::AlreadyClosed => Outcome::WorkflowAlreadyClosed,
    })
}

/// Sets the report's `finished_at` if all its contents are final. Shared by UPDATE events and
/// the reconciler; exactly once however many workers race (see
/// [`reports::finish_report_if_done`]).
///
/// # Errors
/// [`CdcError::Transient`] when the tenant database cannot be reached.
pub async fn finish_report(deps: &CdcDeps, tenant_id: TenantId, report_id: ReportId) -> Result<Outcome, CdcError> {
    let pool = deps.registry.pool(tenant_id).await.map_err(|e| match e {
        TenancyError::UnknownTenant(id) => CdcError::Poison(PoisonError::UnknownTenant(id)),
        connect @ TenancyError::Connect { .. } => CdcError::Transient(connect.into()),
    })?;
    let finished = reports::finish_report_if_done(pool, report_id)
        .await
        .map_err(|e| anyhow::Error::new(e).context("finishing the report failed"))?;
    Ok(match finished {
        Some(at) => {
            tracing::info!(%report_id, finished_at = %at, "report finished");
            Outcome::ReportFinished(report_id)
        }
        None => Outcome::ReportNotFinished(report_id),
    })
}
