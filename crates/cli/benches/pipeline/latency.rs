//! `latency`: commit -> workflow start and startReport -> finishedAt, idle and with 1,000 reports
//! in flight.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::json;

use crate::capacity;
use crate::stats::*;
use crate::world::{Options, World};

/// Commit -> workflow start, and startReport -> finishedAt, with sources that complete at once.
pub async fn run() {
    instant_sources().await;
    in_flight().await;
}

/// Idle stack, sources that complete at once, one report every 200 ms: commit -> workflow start,
/// and the whole way to `finishedAt` with where its time goes.
async fn instant_sources() {
    const REPORTS: usize = 60;
    let instant = json!({ "completeAfter": "0ms", "latency": "1ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": instant, "source_2": instant, "source_3": instant }),
        // JSON lines, to read each message's hops (`print_hops`)
        cdc_env: vec![("LOG_FORMAT", "json".to_owned())],
        ..Options::default()
    })
    .await;
    let token = world.user(0).await;
    // Warm-up: first workflow, first pool connections.
    let warm = world.start_report(&token).await;
    world.wait_final(&token, &warm, Duration::from_secs(60)).await;

    // One report every 200 ms: latency, not throughput.
    let mut ids = Vec::new();
    for _ in 0..REPORTS {
        ids.push(world.start_report(&token).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        assert_eq!(
            world.wait_final(&token, id, Duration::from_secs(120)).await,
            "completed"
        );
    }

    let mut conn = world.dbs.connect(0).await;
    let to_finish: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM report WHERE id = ANY($1::uuid[])",
    )
    .bind(&ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    // Where the time goes: until the last content is stored, then until finishedAt is set.
    let phases: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM max(c.last_run_at) - r.started_at)::float8,
                extract(epoch FROM r.finished_at - max(c.last_run_at))::float8
         FROM report r JOIN report_contents c ON c.report_id = r.id
         WHERE r.id = ANY($1::uuid[]) GROUP BY r.id",
    )
    .bind(&ids)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    print_seconds(
        "startReport -> last content stored",
        &mut phases.iter().map(|p| p.0).collect::<Vec<_>>(),
    );
    print_seconds(
        "last content stored -> finishedAt",
        &mut phases.iter().map(|p| p.1).collect::<Vec<_>>(),
    );
    let (mut to_workflow, mut history) = commit_to_workflow_start(&world, &ids).await;
    history.sort_by(f64::total_cmp);
    println!(
        "workflow history length: p50 {} events, max {} events",
        percentile(&history, 0.5),
        history.last().copied().unwrap_or_default()
    );
    print_seconds("commit -> workflow start", &mut to_workflow);
    print_seconds("startReport -> finishedAt", &mut to_finish.clone());
    print_hops(&world, "fetch workflow running", "INSERT -> workflow start");
    print_hops(&world, "report finished", "last completion -> finishedAt");
}

/// Per hop before the CDC worker (`capture`, `relay`, `delivery`: the fields the worker writes
/// into each message's log lines), over the worker's log lines that contain `needle`.
fn print_hops(world: &World, needle: &str, what: &str) {
    let lines = world.log_lines("cdc-worker", needle);
    for hop in ["capture_ms", "relay_ms", "delivery_ms"] {
        let mut seconds: Vec<f64> = lines
            .iter()
            .filter_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                let spans = line["spans"].as_array()?;
                let message = spans.iter().find(|span| span["name"] == "cdc_message")?;
                Some(message[hop].as_i64()? as f64 / 1e3)
            })
            .collect();
        print_seconds(&format!("{what}, hop {hop}"), &mut seconds);
    }
}

/// Commit -> workflow start of paced reports (the default sources' pace: one report every
/// 500 ms, sources taking 30 min so that nothing but the starts moves), first on the idle stack,
/// then while 1,000 reports (3,000 contents) are in flight and polled every 10 s.
async fn in_flight() {
    const IN_FLIGHT: usize = 1000;
    const PROBES: usize = 30;
    let slow = json!({ "completeAfter": "30m", "latency": "5ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        workflow_env: vec![("POLL_INTERVAL", "10s".to_owned())],
        ..Options::default()
    })
    .await;
    let tokens = futures::future::join_all((0..3).map(|t| world.user(t))).await;
    let probe = |when: &'static str| {
        let (world, token) = (&world, &tokens[0]);
        async move {
            let mut ids = Vec::new();
            for _ in 0..PROBES {
                ids.push(world.start_report(token).await);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            wait_all_polled(world).await;
            let (mut to_workflow, _) = commit_to_workflow_start(world, &ids).await;
            print_seconds(&format!("commit -> workflow start, {when}"), &mut to_workflow);
        }
    };
    probe("idle, one report every 500 ms").await;
    futures::stream::iter(0..IN_FLIGHT)
        .map(|i| world.start_report(&tokens[i % 3]))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    wait_all_polled(&world).await;
    probe("1,000 reports in flight (10 s polls), one report every 500 ms").await;
}

/// Waits until every content has been checked by its workflow once.
async fn wait_all_polled(world: &World) {
    let started = std::time::Instant::now();
    while capacity::never_polled(world).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "contents still unpolled after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Per content of the reports (tenant 0): seconds from its row's `created_at` to its workflow's
/// start in Temporal, and the workflow's history length.
async fn commit_to_workflow_start(world: &World, ids: &[String]) -> (Vec<f64>, Vec<f64>) {
    let mut conn = world.dbs.connect(0).await;
    let contents: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT c.id, c.created_at FROM report_contents c WHERE c.report_id = ANY($1::uuid[])")
            .bind(ids)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let client = world.temporal_client().await;
    let mut to_workflow = Vec::new();
    let mut history = Vec::new();
    for (content_id, created_at) in contents {
        let workflow_id = liquidity_workflows::workflow_id(world.dbs.tenants[0].id, content_id.into());
        let description = client
            .get_workflow_handle::<liquidity_workflows::FetchReportContentWorkflow>(workflow_id)
            .describe(Default::default())
            .await
            .unwrap();
        let started: std::time::SystemTime = description.start_time().expect("a started workflow");
        let started = chrono::DateTime::<chrono::Utc>::from(started);
        to_workflow.push((started - created_at).as_seconds_f64());
        history.push(description.history_length() as f64);
    }
    (to_workflow, history)
}
