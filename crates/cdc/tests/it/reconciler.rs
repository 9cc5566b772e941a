use std::sync::Arc;
use std::time::Duration;

use liquidity_cdc::CdcDeps;
use liquidity_cdc::reconciler::{ReconcileReport, Reconciler, ReconcilerSettings};
use liquidity_core::reports::{self, ReportStatus};
use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use liquidity_workflows::starter::WorkflowState;
use tokio_util::sync::CancellationToken;

use crate::helpers::harness;

fn settings() -> ReconcilerSettings {
    ReconcilerSettings {
        interval: Duration::from_secs(1),
        stale_after: Duration::from_secs(1),
        deadline: Duration::from_secs(3600),
        batch: 100,
        checks_per_second: 1000,
    }
}

async fn age_contents(pool: &sqlx::PgPool, report_id: liquidity_core::ReportId, idle: &str) {
    sqlx::query("UPDATE report_contents SET last_run_at = now() - $2::interval WHERE report_id = $1")
        .bind(report_id)
        .bind(idle)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_reconciler_starts_orphaned_contents_and_finishes_done_reports() {
    // Arrange: tenant 1 has a report whose CDC messages were lost (contents stale, no
    // workflow); tenant 2 has a report whose contents all finished but finished_at is null
    let h = harness().await;
    let (orphan, orphan_contents) = h.report(0).await;
    let pool0 = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    age_contents(pool0, orphan, "1 minute").await;
    let (done, done_contents) = h.report(1).await;
    let pool1 = h.deps.registry.pool(h.tenant(1)).await.unwrap();
    for content in &done_contents {
        reports::complete_content(pool1, content.id, "{}").await.unwrap();
    }
    for content in &orphan_contents {
        assert_eq!(h.workflow_state(0, content).await, WorkflowState::NotFound);
    }
    let mut reconciler = Reconciler::new(h.deps.clone(), settings());

    // Act
    let first = reconciler.pass().await;
    let second = reconciler.pass().await;

    // Assert
    assert_eq!(
        first,
        ReconcileReport {
            restarted: 3,
            finished: 1,
            ..ReconcileReport::default()
        }
    );
    assert_eq!(
        second,
        ReconcileReport {
            still_running: 3,
            ..ReconcileReport::default()
        },
        "a running workflow is left alone and a report is finished once"
    );
    for content in &orphan_contents {
        assert_eq!(
            h.workflow_state(0, content).await,
            WorkflowState::Running,
            "{}",
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
async fn a_content_left_in_progress_by_a_closed_workflow_gets_a_new_run() {
    // Arrange: the content's workflow ran and was terminated, the content is still in progress
    let h = harness().await;
    let (report_id, contents) = h.report(0).await;
    let liquidity_workflows::StartOutcome::Started { run_id: first_run } =
        h.deps.starter.ensure_started(h.tenant(0), &contents[0]).await.unwrap()
    else {
        panic!("started")
    };
    let client = liquidity_workflows::connect(&h.temporal).await.unwrap();
    client
        .get_workflow_handle::<liquidity_workflows::FetchReportContentWorkflow>(liquidity_workflows::workflow_id(
            h.tenant(0),
            contents[0].id,
        ))
        .terminate(Default::default())
        .await
        .unwrap();
    assert!(matches!(
        h.workflow_state(0, &contents[0]).await,
        WorkflowState::Closed(_)
    ));
    let pool = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    age_contents(pool, report_id, "1 minute").await;
    let mut reconciler = Reconciler::new(h.deps.clone(), settings());

    // Act
    let report = reconciler.pass().await;

    // Assert: a new run, of the three contents (two had none at all)
    assert_eq!(report.restarted, 3, "{report:?}");
    assert_eq!(h.workflow_state(0, &contents[0]).await, WorkflowState::Running);
    let client = liquidity_workflows::connect(&h.temporal).await.unwrap();
    let description = client
        .get_workflow_handle::<liquidity_workflows::FetchReportContentWorkflow>(liquidity_workflows::workflow_id(
            h.tenant(0),
            contents[0].id,
        ))
        .describe(Default::default())
        .await
        .unwrap();
    assert_ne!(description.run_id(), first_run);
}

#[tokio::test]
async fn a_content_that_became_final_after_its_page_was_read_is_not_fetched_again() {
    // Arrange: three stale contents without workflows, checked one per second, so the second
    // and third checks come a second and two after the page was read
    let h = harness().await;
    let (report_id, mut contents) = h.report(0).await;
    contents.sort_by_key(|content| content.id);
    let pool = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    age_contents(pool, report_id, "1 minute").await;
    let mut reconciler = Reconciler::new(
        h.deps.clone(),
        ReconcilerSettings {
            checks_per_second: 1,
            ..settings()
        },
    );
    let pass = tokio::spawn(async move { reconciler.pass().await });

    // Act: once the first content was restarted, the two others complete, as their workflows
    // would have done between the page's read and their checks
    liquidity_test_support::wait_until(Duration::from_secs(10), "the first restart", || async {
        h.workflow_state(0, &contents[0]).await == WorkflowState::Running
    })
    .await;
    for content in &contents[1..] {
        assert!(reports::complete_content(pool, content.id, "{}").await.unwrap());
    }
    let report = pass.await.unwrap();

    // Assert: only the first was restarted; the completed ones got no new run
    assert_eq!(
        report,
        ReconcileReport {
            restarted: 1,
            ..ReconcileReport::default()
        }
    );
    for content in &contents[1..] {
        assert_eq!(
            h.workflow_state(0, content).await,
            WorkflowState::NotFound,
            "{}",
            content.id
        );
    }
}

#[tokio::test]
async fn stale_rows_that_cannot_be_repaired_do_not_starve_newer_orphans() {
    // Arrange: 3 contents stuck for 10 minutes on running workflows (nothing to repair; they
    // sort first by last_run_at), and 6 newer orphans without workflows; 3 rows per pass
    let h = harness().await;
    let pool = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    let (stuck, stuck_contents) = h.report(0).await;
    for content in &stuck_contents {
        h.deps.starter.ensure_started(h.tenant(0), content).await.unwrap();
    }
    age_contents(pool, stuck, "10 minutes").await;
    let mut orphans = Vec::new();
    for _ in 0..2 {
        let (report_id, contents) = h.report(0).await;
        age_contents(pool, report_id, "1 minute").await;
        orphans.extend(contents);
    }
    let mut reconciler = Reconciler::new(h.deps.clone(), ReconcilerSettings { batch: 3, ..settings() });

    // Act: enough passes to walk the 9 stale rows once, and one more
    let mut restarted = 0;
    for _ in 0..4 {
        restarted += reconciler.pass().await.restarted;
    }

    // Assert
    assert_eq!(restarted, orphans.len());
    for content in &orphans {
        assert_eq!(
            h.workflow_state(0, content).await,
            WorkflowState::Running,
            "{}",
            content.id
        );
    }
}

#[tokio::test]
async fn contents_past_the_deadline_are_failed_and_their_report_finished_without_any_workflow() {
    // Arrange: a report created two hours ago, no workflow ever ran; a fresh one
    let h = harness().await;
    let pool = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    let (late, late_contents) = h.report(0).await;
    sqlx::query("UPDATE report_contents SET created_at = now() - interval '2 hours' WHERE report_id = $1")
        .bind(late)
        .execute(pool)
        .await
        .unwrap();
    let (_fresh, fresh_contents) = h.report(0).await;
    let mut reconciler = Reconciler::new(
        h.deps.clone(),
        ReconcilerSettings {
            stale_after: Duration::from_secs(600),
            ..settings()
        },
    );

    // Act
    let report = reconciler.pass().await;

    // Assert
    assert_eq!(
        report,
        ReconcileReport {
            failed_past_deadline: 3,
            finished: 1,
            ..ReconcileReport::default()
        }
    );
    for content in &late_contents {
        let content = h.content(0, content).await;
        assert_eq!(content.status, ReportStatus::Failed);
        assert!(
            content
                .data
                .as_deref()
                .unwrap_or_default()
                .contains("deadline of 3600s exceeded"),
            "{:?}",
            content.data
        );
    }
    assert_eq!(h.content(0, &fresh_contents[0]).await.status, ReportStatus::InProgress);
    let finished: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT finished_at FROM report WHERE id = $1")
            .bind(late)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(finished.is_some());
}

#[tokio::test]
async fn the_reconciler_leaves_fresh_contents_to_cdc() {
    let h = harness().await;
    h.report(0).await;
    let report = Reconciler::new(
        h.deps.clone(),
        ReconcilerSettings {
            stale_after: Duration::from_secs(600),
            ..settings()
        },
    )
    .pass()
    .await;
    assert_eq!(report, ReconcileReport::default());
}

#[tokio::test]
async fn a_pass_blocked_on_an_unresponsive_database_stops_promptly_at_shutdown() {
    // Arrange: a tenant whose "database" accepts TCP connections and never answers, so a pass
    // waits for the pool's acquire timeout (5s)
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let config = serde_json::json!([{
        "id": liquidity_core::TenantId::new_random(), "name": "mute", "description": "never answers",
        "databaseUrl": format!("postgres://u:p@127.0.0.1:{port}/mute"), "maxConnections": 1,
    }]);
    let deps = Arc::new(CdcDeps {
        registry: Arc::new(TenantRegistry::new(
            parse_tenants_config(&config.to_string()).unwrap(),
            PoolSettings::default(),
        )),
        starter: h.deps.starter.clone(),
    });
    let shutdown = CancellationToken::new();
    let reconciler = tokio::spawn(Reconciler::new(deps, settings()).run(shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(5), accepted.recv())
        .await
        .expect("the pass connects to the tenant")
        .unwrap();

    // Act
    let cancelled_at = std::time::Instant::now();
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(1), reconciler).await;

    // Assert
    assert!(
        stopped.is_ok(),
        "the reconciler still runs {:?} after shutdown",
        cancelled_at.elapsed()
    );
}
