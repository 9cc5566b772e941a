//! Self-healing of the poll loop (issue 6): bounded bodies, no redirects, the deadline from the
//! row, heartbeats during long passes, and a worker that waits for Temporal at boot.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use liquidity_core::reports::ReportStatus;
use liquidity_sources::SourceBehaviour;
use liquidity_test_support::{free_port, wait_until};
use liquidity_workflows::source_client::BadAnswer;
use liquidity_workflows::workflows::POLL_SOURCE_HEARTBEAT_TIMEOUT;
use liquidity_workflows::{FetchOutcome, FetchPolicy, SourceClient, SourceError, SourcesConfig, Url};
use tokio::net::TcpListener;

use crate::helpers::{
    LogCapture, WorkerThread, spawn_app, spawn_app_with, temporal_address, test_policy, test_settings,
};
use crate::simulator::{TestSimulator, healthy};
use crate::source::Behaviour;

#[tokio::test]
async fn a_source_answering_documents_above_source_max_body_fails_the_content_after_max_bad_answers() {
    // Arrange: the simulator pads every document past 1 MiB; SOURCE_MAX_BODY is 1 MiB
    let simulator = TestSimulator::start(SourceBehaviour {
        document_padding: 1024 * 1024 + 1,
        ..healthy()
    })
    .await;
    let policy = FetchPolicy {
        max_body: 1024 * 1024,
        ..test_policy()
    };
    let app = spawn_app_with(Behaviour::Never, policy, Some(simulator.sources_config().to_owned())).await;
    let content = app.new_content().await;

    // Act
    let reason = app.fetch_failing(&content).await;

    // Assert: failed with a clear reason at answer max + 1, no document stored
    assert!(reason.contains("3 bad answers (at most 2 tolerated)"), "{reason}");
    assert!(
        reason.contains("a body of more than 1048576 bytes (SOURCE_MAX_BODY)"),
        "{reason}"
    );
    assert_eq!(simulator.source_1().posts, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_document_just_under_source_max_body_is_stored() {
    // Arrange: the same padding, a limit large enough for it
    let simulator = TestSimulator::start(SourceBehaviour {
        document_padding: 1024 * 1024 + 1,
        ..healthy()
    })
    .await;
    let policy = FetchPolicy {
        max_body: 2 * 1024 * 1024,
        ..test_policy()
    };
    let app = spawn_app_with(Behaviour::Never, policy, Some(simulator.sources_config().to_owned())).await;
    let content = app.new_content().await;

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    assert_eq!(outcome, FetchOutcome::Completed);
    let data: serde_json::Value = serde_json::from_str(&app.content(content.id).await.data.unwrap()).unwrap();
    assert_eq!(data["padding"].as_str().map(str::len), Some(1024 * 1024 + 1));
    app.stop().await;
}

#[tokio::test]
async fn a_source_redirecting_to_a_healthy_source_is_not_followed_and_the_content_fails_saying_so() {
    // Arrange: source_1 redirects to another simulator's healthy source_1, which would complete
    // the content at once if the redirect were followed
    let target = TestSimulator::start(healthy()).await;
    let redirecting = TestSimulator::start(SourceBehaviour {
        redirect_to: Some(target.url("source_1")),
        ..healthy()
    })
    .await;
    let app = spawn_app_with(
        Behaviour::Never,
        test_policy(),
        Some(redirecting.sources_config().to_owned()),
    )
    .await;
    let content = app.new_content().await;

    // Act
    let reason = app.fetch_failing(&content).await;

    // Assert
    assert!(reason.contains("3 bad answers"), "{reason}");
    assert!(reason.contains("HTTP 307 Temporary Redirect"), "{reason}");
    assert!(reason.contains("not followed"), "{reason}");
    assert!(reason.contains(&format!("{}/jobs", target.url("source_1"))), "{reason}");
    assert_eq!(redirecting.source_1().posts, 3);
    assert_eq!(target.source_1().posts, 0, "the redirect target was never called");
    app.stop().await;
}

#[tokio::test]
async fn an_endless_body_is_cut_at_source_max_body_instead_of_being_read_until_the_timeout() {
    // Arrange: a source streaming spaces for ever, without a Content-Length
    let router = Router::new().route(
        "/jobs",
        post(|| async {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            Body::from_stream(futures::stream::repeat_with(move || {
                Ok::<_, std::convert::Infallible>(chunk.clone())
            }))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let config =
        SourcesConfig::parse(&serde_json::json!({ "source_1": url, "source_2": url, "source_3": url }).to_string())
            .unwrap();
    let http_timeout = Duration::from_secs(10);
    let client = SourceClient::new(config, http_timeout, 1024 * 1024).unwrap();
    let request = liquidity_core::sources::JobRequest {
        tenant_id: liquidity_core::TenantId::new_random(),
        report_id: liquidity_core::ReportId::new_random(),
        content_id: liquidity_core::ReportContentId::new_random(),
    };

    // Act
    let started = Instant::now();
    let error = client.submit("source_1", &request).await.unwrap_err();

    // Assert: a bad answer (buffering the whole body would end in a transient timeout)
    assert!(
        matches!(error, SourceError::BadAnswer(BadAnswer::TooLarge { limit: 1_048_576 })),
        "{error}"
    );
    assert!(started.elapsed() < http_timeout, "cut at the limit, not at the timeout");
}

#[tokio::test]
async fn a_content_older_than_its_deadline_is_failed_without_calling_the_source_when_its_workflow_starts_late() {
    // Arrange: a content created two hours ago (its workflow lost, restarted by the
    // reconciler), a deadline of one hour, a source that would complete it at once
    let app = spawn_app(Behaviour::CompleteAfter { polls: 1 }, test_policy()).await;
    let content = app.new_content().await;
    sqlx::query("UPDATE report_contents SET created_at = created_at - interval '2 hours' WHERE id = $1")
        .bind(content.id)
        .execute(&app.pool)
        .await
        .unwrap();

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    let reason = "deadline of 3600s exceeded without the source completing".to_owned();
    assert_eq!(outcome, FetchOutcome::Failed { reason: reason.clone() });
    let row = app.content(content.id).await;
    assert_eq!((row.status, row.data), (ReportStatus::Failed, Some(reason)));
    assert_eq!(app.source.seen().requests, 0, "the source was not called");
    app.stop().await;
}

#[tokio::test]
async fn a_pass_longer_than_the_heartbeat_timeout_stays_one_attempt_and_submits_once() {
    // Arrange: every answer of the source takes 2 s more than the heartbeat timeout.
    // The HTTP timeout is raised past the production cap (20 s) so that the call alone is
    // that long; without heartbeats during the pass, Temporal would time the attempt out at
    // the heartbeat timeout and start a second, overlapping one, which submits again.
    let simulator = TestSimulator::start(SourceBehaviour {
        latency: POLL_SOURCE_HEARTBEAT_TIMEOUT + Duration::from_secs(2),
        ..healthy()
    })
    .await;
    let policy = FetchPolicy {
        http_timeout: POLL_SOURCE_HEARTBEAT_TIMEOUT + Duration::from_secs(10),
        ..test_policy()
    };
    let app = spawn_app_with(Behaviour::Never, policy, Some(simulator.sources_config().to_owned())).await;
    let content = app.new_content().await;

    // Act
    let outcome = app.fetch(&content).await;

    // Assert
    assert_eq!(outcome, FetchOutcome::Completed);
    let (started_attempts, timeouts) = app.activity_attempts(&content).await;
    assert_eq!(started_attempts, [1], "one attempt, never retried");
    assert_eq!(timeouts, 0);
    assert_eq!(simulator.source_1().posts, 1, "submitted once: no overlapping attempt");
    app.stop().await;
}

/// A tenant registry whose database is never reached (these workers get no activity).
const UNUSED_TENANTS: &str =
    r#"[{"id":"0b6f1b2e-8d1c-4f57-9a44-3f2f0e1d5c11","name":"t1","databaseUrl":"postgres://u:p@127.0.0.1:1/t1"}]"#;

/// Accepts connections on `listener` and pipes each to `target`: Temporal appearing on the
/// listener's port.
fn forward(listener: TcpListener, target: String) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test]
async fn a_worker_started_before_temporal_logs_its_wait_keeps_running_and_polls_once_temporal_appears() {
    // Arrange: nothing listens on the worker's Temporal port yet
    let port = free_port();
    let settings = test_settings(Url::parse(&format!("http://127.0.0.1:{port}")).unwrap());
    let logs = LogCapture::default();
    let sources =
        r#"{"source_1":"http://127.0.0.1:1","source_2":"http://127.0.0.1:1","source_3":"http://127.0.0.1:1"}"#;

    // Act
    let worker = WorkerThread::spawn(&settings, UNUSED_TENANTS, sources, test_policy(), Some(logs.clone()));
    wait_until(Duration::from_secs(20), "two logged connection attempts", || async {
        logs.count("waiting for Temporal") >= 2
    })
    .await;
    let running_while_waiting = !worker.is_finished();
    let real = temporal_address();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    forward(
        listener,
        format!("{}:{}", real.host_str().unwrap(), real.port().unwrap()),
    );
    wait_until(Duration::from_secs(60), "the worker polling", || async {
        logs.count("workflow worker polling") == 1
    })
    .await;

    // Assert
    assert!(running_while_waiting, "the worker kept running while Temporal was away");
    let text = logs.text();
    assert!(text.contains("attempt=1") && text.contains("attempt=2"), "{text}");
    assert!(text.contains("retry_in="), "{text}");
    assert!(!worker.is_finished());
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_waiting_for_temporal_stops_at_once_on_shutdown() {
    // Arrange: a worker waiting for a Temporal that never comes
    let settings = test_settings(Url::parse(&format!("http://127.0.0.1:{}", free_port())).unwrap());
    let logs = LogCapture::default();
    let sources =
        r#"{"source_1":"http://127.0.0.1:1","source_2":"http://127.0.0.1:1","source_3":"http://127.0.0.1:1"}"#;
    let worker = WorkerThread::spawn(&settings, UNUSED_TENANTS, sources, test_policy(), Some(logs.clone()));
    wait_until(Duration::from_secs(20), "a logged connection attempt", || async {
        logs.count("waiting for Temporal") >= 1
    })
    .await;

    // Act
    let started = Instant::now();
    worker.stop().await;

    // Assert: returned Ok (stop() checks it) well before the next backoff could end twice over
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(logs.text().contains("shut down while waiting for Temporal"));
}
