use std::time::Duration;

use liquidity_cdc::reconciler::{ReconcileReport, ReconcilerSettings, reconcile_once};
use liquidity_core::reports;

use crate::helpers::harness;

fn settings() -> ReconcilerSettings {
    ReconcilerSettings {
        interval: Duration::from_secs(1),
        stale_after: Duration::from_secs(1),
        batch: 100,
    }
}

#[tokio::test]
async fn the_reconciler_starts_orphaned_contents_and_finishes_done_reports() {
    // Arrange: tenant 1 has a report whose CDC messages were lost (contents stale, no
    // workflow); tenant 2 has a report whose contents all finished but finished_at is null
    let h = harness().await;
    let (_orphan, orphan_contents) = h.report(0).await;
    let pool0 = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    sqlx::query("UPDATE report_contents SET last_run_at = now() - interval '1 minute'")
        .execute(pool0)
        .await
        .unwrap();
    let (done, done_contents) = h.report(1).await;
    let pool1 = h.deps.registry.pool(h.tenant(1)).await.unwrap();
    for content in &done_contents {
        reports::complete_content(pool1, content.id, "{}").await.unwrap();
    }

    // Act
    let first = reconcile_once(&h.deps, &settings()).await;
    let second = reconcile_once(&h.deps, &settings()).await;

    // Assert
    assert_eq!(
        first,
        ReconcileReport {
            workflows_ensured: 3,
            reports_finished: 1,
            failed_tenants: 0
        }
    );
    assert_eq!(second.reports_finished, 0, "a report is finished once");
    for content in &orphan_contents {
        let again = h.deps.starter.ensure_started(h.tenant(0), content).await.unwrap();
        assert!(
            matches!(again, liquidity_workflows::StartOutcome::Started { .. }),
            "workflow of {} is running",
            content.id
        );
    }
    let finished: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT finished_at FROM report WHERE id = $1")
            .bind(done)
            .fetch_one(pool1)
            .await
            .unwrap();
    assert!(finished.is_some());
}

#[tokio::test]
async fn the_reconciler_leaves_fresh_contents_to_cdc() {
    let h = harness().await;
    h.report(0).await;
    let report = reconcile_once(
        &h.deps,
        &ReconcilerSettings {
            stale_after: Duration::from_secs(600),
            ..settings()
        },
    )
    .await;
    assert_eq!(report, ReconcileReport::default());
}
