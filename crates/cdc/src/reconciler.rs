//! Repairs what lost messages left undone, from the databases alone.
//!
//! The Pub/Sub emulator forgets in-flight messages when it restarts, and a CDC reset can skip
//! changes. Every interval, for every tenant, the reconciler
//! - fails each in-progress content older than the fetch deadline (`SOURCE_DEADLINE`, counted
//!   from the content's creation), whether a workflow is alive or not: the database, not a
//!   workflow, is what guarantees that every report ends;
//! - looks at a page of the in-progress contents that no workflow has checked for
//!   `stale_after` (a running workflow touches `last_run_at` at every poll, so only orphans and
//!   contents stuck on a failing source qualify) and starts a new run for each one whose
//!   workflow is closed or unknown to Temporal and whose row, read again after that answer, is
//!   still in progress (a running one is left alone, and so is one that completed since its page
//!   was read). The pages walk the stale set by id with a cursor kept across passes, so
//!   contents that stay stale (a source failing for hours) never hide the others;
//! - finishes each report whose contents are all final but whose `finished_at` is null.
//!
//! Its questions to Temporal (one describe per stale content, a start per repair) are spaced to
//! at most `checks_per_second`: the stale set is largest exactly when Temporal is saturated (a
//! burst whose first workflow tasks are still queued leaves every new content "stale"), and
//! a safety net must not take the server's capacity from the starts it is waiting for.
//!
//! Every repair is idempotent (the message handlers' functions, an update that only moves an
//! in-progress row, a start that never creates a second running run), so running it on every
//! CDC worker replica is safe. Each repair is counted by kind: a non-zero count means the CDC
//! path missed work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use liquidity_core::reports::{self, ReportContent, ReportStatus};
use liquidity_core::{ReportContentId, TenantId};
use liquidity_workflows::starter::WorkflowState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handler::{CdcDeps, CdcError, Outcome, finish_report};

/// How the reconciler runs.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilerSettings {
    /// Time between passes (`RECONCILE_INTERVAL`).
    pub interval: Duration,
    /// An in-progress content unchecked for this long is considered orphaned
    /// (`RECONCILE_STALE_AFTER`). Must exceed the poll interval of the workflow worker.
    pub stale_after: Duration,
    /// A content still in progress this long after its creation is failed (`SOURCE_DEADLINE`,
    /// the workflow worker's own deadline).
    pub deadline: Duration,
    /// Most rows looked at per tenant, kind and pass (`RECONCILE_BATCH`).
    pub batch: i64,
    /// Most stale contents checked against Temporal per second, over all tenants
    /// (`RECONCILE_CHECKS_PER_SECOND`).
    pub checks_per_second: u32,
}

/// What one pass did, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Repair: stale contents whose workflow was closed or unknown, started again.
    pub restarted: usize,
    /// Repair: contents still in progress past the deadline, failed.
    pub failed_past_deadline: usize,
    /// Repair: reports whose contents were all final, finished.
    pub finished: usize,
    /// Stale contents whose workflow is running: nothing to repair (a source failing, or a
    /// workflow worker down).
    pub still_running: usize,
    /// Stale contents whose restart Temporal rejected (logged); tried again next time round.
    pub unrepaired: usize,
    /// Tenants whose pass failed (logged).
    pub failed_tenants: usize,
}

impl ReconcileReport {
    /// Whether the pass repaired anything: work the CDC path should have done.
    pub fn repaired(&self) -> bool {
        self.restarted + self.failed_past_deadline + self.finished > 0
    }
}

/// The reconciler: settings plus, per tenant, where the walk over stale contents stands.
pub struct Reconciler {
    deps: Arc<CdcDeps>,
    settings: ReconcilerSettings,
    /// Last stale content looked at per tenant; the next pass goes on after it.
    cursors: HashMap<TenantId, ReportContentId>,
    /// Spaces the checks against Temporal, across passes.
    pace: Pace,
}

impl Reconciler {
    /// A reconciler that starts its walks from the beginning.
    pub fn new(deps: Arc<CdcDeps>, settings: ReconcilerSettings) -> Self {
        Self {
            deps,
            settings,
            cursors: HashMap::new(),
            pace: Pace::per_second(settings.checks_per_second),
        }
    }

    /// One pass over every tenant. A failing tenant is logged and counted; the others go on.
    pub async fn pass(&mut self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let tenants: Vec<TenantId> = self.deps.registry.tenants().map(|t| t.id).collect();
        for tenant_id in tenants {
            if let Err(e) = self.reconcile_tenant(tenant_id, &mut report).await {
                report.failed_tenants += 1;
                tracing::warn!(%tenant_id, error.cause_chain = ?e, error.message = %e, "reconciliation of a tenant failed");
            }
        }
        report
    }

    /// Runs a pass every interval until `shutdown` is cancelled, which also interrupts a pass
    /// (every repair is idempotent and the cursor is kept per row, so an interrupted pass
    /// loses nothing).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let settings = self.settings;
        tracing::info!(interval = ?settings.interval, stale_after = ?settings.stale_after, deadline = ?settings.deadline, batch = settings.batch, checks_per_second = settings.checks_per_second, "reconciler starting");
        let mut ticks = tokio::time::interval(settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let report = tokio::select! {
                () = shutdown.cancelled() => break,
                report = self.pass() => report,
            };
            crate::metrics::reconciled(&report);
            if report.repaired() {
                tracing::warn!(
                    restarted = report.restarted,
                    failed_past_deadline = report.failed_past_deadline,
                    finished = report.finished,
                    "the reconciler repaired work the CDC path missed"
                );
            }
            if report.unrepaired + report.failed_tenants > 0 || report.still_running > 0 {
                tracing::info!(?report, "reconciliation pass");
            }
        }
        tracing::info!("reconciler stopped");
    }

    async fn reconcile_tenant(&mut self, tenant_id: TenantId, report: &mut ReconcileReport) -> Result<(), CdcError> {
        self.fail_past_deadline(tenant_id, report).await?;
        self.restart_closed(tenant_id, report).await?;
        let pool = self.deps.registry.pool(tenant_id).await.map_err(anyhow::Error::from)?;
        let done = reports::unfinished_done_reports(pool, self.settings.batch)
            .await
            .map_err(anyhow::Error::from)?;
        for report_id in done {
            if let Outcome::ReportFinished(_) = finish_report(&self.deps, tenant_id, report_id).await? {
                report.finished += 1;
            }
        }
        Ok(())
    }

    async fn fail_past_deadline(&self, tenant_id: TenantId, report: &mut ReconcileReport) -> Result<(), CdcError> {
        let pool = self.deps.registry.pool(tenant_id).await.map_err(anyhow::Error::from)?;
        let deadline = self.settings.deadline;
        let late = reports::in_progress_contents_past_deadline(pool, deadline, self.settings.batch)
            .await
            .map_err(anyhow::Error::from)?;
        for content in late {
            // Worded like the workflow's own deadline failure, plus who enforced it.
            let reason = format!(
                "deadline of {}s exceeded without the source completing (enforced by the reconciler)",
                deadline.as_secs_f64()
            );
            if reports::fail_content(pool, content.id, &reason)
                .await
                .map_err(anyhow::Error::from)?
            {
                tracing::warn!(%tenant_id, content_id = %content.id, created_at = %content.created_at, "content failed past its deadline");
                report.failed_past_deadline += 1;
            }
        }
        Ok(())
    }

    async fn restart_closed(&mut self, tenant_id: TenantId, report: &mut ReconcileReport) -> Result<(), CdcError> {
        let pool = self.deps.registry.pool(tenant_id).await.map_err(anyhow::Error::from)?;
        let after = self.cursors.get(&tenant_id).copied();
        let page =
            reports::stale_in_progress_contents_page(pool, self.settings.stale_after, after, self.settings.batch)
                .await
                .map_err(anyhow::Error::from)?;
        let reached_end = i64::try_from(page.len()).unwrap_or(i64::MAX) < self.settings.batch;
        for content in &page {
            if let Some(wait) = self.pace.wait_before_next(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            match self.restart_if_closed(tenant_id, content).await {
                Ok(Check::Restarted) => report.restarted += 1,
                Ok(Check::Running) => report.still_running += 1,
                Ok(Check::Final) => {}
                Err(CdcError::Rejected(e)) => {
                    tracing::warn!(%tenant_id, content_id = %content.id, error.cause_chain = ?e, error.message = %e, "Temporal rejected the restart of a content");
                    report.unrepaired += 1;
                }
                // Temporal down: the next pass goes on from this content.
                Err(e) => return Err(e),
            }
            self.cursors.insert(tenant_id, content.id);
        }
        if reached_end {
            // The walk covered the whole stale set: the next pass starts over.
            self.cursors.remove(&tenant_id);
        }
        Ok(())
    }

    /// Starts a new run of the content's workflow if none is running and the content is still
    /// in progress.
    ///
    /// The row is read again after the workflow was seen closed: the page was read before, and
    /// a workflow that completed since then wrote the content's final status before it closed.
    /// Without this second read, a content that completed during the pass (checks are paced,
    /// so a page's last check comes seconds after its read) would be fetched a second time.
    async fn restart_if_closed(&self, tenant_id: TenantId, content: &ReportContent) -> Result<Check, CdcError> {
        let state = self.deps.starter.state(tenant_id, content.id).await?;
        if state == WorkflowState::Running {
            return Ok(Check::Running);
        }
        let pool = self.deps.registry.pool(tenant_id).await.map_err(anyhow::Error::from)?;
        let now = reports::find_content(pool, content.id)
            .await
            .map_err(anyhow::Error::from)?;
        let Some(content) = now.filter(|now| now.status == ReportStatus::InProgress) else {
            tracing::debug!(%tenant_id, content_id = %content.id, ?state, "content became final during the pass: nothing to repair");
            return Ok(Check::Final);
        };
        let outcome = self.deps.starter.ensure_running(tenant_id, &content).await?;
        tracing::warn!(%tenant_id, content_id = %content.id, ?state, ?outcome, "content in progress without a running workflow: started again");
        Ok(Check::Restarted)
    }
}

/// What the check of one stale content found.
enum Check {
    /// Its workflow is running: nothing to repair.
    Running,
    /// It is no longer in progress: its workflow ended it since the page was read.
    Final,
    /// Its workflow was closed or unknown: a new run was started.
    Restarted,
}

/// An even spacing of calls: at most one per `period`, without bursts after a quiet time (a
/// pass that found nothing stale does not save up checks for the next one).
#[derive(Debug)]
struct Pace {
    period: Duration,
    /// When the next call may go; `None` before the first.
    next: Option<Instant>,
}

impl Pace {
    fn per_second(calls: u32) -> Self {
        Self {
            period: Duration::from_secs(1) / calls.max(1),
            next: None,
        }
    }

    /// How long to wait, from `now`, before the next call; books that call's slot.
    fn wait_before_next(&mut self, now: Instant) -> Option<Duration> {
        let slot = self.next.map_or(now, |next| next.max(now));
        self.next = Some(slot + self.period);
        (slot > now).then(|| slot - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_spaced_by_the_period_and_a_quiet_time_saves_none_up() {
        let mut pace = Pace::per_second(4);
        let start = Instant::now();
        let ms = Duration::from_millis;

        // Back to back: the first goes at once, each next one a quarter second after the last.
        assert_eq!(pace.wait_before_next(start), None);
        assert_eq!(pace.wait_before_next(start), Some(ms(250)));
        assert_eq!(pace.wait_before_next(start + ms(100)), Some(ms(400)));
        // After a quiet second, one call goes at once and the next waits a full period again.
        let later = start + ms(2000);
        assert_eq!(pace.wait_before_next(later), None);
        assert_eq!(pace.wait_before_next(later), Some(ms(250)));
    }
}
