//! `capacity`: reports in flight one machine carries at a 10 s poll interval.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;

use crate::stats::*;
use crate::world::{Options, World};

/// How many reports in flight one machine carries at a 10 s poll interval: start reports in
/// steps and watch how late the polls are (age of `last_run_at` of in-progress contents).
pub async fn run() {
    const STEPS: [usize; 6] = [100, 250, 500, 750, 1000, 1500];
    let slow = json!({ "completeAfter": "30m", "latency": "5ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        workflow_env: vec![
            ("POLL_INTERVAL", "10s".to_owned()),
            ("WORKER_MAX_ACTIVITIES", "5000".to_owned()),
        ],
        cdc_env: vec![
            ("RECONCILE_STALE_AFTER", "60s".to_owned()),
            ("RECONCILE_INTERVAL", "30s".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let tokens = futures::future::join_all((0..3).map(|t| world.user(t))).await;
    println!(
        "reports in flight | contents | all polled after | poll lag p50 | p95 | max | load avg  (poll interval 10 s)"
    );
    let mut started = 0;
    for target in STEPS {
        let new = target - started;
        let step_started = Instant::now();
        futures::stream::iter(0..new)
            .map(|i| world.start_report(&tokens[i % 3]))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        started = target;
        // Ramp: until every content has been checked by its workflow at least once.
        let ramp_limit = Duration::from_secs(240);
        while never_polled(&world).await > 0 && step_started.elapsed() < ramp_limit {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ramp = step_started.elapsed();
        // Steady state: how old is the last check of each in-progress content, over 30 s.
        let mut lags = Vec::new();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            lags.extend(poll_ages(&world).await);
        }
        lags.sort_by(f64::total_cmp);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{target:>17} | {:>8} | {:>13.0} s | {:>10.1} s | {:>5.1} s | {:>5.1} s | {}",
            target * 3,
            ramp.as_secs_f64(),
            percentile(&lags, 0.5),
            percentile(&lags, 0.95),
            lags.last().copied().unwrap_or_default(),
            load.split_whitespace().next().unwrap_or("?"),
        );
        if percentile(&lags, 0.95) > 20.0 {
            println!("poll lag above twice the interval: stopping");
            break;
        }
    }
}

/// In-progress contents that no workflow has checked yet.
async fn never_polled(world: &World) -> i64 {
    let mut total = 0;
    for index in 0..3 {
        let mut conn = world.dbs.connect(index).await;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM report_contents WHERE status = 'in_progress' AND last_run_at = created_at",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        total += count;
    }
    total
}

/// Seconds since the last check of every in-progress content.
async fn poll_ages(world: &World) -> Vec<f64> {
    let mut ages = Vec::new();
    for index in 0..3 {
        let mut conn = world.dbs.connect(index).await;
        let tenant_ages: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - last_run_at)::float8 FROM report_contents WHERE status = 'in_progress'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        ages.extend(tenant_ages);
    }
    ages
}
