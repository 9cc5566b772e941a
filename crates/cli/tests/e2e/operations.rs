//! What an operator sees: each role's `/metrics` moves with a report that goes through the
//! pipeline, and `/healthz` and `/readyz` answer, naming each dependency.

use std::time::Duration;

use liquidity_test_support::wait_until;
use serde_json::{Value, json};

use crate::world::{Options, World};

/// The sum of the samples of `name` (a counter, a gauge, or a histogram's `_count`) whose
/// labels include `labels`, in Prometheus text format.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let pairs: Vec<(&str, &str)> = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            (metric == name && labels.iter().all(|label| pairs.contains(label))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A role's `/metrics`.
pub async fn scrape(world: &World, role: &str) -> String {
    let response = world.http.get(world.ops_url(role, "/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{role} /metrics");
    response.text().await.unwrap()
}

/// A role's `/readyz`: its status and JSON body.
pub async fn readyz(world: &World, role: &str) -> (u16, Value) {
    let response = world.http.get(world.ops_url(role, "/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Waits until `role`'s metric reaches `at_least` (the CDC worker counts an event just after
/// acking it, so a report may read completed a moment before its last event is counted).
async fn wait_metric(world: &World, role: &str, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let what = format!("{role}: {name}{labels:?} >= {at_least}");
    wait_until(Duration::from_secs(30), &what, || async {
        sample(&scrape(world, role).await, name, labels) >= at_least
    })
    .await;
}

#[tokio::test]
async fn a_report_through_the_pipeline_moves_the_metrics_of_every_role() {
    // Arrange
    let world = World::start(Options::default()).await;
    let token = world.user(0).await;
    let tenant = world.dbs.tenants[0].id.to_string();
    let tenant = tenant.as_str();

    // Act
    let id = world.start_report(&token).await;
    let status = world.wait_final(&token, &id, Duration::from_secs(90)).await;

    // Assert: the CDC worker handled the three INSERTs and the three completions of the tenant
    assert_eq!(status, "completed");
    let events = "lqdty_cdc_events_total";
    wait_metric(
        &world,
        "cdc-worker",
        events,
        &[("tenant", tenant), ("op", "update"), ("outcome", "handled")],
        3.0,
    )
    .await;
    let cdc = scrape(&world, "cdc-worker").await;
    assert_eq!(
        sample(
            &cdc,
            events,
            &[("tenant", tenant), ("op", "create"), ("outcome", "handled")]
        ),
        3.0
    );
    assert_eq!(sample(&cdc, events, &[("outcome", "dead_lettered")]), 0.0);
    let lags = sample(
        &cdc,
        "lqdty_cdc_commit_to_handled_lag_seconds_count",
        &[("tenant", tenant)],
    );
    assert!(lags >= 6.0, "one commit lag per handled event: {lags}");
    let all_lags = sample(&cdc, "lqdty_cdc_commit_to_handled_lag_seconds_count", &[]);
    for hop in ["capture", "relay", "delivery", "handling"] {
        let hops = sample(&cdc, "lqdty_cdc_hop_duration_seconds_count", &[("hop", hop)]);
        assert_eq!(
            hops, all_lags,
            "every handled event has its {hop} hop (from Debezium's ts_ms and Pub/Sub's publish_time)"
        );
    }
    let starts = world.log_lines("cdc-worker", "fetch workflow running");
    assert!(!starts.is_empty(), "the CDC worker logs each start");
    for line in &starts {
        for field in ["capture_ms", "relay_ms", "delivery_ms"] {
            assert!(line.contains(field), "a start's log line says its {field}: {line}");
        }
    }
    assert_eq!(sample(&cdc, "lqdty_cdc_reconciler_repairs_total", &[]), 0.0);

    // Assert: the workflow worker finished three contents, each after a completed answer
    let workflows = scrape(&world, "workflow-worker").await;
    let finished = sample(
        &workflows,
        "lqdty_workflow_contents_finished_total",
        &[("status", "completed")],
    );
    assert_eq!(finished, 3.0);
    let answers = "lqdty_workflow_source_answers_total";
    assert_eq!(sample(&workflows, answers, &[("class", "completed")]), 3.0);
    for source in ["source_1", "source_2", "source_3"] {
        assert!(
            sample(&workflows, answers, &[("source", source)]) >= 2.0,
            "a submit and a completion: {source}"
        );
    }
    // Jobs complete after 1.5 s and are polled every 1 s: at least one wait per content.
    assert!(sample(&workflows, "lqdty_workflow_poll_lag_seconds_count", &[]) >= 3.0);
    assert_eq!(sample(&workflows, "lqdty_workflow_poll_loops_active", &[]), 0.0);
    assert_eq!(
        sample(&workflows, "lqdty_workflow_activity_slots", &[]),
        liquidity_workflows::worker::DEFAULT_MAX_ACTIVITIES as f64
    );
    assert_eq!(sample(&workflows, "lqdty_workflow_activity_backlog", &[]), 0.0);

    // Assert: the API timed one startReport, labelled by the schema's root field
    let api = scrape(&world, "api").await;
    let durations = "lqdty_api_graphql_request_duration_seconds_count";
    assert_eq!(
        sample(&api, durations, &[("operation", "startReport"), ("type", "mutation")]),
        1.0
    );
    assert_eq!(
        sample(&api, durations, &[("operation", "register"), ("type", "mutation")]),
        1.0
    );
    assert!(sample(&api, durations, &[("operation", "reportStatus"), ("type", "query")]) >= 1.0);
    assert_eq!(sample(&api, "lqdty_api_graphql_errors_total", &[]), 0.0);

    // Assert: every role reports its pools; the tenant's were used by all three
    let connections = "lqdty_db_pool_max_connections";
    assert_eq!(sample(&api, connections, &[("pool", "catalog")]), 10.0);
    for metrics in [&api, &cdc, &workflows] {
        assert_eq!(
            sample(metrics, connections, &[("pool", "tenant"), ("tenant", tenant)]),
            10.0
        );
    }
}

#[tokio::test]
async fn every_role_is_alive_and_ready_naming_each_of_its_dependencies() {
    // Arrange
    let world = World::start(Options::default()).await;

    // Act
    let mut answers = Vec::new();
    for role in ["api", "cdc-worker", "workflow-worker"] {
        let health = world.http.get(world.ops_url(role, "/healthz")).send().await.unwrap();
        answers.push((role, health.status().as_u16(), readyz(&world, role).await));
    }

    // Assert
    let expected = [
        ("api", vec!["catalog"]),
        ("cdc-worker", vec!["pubsub", "temporal"]),
        ("workflow-worker", vec!["temporal"]),
    ];
    for ((role, health, (ready, body)), (_, dependencies)) in answers.into_iter().zip(expected) {
        assert_eq!(health, 200, "{role} /healthz");
        assert_eq!(ready, 200, "{role} /readyz: {body}");
        assert_eq!(body["status"], "ready", "{role}");
        assert_eq!(body["failing"], json!([]), "{role}");
        for dependency in dependencies {
            assert_eq!(body["checks"][dependency], "ok", "{role}: {body}");
        }
    }
}

#[tokio::test]
async fn contents_beyond_the_loop_slots_are_reported_waiting_in_the_worker_and_in_temporals_backlog() {
    // Arrange: one poll loop slot (so one SDK slot to hand contents over), sources that take a
    // minute
    let slow = json!({ "completeAfter": "60s", "latency": "1ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        workflow_env: vec![("WORKER_MAX_ACTIVITIES", "1".to_owned())],
        ..Options::default()
    })
    .await;
    let token = world.user(0).await;

    // Act
    world.start_report(&token).await;

    // Assert: one content is polled, one waits in the worker for the loop slot, the third waits
    // in Temporal's backlog, and the worker says so for both
    let in_backlog = "contents wait in Temporal's activity backlog";
    let in_worker = "a content waits for a poll loop";
    wait_until(Duration::from_secs(120), "the waits exported and logged", || async {
        let workflows = scrape(&world, "workflow-worker").await;
        sample(&workflows, "lqdty_workflow_activity_backlog", &[]) >= 1.0
            && sample(&workflows, "lqdty_workflow_contents_waiting_for_a_loop", &[]) == 1.0
            && !world.log_lines("workflow-worker", in_backlog).is_empty()
            && !world.log_lines("workflow-worker", in_worker).is_empty()
    })
    .await;
    let workflows = scrape(&world, "workflow-worker").await;
    assert_eq!(sample(&workflows, "lqdty_workflow_poll_loops_active", &[]), 1.0);
    assert!(
        sample(&workflows, "lqdty_workflow_activity_backlog_age_seconds", &[])
            > liquidity_workflows::backlog::TOLERATED_AGE.as_secs_f64()
    );
    for needle in [in_backlog, in_worker] {
        let logged = world.log_lines("workflow-worker", needle);
        assert!(logged[0].contains("WORKER_MAX_ACTIVITIES"), "{logged:?}");
    }
}
