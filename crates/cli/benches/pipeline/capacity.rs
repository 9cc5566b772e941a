//! `capacity`: reports in flight one machine carries at a 10 s poll interval.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;

use crate::stats::*;
use crate::temporal_ceiling;
use crate::world::{Options, World};

/// How many reports in flight one machine carries at a 10 s poll interval, with the workers'
/// defaults (one workflow worker, `WORKER_MAX_ACTIVITIES` as shipped): start reports in steps and
/// watch how late the polls are (age of `last_run_at` of in-progress contents), whether any
/// content waits in Temporal's activity backlog, and what each process holds in memory.
pub async fn run() {
    const STEPS: [usize; 4] = [500, 1000, 2000, 3000];
    let slow = json!({ "completeAfter": "30m", "latency": "5ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        workflow_env: vec![("POLL_INTERVAL", "10s".to_owned())],
        cdc_env: vec![
            ("RECONCILE_STALE_AFTER", "60s".to_owned()),
            ("RECONCILE_INTERVAL", "30s".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let tokens = futures::future::join_all((0..3).map(|t| world.user(t))).await;
    let mut processes: Vec<(&str, u32)> = ["api", "cdc-worker", "workflow-worker", "relay"]
        .into_iter()
        .map(|role| (role, world.pid(role)))
        .collect();
    let temporal = std::env::var("LQDTY_TEST_TEMPORAL_ADDRESS").ok();
    let temporal_pid = temporal.as_deref().and_then(listener_pid);
    processes.extend(temporal_pid.map(|pid| ("temporal", pid)));
    println!(
        "reports in flight | contents | all polled after | poll lag p50 | p95 | max | activity backlog | load avg  (poll interval 10 s)"
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
        let steady_started = Instant::now();
        let temporal_cpu_before = temporal_pid.map(cpu_seconds).unwrap_or_default();
        let persistence_before = temporal_persistence_requests().await;
        let mut lags = Vec::new();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            lags.extend(poll_ages(&world).await);
        }
        lags.sort_by(f64::total_cmp);
        // Temporal's work over the same window: the polling contents, plus whatever the step's
        // starts had not finished during its ramp.
        let steady = steady_started.elapsed();
        let temporal_cores =
            (temporal_pid.map(cpu_seconds).unwrap_or_default() - temporal_cpu_before) / steady.as_secs_f64();
        let persistence = persistence_per_unit(
            persistence_before.as_ref(),
            temporal_persistence_requests().await.as_ref(),
            steady.as_secs().max(1) as usize,
        );
        let backlog = temporal_ceiling::backlog(&world.task_queue).map_or(-1, |q| q.activity_backlog as i64);
        println!(
            "{target:>17} | {:>8} | {:>13.0} s | {:>10.1} s | {:>5.1} s | {:>5.1} s | {backlog:>16} | {}",
            target * 3,
            ramp.as_secs_f64(),
            percentile(&lags, 0.5),
            percentile(&lags, 0.95),
            lags.last().copied().unwrap_or_default(),
            load_average(),
        );
        let rss = processes
            .iter()
            .map(|(role, pid)| format!("{role} {} MiB", proc_status_kib(*pid, "VmRSS:") / 1024))
            .collect::<Vec<_>>();
        println!("{:>17}   RSS: {}", "", rss.join(", "));
        println!(
            "{:>17}   Temporal while the contents poll: {:.0}% of a core; persistence requests per second: {persistence}",
            "",
            100.0 * temporal_cores
        );
        if percentile(&lags, 0.95) > 20.0 {
            println!("poll lag above twice the interval: stopping");
            break;
        }
    }
}

/// In-progress contents that no workflow has checked yet.
pub async fn never_polled(world: &World) -> i64 {
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
