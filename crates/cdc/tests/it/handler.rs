use liquidity_cdc::handler::PoisonError;
use liquidity_cdc::{CdcError, Outcome, handle_message};
use liquidity_core::TenantId;
use liquidity_core::reports;

use crate::helpers::{event, harness, no_attributes};

#[tokio::test]
async fn an_insert_starts_one_workflow_and_a_redelivered_insert_finds_the_same_run() {
    // Arrange
    let h = harness().await;
    let (_, contents) = h.report(0).await;
    let message = event(h.tenant(0), "report_contents", "c", None, Some(&contents[0]));

    // Act
    let first = handle_message(&h.deps, &message, &no_attributes()).await.unwrap();
    let again = handle_message(&h.deps, &message, &no_attributes()).await.unwrap();
    let snapshot = event(h.tenant(0), "report_contents", "r", None, Some(&contents[0]));
    let from_snapshot = handle_message(&h.deps, &snapshot, &no_attributes()).await.unwrap();

    // Assert
    let Outcome::WorkflowRunning { run_id } = first else {
        panic!("{first:?}")
    };
    assert_eq!(again, Outcome::WorkflowRunning { run_id: run_id.clone() });
    assert_eq!(from_snapshot, Outcome::WorkflowRunning { run_id });
}

#[tokio::test]
async fn a_snapshot_of_final_contents_starts_nothing_and_finishes_their_report() {
    // Arrange: a report whose contents all completed while no change was decoded (a lost
    // replication slot), then re-snapshotted
    let h = harness().await;
    let (report_id, contents) = h.report(0).await;
    let pool = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    let mut snapshots = Vec::new();
    for content in &contents {
        reports::complete_content(pool, content.id, "{}").await.unwrap();
        snapshots.push(event(
            h.tenant(0),
            "report_contents",
            "r",
            None,
            Some(&h.content(0, content).await),
        ));
    }

    // Act
    let mut outcomes = Vec::new();
    for message in &snapshots {
        outcomes.push(handle_message(&h.deps, message, &no_attributes()).await.unwrap());
    }

    // Assert: the first read finished the report, the others found it finished; no workflow
    assert_eq!(outcomes[0], Outcome::ReportFinished(report_id));
    assert_eq!(
        outcomes[1..],
        [
            Outcome::ReportNotFinished(report_id),
            Outcome::ReportNotFinished(report_id)
        ]
    );
    for content in &contents {
        assert!(
            !h.workflow_exists(0, content).await,
            "a workflow was started for {}",
            content.id
        );
    }
}

#[tokio::test]
async fn the_update_of_the_last_content_finishes_the_report_exactly_once() {
    // Arrange: two contents completed, the third completes now
    let h = harness().await;
    let (report_id, contents) = h.report(1).await;
    let pool = h.deps.registry.pool(h.tenant(1)).await.unwrap();
    let mut updates = Vec::new();
    for content in &contents {
        reports::complete_content(pool, content.id, "{}").await.unwrap();
        let after = h.content(1, content).await;
        updates.push(event(h.tenant(1), "report_contents", "u", Some(content), Some(&after)));
    }

    // Act: events in order, then the last one redelivered
    let mut outcomes = Vec::new();
    for message in updates.iter().chain(updates.last()) {
        outcomes.push(handle_message(&h.deps, message, &no_attributes()).await.unwrap());
    }

    // Assert: every event saw the report done (all three completed before the first event was
    // handled) but only the first one set finished_at
    assert_eq!(outcomes[0], Outcome::ReportFinished(report_id));
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| *o == Outcome::ReportNotFinished(report_id)),
        "{outcomes:?}"
    );
    let finished: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT finished_at FROM report WHERE id = $1")
            .bind(report_id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(finished.is_some());
}

#[tokio::test]
async fn a_content_finishing_before_the_others_does_not_finish_the_report() {
    // Arrange
    let h = harness().await;
    let (report_id, contents) = h.report(0).await;
    let pool = h.deps.registry.pool(h.tenant(0)).await.unwrap();
    reports::fail_content(pool, contents[0].id, "broken").await.unwrap();
    let after = h.content(0, &contents[0]).await;

    // Act
    let outcome = handle_message(
        &h.deps,
        &event(h.tenant(0), "report_contents", "u", Some(&contents[0]), Some(&after)),
        &no_attributes(),
    )
    .await
    .unwrap();

    // Assert
    assert_eq!(outcome, Outcome::ReportNotFinished(report_id));
}

#[tokio::test]
async fn an_update_without_a_status_transition_is_ignored() {
    let h = harness().await;
    let (_, contents) = h.report(0).await;
    let message = event(
        h.tenant(0),
        "report_contents",
        "u",
        Some(&contents[0]),
        Some(&contents[0]),
    );
    let outcome = handle_message(&h.deps, &message, &no_attributes()).await.unwrap();
    assert!(matches!(outcome, Outcome::Ignored(_)), "{outcome:?}");
}

#[tokio::test]
async fn events_of_unknown_tenants_unknown_tables_or_garbage_are_poison() {
    // Arrange
    let h = harness().await;
    let (_, contents) = h.report(0).await;
    let stranger = event(TenantId::new_random(), "report_contents", "c", None, Some(&contents[0]));
    let other_table = event(h.tenant(0), "report", "c", None, None);

    // Act
    let results = [
        handle_message(&h.deps, &stranger, &no_attributes()).await,
        handle_message(&h.deps, &other_table, &no_attributes()).await,
        handle_message(&h.deps, b"{\"op\":", &no_attributes()).await,
    ];

    // Assert
    assert!(
        matches!(results[0], Err(CdcError::Poison(PoisonError::UnknownTenant(_)))),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(results[1], Err(CdcError::Poison(PoisonError::UnexpectedTable(_)))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(CdcError::Poison(PoisonError::Malformed(_)))),
        "{:?}",
        results[2]
    );
}

#[tokio::test]
async fn a_start_that_temporal_refuses_is_rejected_not_transient() {
    // Arrange: a starter on a namespace Temporal does not have
    let h = harness().await;
    let (_, contents) = h.report(0).await;
    let missing = liquidity_workflows::TemporalSettings {
        namespace: format!("lqdty-missing-{}", uuid::Uuid::new_v4().simple()),
        ..h.temporal.clone()
    };
    let client = liquidity_workflows::connect(&missing).await.unwrap();
    let deps = liquidity_cdc::CdcDeps {
        registry: h.deps.registry.clone(),
        starter: liquidity_workflows::WorkflowStarter::new(client, missing.task_queue.clone()),
    };
    let message = event(h.tenant(0), "report_contents", "c", None, Some(&contents[0]));

    // Act
    let result = handle_message(&deps, &message, &no_attributes()).await;

    // Assert
    assert!(matches!(result, Err(CdcError::Rejected(_))), "{result:?}");
}
