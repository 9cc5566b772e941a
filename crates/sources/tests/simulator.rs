//! The simulator over real HTTP: each test binds it on free ports and talks to it with reqwest.

use std::time::Duration;

use liquidity_core::ids::{ReportContentId, ReportId, TenantId};
use liquidity_core::sources::{JobRequest, JobState, JobStatus};
use liquidity_sources::{ConfigError, SimulatorConfig, SimulatorStats, SourceBehaviour};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running simulator; stopped gracefully (and checked to stop cleanly) by [`TestSimulator::stop`].
struct TestSimulator {
    /// Base URL by source name.
    urls: std::collections::BTreeMap<String, String>,
    stats: SimulatorStats,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), liquidity_sources::SimulatorError>>,
}

impl TestSimulator {
    fn url(&self, source: &str) -> &str {
        &self.urls[source]
    }

    async fn post(&self, source: &str, request: &JobRequest) -> reqwest::Response {
        self.client
            .post(format!("{}/jobs", self.url(source)))
            .json(request)
            .send()
            .await
            .expect("POST /jobs is answered")
    }

    async fn get(&self, source: &str, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/jobs/{id}", self.url(source)))
            .send()
            .await
            .expect("GET /jobs/{id} is answered")
    }

    async fn stop(self) {
        self.stop.send(()).expect("the simulator is running");
        self.task
            .await
            .expect("the simulator task does not panic")
            .expect("the simulator stops cleanly");
    }
}

async fn spawn_simulator(config: SimulatorConfig) -> TestSimulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let simulator = liquidity_sources::bind(&config).await.expect("the simulator binds");
    let urls = serde_json::from_str(&simulator.sources_config_json()).expect("SOURCES_CONFIG is a JSON map");
    let stats = simulator.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(simulator.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestSimulator {
        urls,
        stats,
        client: reqwest::Client::new(),
        stop,
        task,
    }
}

/// One source on a free port with `behaviour`.
fn one_source(seed: u64, behaviour: SourceBehaviour) -> SimulatorConfig {
    let mut config = SimulatorConfig::default_three(0);
    config.seed = seed;
    config.sources.clear();
    config.sources.insert("source_1".to_owned(), behaviour);
    config
}

fn fast() -> SourceBehaviour {
    SourceBehaviour {
        complete_after: Duration::from_millis(200),
        latency: Duration::ZERO,
        ..SourceBehaviour::default()
    }
}

fn job_request() -> JobRequest {
    JobRequest {
        tenant_id: TenantId::new_random(),
        report_id: ReportId::new_random(),
        content_id: ReportContentId::new_random(),
    }
}

#[tokio::test]
async fn a_job_is_in_progress_then_completes_after_complete_after_with_a_source_specific_document() {
    // Arrange
    let mut config = SimulatorConfig::default_three(0);
    for behaviour in config.sources.values_mut() {
        *behaviour = fast();
    }
    let app = spawn_simulator(config).await;
    let request = job_request();

    for source in ["source_1", "source_2", "source_3"] {
        // Act
        let created: JobStatus = app.post(source, &request).await.json().await.unwrap();
        let early: JobStatus = app.get(source, &created.id).await.json().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let response = app.get(source, &created.id).await;

        // Assert
        assert_eq!(created.status, JobState::InProgress);
        assert_eq!(created.data, None);
        assert_eq!(early.status, JobState::InProgress);
        assert_eq!(response.status(), StatusCode::OK);
        let done: JobStatus = response.json().await.unwrap();
        assert_eq!(done.id, created.id);
        assert_eq!(done.status, JobState::Completed);
        let data = done.data.expect("a completed job has data");
        assert_eq!(data["source"], source);
        assert_eq!(data["contentId"], request.content_id.to_string());
        assert_eq!(data["tenantId"], request.tenant_id.to_string());
        assert_eq!(data["reportId"], request.report_id.to_string());
        assert!(data["generatedAt"].is_string());
        match source {
            "source_1" => assert!((300..=850).contains(&data["score"]["value"].as_i64().unwrap())),
            "source_2" => assert!(data["filings"][0]["taxPaid"].is_number()),
            _ => assert!(data["transactions"].as_array().is_some_and(|t| t.len() >= 8)),
        }
    }
    let stats = app.stats.source("source_1").unwrap();
    assert_eq!(
        (stats.posts, stats.gets, stats.jobs_created, stats.jobs_completed),
        (1, 2, 1, 1)
    );
    app.stop().await;
}

#[tokio::test]
async fn post_is_idempotent_on_content_id() {
    // Arrange
    let app = spawn_simulator(one_source(0, fast())).await;
    let request = job_request();
    let other = job_request();

    // Act
    let first: JobStatus = app.post("source_1", &request).await.json().await.unwrap();
    let second: JobStatus = app.post("source_1", &request).await.json().await.unwrap();
    let third: JobStatus = app.post("source_1", &other).await.json().await.unwrap();

    // Assert
    assert_eq!(first.id, second.id);
    assert_ne!(first.id, third.id);
    assert_eq!(app.stats.source("source_1").unwrap().jobs_created, 2);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_job_is_404() {
    // Arrange
    let app = spawn_simulator(one_source(0, fast())).await;

    // Act
    let response = app.get("source_1", "no-such-job").await;
    let health = app
        .client
        .get(format!("{}/healthz", app.url("source_1")))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(health.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn an_error_rate_of_one_answers_500_to_every_request() {
    // Arrange
    let app = spawn_simulator(one_source(
        0,
        SourceBehaviour {
            error_rate: 1.0,
            ..fast()
        },
    ))
    .await;

    // Act
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.post("source_1", &job_request()).await.status());
        statuses.push(app.get("source_1", "any").await.status());
    }

    // Assert
    assert!(
        statuses.iter().all(|&s| s == StatusCode::INTERNAL_SERVER_ERROR),
        "{statuses:?}"
    );
    let stats = app.stats.source("source_1").unwrap();
    assert_eq!((stats.errors_injected, stats.jobs_created), (10, 0));
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_rate_of_one_answers_200_with_a_body_that_is_not_json() {
    // Arrange
    let app = spawn_simulator(one_source(
        0,
        SourceBehaviour {
            malformed_rate: 1.0,
            ..fast()
        },
    ))
    .await;

    // Act
    let response = app.post("source_1", &job_request()).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    assert_eq!(app.stats.source("source_1").unwrap().malformed_injected, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_reject_rate_of_one_answers_422_with_a_json_error() {
    // Arrange
    let app = spawn_simulator(one_source(
        0,
        SourceBehaviour {
            reject_rate: 1.0,
            ..fast()
        },
    ))
    .await;

    // Act
    let post = app.post("source_1", &job_request()).await;
    let get = app.get("source_1", "any").await;

    // Assert
    assert_eq!(post.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(get.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = post.json().await.unwrap();
    assert_eq!(body["error"], "rejected");
    app.stop().await;
}

#[tokio::test]
async fn a_timeout_holds_the_request_for_hang_for_then_answers_504() {
    // Arrange
    let app = spawn_simulator(one_source(
        0,
        SourceBehaviour {
            timeout_rate: 1.0,
            hang_for: Duration::from_millis(300),
            ..fast()
        },
    ))
    .await;
    let started = std::time::Instant::now();

    // Act
    let response = app.post("source_1", &job_request()).await;

    // Assert
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The request was carried out; only its answer was lost.
    assert_eq!(app.stats.source("source_1").unwrap().jobs_created, 1);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_releases_held_requests_at_once() {
    // Arrange
    let app = spawn_simulator(one_source(
        0,
        SourceBehaviour {
            timeout_rate: 1.0,
            hang_for: Duration::from_secs(60),
            ..fast()
        },
    ))
    .await;
    let held = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("source_1").to_owned());
        async move { client.get(format!("{url}/jobs/any")).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Act
    let stopped = tokio::time::timeout(Duration::from_secs(5), app.stop()).await;

    // Assert
    assert!(stopped.is_ok(), "graceful shutdown waited for a held request");
    let response = held.await.unwrap().expect("the held request is answered");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_sequence() {
    // Arrange
    let behaviour = SourceBehaviour {
        error_rate: 0.3,
        reject_rate: 0.2,
        malformed_rate: 0.2,
        ..fast()
    };
    let request = job_request();
    let mut sequences = Vec::new();

    // Act
    for seed in [42, 42, 43] {
        let app = spawn_simulator(one_source(seed, behaviour.clone())).await;
        let mut sequence = Vec::new();
        for i in 0..30 {
            let response = if i % 2 == 0 {
                app.post("source_1", &request).await
            } else {
                app.get("source_1", "any").await
            };
            let status = response.status();
            let is_json = serde_json::from_str::<Value>(&response.text().await.unwrap()).is_ok();
            sequence.push((status.as_u16(), is_json));
        }
        app.stop().await;
        sequences.push(sequence);
    }

    // Assert
    assert_eq!(sequences[0], sequences[1]);
    assert_ne!(sequences[0], sequences[2]);
    assert!(sequences[0].iter().any(|&(status, _)| status == 500));
    assert!(sequences[0].iter().any(|&(status, json)| status == 200 && !json));
}

#[test]
fn invalid_configs_are_refused_with_a_message_naming_the_field() {
    // Arrange
    let cases = [
        (r#"{"sources": {}}"#, "no sources"),
        (r#"{"sources": {"source_1": {"errorRate": 1.5}}}"#, "`errorRate`"),
        (r#"{"sources": {"source_1": {"timeoutRate": -0.1}}}"#, "`timeoutRate`"),
        (
            r#"{"sources": {"source_2": {"errorRate": 0.6, "rejectRate": 0.6}}}"#,
            "source `source_2`: rejectRate + errorRate",
        ),
        (
            r#"{"sources": {"source_1": {"completeAfter": "soon"}}}"#,
            "`completeAfter`",
        ),
        (
            r#"{"sources": {"source_3": {"errRate": 0.1}}}"#,
            "source `source_3`: unknown field `errRate`",
        ),
        (r#"{"seed": 1, "sourcez": {}}"#, "unknown field `sourcez`"),
        (
            r#"{"sources": {"a": {"port": 9000}, "b": {"port": 9000}}}"#,
            "`port` 9000",
        ),
    ];

    for (json, expected) in cases {
        // Act
        let error = SimulatorConfig::from_json(json).expect_err(json);

        // Assert
        let message = error.to_string();
        assert!(message.contains(expected), "{json}: {message:?} lacks {expected:?}");
        if expected.contains("errorRate`") {
            assert!(message.contains("source `source_1`"), "{message}");
            assert!(matches!(error, ConfigError::RateOutOfRange { .. }));
        }
    }
}

#[test]
fn a_valid_config_is_parsed_with_defaults() {
    // Arrange
    let json = r#"{"seed": 42, "sources": {"source_1": {"port": 9101, "completeAfter": "3s", "errorRate": 0.1},
                   "source_2": {"latency": "20ms", "hangFor": "1s"}}}"#;

    // Act
    let config = SimulatorConfig::from_json(json).unwrap();

    // Assert
    assert_eq!(config.seed, 42);
    assert_eq!(config.host.to_string(), "127.0.0.1");
    let source_1 = &config.sources["source_1"];
    assert_eq!((source_1.port, source_1.complete_after), (9101, Duration::from_secs(3)));
    assert_eq!((source_1.error_rate, source_1.latency), (0.1, Duration::from_millis(5)));
    let source_2 = &config.sources["source_2"];
    assert_eq!(source_2.complete_after, Duration::from_secs(2));
    assert_eq!(source_2.latency, Duration::from_millis(20));
    assert_eq!(source_2.hang_for, Duration::from_secs(1));
    let three = SimulatorConfig::default_three(9101);
    let ports: Vec<u16> = three.sources.values().map(|s| s.port).collect();
    assert_eq!(ports, [9101, 9102, 9103]);
}

#[tokio::test]
async fn a_source_with_document_padding_answers_documents_larger_by_that_many_bytes() {
    // Arrange: a job completed at once, its document padded by 2 MiB
    let padding = 2 * 1024 * 1024;
    let app = spawn_simulator(one_source(
        1,
        SourceBehaviour {
            complete_after: Duration::ZERO,
            document_padding: padding,
            ..fast()
        },
    ))
    .await;

    // Act
    let response = app.post("source_1", &job_request()).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    assert!(body.len() > padding, "{} bytes", body.len());
    let job: JobStatus = serde_json::from_slice(&body).unwrap();
    assert_eq!(job.status, JobState::Completed);
    let data = job.data.unwrap();
    assert_eq!(data["padding"].as_str().map(str::len), Some(padding));
    assert_eq!(data["source"], "source_1", "the padding is added to the real document");
    app.stop().await;
}

#[tokio::test]
async fn a_source_with_redirect_to_answers_every_jobs_request_with_a_307_to_the_same_path_there() {
    // Arrange
    let app = spawn_simulator(one_source(
        1,
        SourceBehaviour {
            redirect_to: Some("http://moved.example/api/".to_owned()),
            ..fast()
        },
    ))
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Act
    let post = no_redirects
        .post(format!("{}/jobs", app.url("source_1")))
        .json(&job_request())
        .send()
        .await
        .unwrap();
    let get = no_redirects
        .get(format!("{}/jobs/j1", app.url("source_1")))
        .send()
        .await
        .unwrap();

    // Assert
    for (response, location) in [
        (post, "http://moved.example/api/jobs"),
        (get, "http://moved.example/api/jobs/j1"),
    ] {
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(response.headers()["location"], location);
    }
    let stats = app.stats.source("source_1").unwrap();
    assert_eq!((stats.jobs_created, stats.posts, stats.gets), (0, 1, 1));
    app.stop().await;
}
