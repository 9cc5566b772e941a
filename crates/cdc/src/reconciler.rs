//! Repairs what lost messages left undone, from the databases alone.
//!
//! The Pub/Sub emulator forgets in-flight messages when it restarts, and a CDC reset can skip
//! changes. Every interval, for every tenant, the reconciler
//! - starts the workflow of each in-progress content that no workflow has checked for
//!   `stale_after` (a running workflow touches `last_run_at` at every poll, so only orphans and
//!   contents stuck on a failing source qualify; for the latter the start is a no-op);
//! - finishes each report whose contents are all final but whose `finished_at` is null.
//!
//! Both use the message handlers' own idempotent functions, so running it on every CDC worker
//! replica is safe.

use std::sync::Arc;
use std::time::Duration;

use liquidity_core::TenantId;
use liquidity_core::reports;
use tokio_util::sync::CancellationToken;

use crate::handler::{CdcDeps, CdcError, Outcome, finish_report, start_fetch};

/// How the reconciler runs.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilerSettings {
    /// Time between passes.
    pub interval: Duration,
    /// An in-progress content unchecked for this long is considered orphaned. Must exceed the
    /// poll interval of the workflow worker.
    pub stale_after: Duration,
    /// Most rows looked at per tenant and pass.
    pub batch: i64,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Stale contents whose workflow was (re)started or found running.
    pub workflows_ensured: usize,
    /// Reports this pass finished.
    pub reports_finished: usize,
    /// Tenants whose pass failed (logged).
    pub failed_tenants: usize,
}

/// One pass over every tenant.
pub async fn reconcile_once(deps: &CdcDeps, settings: &ReconcilerSettings) -> ReconcileReport {
    let mut report = ReconcileReport::default();
    let tenants: Vec<TenantId> = deps.registry.tenants().map(|t| t.id).collect();
    for tenant_id in tenants {
        if let Err(e) = reconcile_tenant(deps, tenant_id, settings, &mut report).await {
            report.failed_tenants += 1;
            tracing::warn!(%tenant_id, error.cause_chain = ?e, "reconciliation of a tenant failed");
        }
    }
    report
}

async fn reconcile_tenant(
    deps: &CdcDeps,
    tenant_id: TenantId,
    settings: &ReconcilerSettings,
    report: &mut ReconcileReport,
) -> Result<(), CdcError> {
    let pool = deps.registry.pool(tenant_id).await.map_err(anyhow::Error::from)?;
    let stale = reports::stale_in_progress_contents(pool, settings.stale_after, settings.batch)
        .await
        .map_err(anyhow::Error::from)?;
    for content in &stale {
        if start_fetch(deps, tenant_id, content).await? == Outcome::WorkflowAlreadyClosed {
            tracing::warn!(%tenant_id, content_id = %content.id, "content in progress but its workflow completed");
        }
        report.workflows_ensured += 1;
    }
    let done = reports::unfinished_done_reports(pool, settings.batch)
        .await
        .map_err(anyhow::Error::from)?;
    for report_id in done {
        if let Outcome::ReportFinished(_) = finish_report(deps, tenant_id, report_id).await? {
            report.reports_finished += 1;
        }
    }
    Ok(())
}

/// Runs [`reconcile_once`] every interval until `shutdown` is cancelled.
pub async fn run_reconciler(deps: Arc<CdcDeps>, settings: ReconcilerSettings, shutdown: CancellationToken) {
    tracing::info!(interval = ?settings.interval, stale_after = ?settings.stale_after, "reconciler starting");
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let report = reconcile_once(&deps, &settings).await;
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciliation pass repaired work");
        }
    }
    tracing::info!("reconciler stopped");
}
