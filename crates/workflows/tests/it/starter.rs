//! `WorkflowStarter::ensure_started`: one workflow per content, whatever the number of starts.

use liquidity_core::reports::ReportStatus;
use liquidity_workflows::{FetchOutcome, StartOutcome};

use crate::helpers::{spawn_app, test_policy};
use crate::source::Behaviour;

#[tokio::test]
async fn starting_a_content_twice_runs_one_workflow_which_is_closed_after_completion() {
    // Arrange
    let app = spawn_app(Behaviour::CompleteAfter { polls: 3 }, test_policy()).await;
    let content = app.new_content().await;

    // Act
    let first = app.start(&content).await;
    let second = app.start(&content).await;
    let outcome = app.result(&content).await;
    let after_completion = app.start(&content).await;

    // Assert
    let StartOutcome::Started { run_id } = &first else {
        panic!("first start: {first:?}");
    };
    assert!(!run_id.is_empty());
    assert_eq!(second, first, "the second start returns the running workflow");
    assert_eq!(outcome, FetchOutcome::Completed);
    assert_eq!(after_completion, StartOutcome::AlreadyClosed);
    assert_eq!(app.source.seen().submits, 1, "one workflow fetched the content");
    assert_eq!(app.content(content.id).await.status, ReportStatus::Completed);
    let stopped_in = app.stop().await;
    eprintln!("worker drained in {stopped_in:?}");
}
