//! The poll loop end to end: workflow -> activity -> source -> tenant database.

use std::time::Duration;

use liquidity_core::reports::{self, ReportStatus};
use liquidity_workflows::poll_loop::{FIRST_HEARTBEAT_SPREAD, HEARTBEAT_EVERY};
use liquidity_workflows::worker::SHUTDOWN_GRACE;
use liquidity_workflows::workflows::POLL_SOURCE_HEARTBEAT_TIMEOUT;
use liquidity_workflows::{FetchOutcome, FetchPolicy};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::helpers::{spawn_app, test_policy};
use crate::source::{Behaviour, Seen, document};
use liquidity_test_support::wait_until;

#[tokio::test]
async fn a_content_completes_with_the_document_of_its_source() {
    // Arrange
    let app = spawn_app(Behaviour::CompleteAfter { polls: 3 }, test_policy()).await;
    let content = app.new_content().await;

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    assert_eq!(outcome, FetchOutcome::Completed);
    let row = app.content(content.id).await;
    assert_eq!(row.status, ReportStatus::Completed);
    let data: serde_json::Value = serde_json::from_str(row.data.as_deref().unwrap()).unwrap();
    assert_eq!(data, document(&format!("job-{}", content.id)));
    assert!(row.last_run_at > content.last_run_at, "last_run_at advanced");
    assert_eq!(
        app.source.seen(),
        Seen {
            requests: 4,
            submits: 1,
            status_checks: 3
        }
    );
    app.stop().await;
}

#[tokio::test]
async fn a_source_answering_malformed_bodies_fails_the_content_after_max_bad_answers() {
    // Arrange: two bad answers tolerated, the third fails the content
    let app = spawn_app(Behaviour::Garbage, test_policy()).await;
    let content = app.new_content().await;

    // Act
    let reason = app.fetch_failing(&content).await;

    // Assert
    assert!(reason.contains("3 bad answers"), "{reason}");
    assert!(reason.contains("malformed body"), "{reason}");
    assert_eq!(app.source.seen().requests, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_streak_of_server_errors_then_success_still_completes() {
    // Arrange: three 500s (backoff 200, 400, 800 ms), then completed on the second check
    let app = spawn_app(Behaviour::FailThenComplete { failures: 3, polls: 2 }, test_policy()).await;
    let content = app.new_content().await;

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    assert_eq!(outcome, FetchOutcome::Completed);
    assert_eq!(app.content(content.id).await.status, ReportStatus::Completed);
    assert_eq!(
        app.source.seen(),
        Seen {
            requests: 6,
            submits: 1,
            status_checks: 2
        }
    );
    app.stop().await;
}

#[tokio::test]
async fn a_content_still_in_progress_at_its_deadline_is_marked_failed() {
    // Arrange
    let policy = FetchPolicy {
        deadline: Duration::from_secs(1),
        ..test_policy()
    };
    let app = spawn_app(Behaviour::Never, policy).await;
    let content = app.new_content().await;

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    let row = app.content(content.id).await;
    assert_eq!(row.status, ReportStatus::Failed);
    assert_eq!(
        row.data.as_deref(),
        Some("deadline of 1s exceeded without the source completing")
    );
    assert_eq!(
        outcome,
        FetchOutcome::Failed {
            reason: row.data.unwrap()
        }
    );
    // fail_content sets last_run_at: the content was not failed before its deadline.
    assert!(row.last_run_at - row.created_at >= chrono::TimeDelta::seconds(1));
    app.stop().await;
}

#[tokio::test]
async fn a_retried_activity_for_an_already_completed_content_changes_nothing() {
    // Arrange: the content was completed by an earlier attempt that crashed before reporting
    let app = spawn_app(Behaviour::CompleteAfter { polls: 1 }, test_policy()).await;
    let content = app.new_content().await;
    assert!(
        reports::complete_content(&app.pool, content.id, r#"{"first":true}"#)
            .await
            .unwrap()
    );
    let before = app.content(content.id).await;

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    assert_eq!(outcome, FetchOutcome::AlreadyFinished);
    assert_eq!(app.content(content.id).await, before);
    assert_eq!(app.source.seen().requests, 0, "the source was not asked again");
    app.stop().await;
}

#[tokio::test]
async fn a_poll_loop_sends_its_first_heartbeat_about_one_period_after_its_start_within_the_timeout() {
    // Arrange: a source that answers "in progress" until told otherwise, polled every 200 ms
    let app = spawn_app(Behaviour::OnSignal, test_policy()).await;
    let content = app.new_content().await;
    app.start(&content).await;
    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "a few status checks", || async {
        app.source.seen().status_checks >= 3
    })
    .await;

    // Act
    let early = app.pending_poll(&content).await;
    let early_elapsed = started.elapsed();
    wait_until(
        HEARTBEAT_EVERY + Duration::from_secs(20),
        "a first heartbeat",
        || async { matches!(app.pending_poll(&content).await, Some((_, Some(_)))) },
    )
    .await;
    // The next heartbeat is not due for another 0.8 x the heartbeat timeout.
    let later = app.pending_poll(&content).await;

    // Assert: polling for seconds without a heartbeat (each is a write on Temporal), then the
    // first one sent by the loop (the activity itself returned long ago) one period after its
    // start, inside the heartbeat timeout, in one attempt
    assert!(
        early_elapsed < HEARTBEAT_EVERY - FIRST_HEARTBEAT_SPREAD,
        "the first check ran late: {early_elapsed:?}"
    );
    assert_eq!(early, Some((1, None)), "no heartbeat yet");
    let (attempt, heartbeat_after) = later.unwrap();
    let heartbeat_after = heartbeat_after.unwrap();
    assert_eq!(attempt, 1);
    let earliest = (HEARTBEAT_EVERY - FIRST_HEARTBEAT_SPREAD).as_secs() as i64;
    assert!(
        (earliest..POLL_SOURCE_HEARTBEAT_TIMEOUT.as_secs() as i64).contains(&heartbeat_after),
        "first heartbeat {heartbeat_after} s after the attempt's start"
    );
    app.source.complete();
    assert_eq!(app.result(&content).await, FetchOutcome::Completed);
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_workflow_cancels_its_polling_activity() {
    // Arrange: a content whose source never completes, being polled
    let app = spawn_app(Behaviour::Never, test_policy()).await;
    let content = app.new_content().await;
    app.start(&content).await;
    wait_until(Duration::from_secs(30), "a first status check", || async {
        app.source.seen().status_checks >= 1
    })
    .await;

    // Act
    app.cancel(&content).await;

    // Assert: the workflow asked for its activity's cancellation (it runs with a cancellation
    // token of its own, see `FetchReportContentWorkflow::run`) and ended cancelled
    wait_until(Duration::from_secs(30), "the workflow's cancellation", || async {
        app.history(&content)
            .await
            .iter()
            .any(|event| matches!(event, Attributes::WorkflowExecutionCanceledEventAttributes(_)))
    })
    .await;
    let history = app.history(&content).await;
    assert!(
        history
            .iter()
            .any(|event| matches!(event, Attributes::ActivityTaskCancelRequestedEventAttributes(_))),
        "{history:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_poll_loop_cut_by_a_worker_shutdown_resumes_on_another_worker_with_its_job() {
    // Arrange: a fetch in progress on the first worker
    let mut app = spawn_app(Behaviour::OnSignal, test_policy()).await;
    let content = app.new_content().await;
    app.start(&content).await;
    wait_until(Duration::from_secs(30), "a first status check", || async {
        app.source.seen().status_checks >= 1
    })
    .await;

    // Act: drain the worker mid-fetch, then start another one
    let drained_in = app.stop_worker().await;
    let checks_before_restart = app.source.seen().status_checks;
    app.restart_worker();
    app.source.complete();
    let outcome = app.result(&content).await;

    // Assert
    assert_eq!(outcome, FetchOutcome::Completed);
    assert!(checks_before_restart >= 1);
    assert!(
        drained_in >= SHUTDOWN_GRACE,
        "the loop kept polling during the grace period"
    );
    assert_eq!(
        app.source.seen().submits,
        1,
        "the retry resumed the job from the heartbeat details"
    );
    assert_eq!(app.content(content.id).await.status, ReportStatus::Completed);
    eprintln!("worker with a poll loop in flight drained in {drained_in:?}");
    app.stop().await;
}
