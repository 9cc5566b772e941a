//! `burst`: 2,000 reports started as fast as the API takes them, then the time until all are
//! final, against the ceiling of the Temporal dev server (`temporal-ceiling`).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;

use crate::stats::*;
use crate::temporal_ceiling;
use crate::world::{Options, World};

/// Reports of the burst: 6,000 contents.
const REPORTS: usize = 2000;

/// Concurrent `startReport` clients, as in the measurement of issue 9 (`oha -c 16`).
const CLIENTS: usize = 16;

/// Longest wait for the burst to drain before the scenario gives up and says so.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);

/// How long `reportStatus` is probed on the idle world, and then from the burst's first start:
/// the starts and the workflow-task backlog, the heaviest part of the drain.
const IDLE_PROBE: Duration = Duration::from_secs(15);
const DRAIN_PROBE: Duration = Duration::from_secs(120);

/// One `reportStatus` every 20 ms: enough samples for a p99, too few to slow the drain.
const PROBE_PACE: Duration = Duration::from_millis(20);

/// The burst with one and with two replicas of each worker (`LQDTY_BENCH_BURST_REPLICAS=1` or `2`
/// runs only that one), each drain rate as a share of the engine's ceiling measured just before on
/// the same machine.
pub async fn run() {
    let only: Option<usize> = std::env::var("LQDTY_BENCH_BURST_REPLICAS")
        .ok()
        .and_then(|r| r.parse().ok());
    let ceiling = temporal_ceiling::ceiling("ceiling", liquidity_workflows::worker::WorkerTuning::default()).await;
    for replicas in [1, 2].into_iter().filter(|r| only.is_none_or(|only| only == *r)) {
        burst(replicas, ceiling).await;
    }
}

async fn burst(replicas: usize, ceiling: f64) {
    let source = json!({ "completeAfter": "2s", "latency": "5ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": source, "source_2": source, "source_3": source }),
        workflow_env: vec![("POLL_INTERVAL", "10s".to_owned())],
        replicas,
        ..Options::default()
    })
    .await;
    let name = format!("burst, {replicas} replica(s) of each worker");
    let workers: Vec<u32> = ["workflow-worker", "workflow-worker-2"]
        .into_iter()
        .take(replicas)
        .map(|w| world.pid(w))
        .collect();
    let tokens = futures::future::join_all((0..3).map(|t| world.user(t))).await;
    // The report whose status is read during the drain; final, so its own work is done.
    let probed = world.start_report(&tokens[0]).await;
    world.wait_final(&tokens[0], &probed, Duration::from_secs(60)).await;
    let idle_reads = StatusProbe::start(&world, &tokens[0], &probed, Instant::now() + IDLE_PROBE, PROBE_PACE)
        .latencies()
        .await;
    let (done_before, finished_before) = progress(&world).await;
    let contents = REPORTS * 3;
    let processes = pipeline_processes(&world, replicas);
    let cpu_before: Vec<f64> = processes.iter().map(|p| p.cpu_seconds()).collect();
    let persistence_before = temporal_persistence_requests().await;

    let started = Instant::now();
    let drain_reads = StatusProbe::start(&world, &tokens[0], &probed, started + DRAIN_PROBE, PROBE_PACE);
    let starting = futures::stream::iter(0..REPORTS)
        .map(|i| world.start_report(&tokens[i % 3]))
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>();
    let mut starting = std::pin::pin!(starting);
    let mut all_started = None;
    let mut peak_rss = vec![0; workers.len()];
    let mut last_final = 0;
    let mut next_print = Duration::from_secs(10);
    let mut contents_final = None;
    let reports_final = loop {
        if all_started.is_none() {
            tokio::select! {
                _ = &mut starting => {
                    all_started = Some(started.elapsed());
                    println!("  {name}: {REPORTS} reports started in {:.1} s", started.elapsed().as_secs_f64());
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (peak, pid) in peak_rss.iter_mut().zip(&workers) {
            *peak = (*peak).max(proc_status_kib(*pid, "VmRSS:"));
        }
        let (done, finished) = progress(&world).await;
        let (done, finished) = (done - done_before, finished - finished_before);
        if done >= contents && contents_final.is_none() {
            contents_final = Some(started.elapsed());
        }
        if all_started.is_some() && done >= contents && finished >= REPORTS {
            break started.elapsed();
        }
        if started.elapsed() >= next_print {
            next_print += Duration::from_secs(10);
            let queue = temporal_ceiling::backlog(&world.task_queue)
                .map(|q| q.to_string())
                .unwrap_or_default();
            println!(
                "  {name}: {:>4.0} s, contents final {done} (+{} in 10 s), reports finished {finished}; {queue}; workflow worker RSS {} MiB; load {}",
                started.elapsed().as_secs_f64(),
                done - last_final,
                workers
                    .iter()
                    .map(|pid| (proc_status_kib(*pid, "VmRSS:") / 1024).to_string())
                    .collect::<Vec<_>>()
                    .join(" + "),
                load_average(),
            );
            last_final = done;
        }
        assert!(
            started.elapsed() < DRAIN_LIMIT,
            "{name}: not drained after {DRAIN_LIMIT:?} ({done} of {contents} contents final)"
        );
    };
    let cpu: Vec<String> = processes
        .iter()
        .zip(cpu_before)
        .map(|(p, before)| format!("{} {:.0} s", p.role, p.cpu_seconds() - before))
        .collect();
    println!(
        "{name}: CPU used until all reports finished ({:.0} s of 2 cores: {:.0} CPU-s): {}",
        reports_final.as_secs_f64(),
        2.0 * reports_final.as_secs_f64(),
        cpu.join(", ")
    );
    println!(
        "{name}: Temporal's persistence requests per content: {}",
        persistence_per_unit(
            persistence_before.as_ref(),
            temporal_persistence_requests().await.as_ref(),
            contents
        )
    );
    let contents_final = contents_final.unwrap_or(reports_final);
    let rate = contents as f64 / contents_final.as_secs_f64();
    println!(
        "{name}: {REPORTS} reports ({contents} contents) started in {:.1} s, all final after {:.1} s, all reports finished after {:.1} s: {rate:.1} contents/s = {:.0}% of the ceiling ({ceiling:.1} workflows/s); workflow worker peak RSS {} MiB; load {}",
        all_started.unwrap_or_default().as_secs_f64(),
        contents_final.as_secs_f64(),
        reports_final.as_secs_f64(),
        100.0 * rate / ceiling,
        peak_rss
            .iter()
            .map(|kib| (kib / 1024).to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        load_average(),
    );
    // The first seconds carry the 2,000 `startReport`s through the same API; split there, so the
    // figure of the drain alone shows whether the tail comes from the starts or from the drain.
    let last_start = started + all_started.unwrap_or_default();
    let (starting_reads, draining_reads) = drain_reads.latencies_split(last_start).await;
    let mut drain_reads = [starting_reads.as_slice(), draining_reads.as_slice()].concat();
    drain_reads.sort_by(f64::total_cmp);
    let idle_p99 = percentile(&idle_reads, 0.99);
    let p50_p99 = |reads: &[f64]| {
        format!(
            "{:.1}/{:.1} ms (n={}): p99 {:.1}x idle",
            percentile(reads, 0.5) * 1e3,
            percentile(reads, 0.99) * 1e3,
            reads.len(),
            percentile(reads, 0.99) / idle_p99,
        )
    };
    println!(
        "{name}: reportStatus p50/p99 idle {:.1}/{:.1} ms (n={}), during the first {} s of the burst {}; of which while the reports were started {}, after {}",
        percentile(&idle_reads, 0.5) * 1e3,
        idle_p99 * 1e3,
        idle_reads.len(),
        DRAIN_PROBE.as_secs(),
        p50_p99(&drain_reads),
        p50_p99(&starting_reads),
        p50_p99(&draining_reads),
    );
}

/// Final contents and finished reports over the three tenant databases.
async fn progress(world: &World) -> (usize, usize) {
    let (mut contents, mut reports) = (0, 0);
    for index in 0..3 {
        let mut conn = world.dbs.connect(index).await;
        let (c, r): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM report_contents WHERE status <> 'in_progress'),
                    (SELECT count(*) FROM report WHERE finished_at IS NOT NULL)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        contents += c as usize;
        reports += r as usize;
    }
    (contents, reports)
}

/// One process of the pipeline, and whether its CPU includes its children's.
struct Process {
    role: &'static str,
    pid: u32,
    with_children: bool,
}

impl Process {
    fn cpu_seconds(&self) -> f64 {
        if self.with_children {
            cpu_seconds_with_children(self.pid)
        } else {
            cpu_seconds(self.pid)
        }
    }
}

/// The world's processes, plus the test stack's Temporal server and PostgreSQL (the postmaster
/// and its backends), which the harness does not start.
fn pipeline_processes(world: &World, replicas: usize) -> Vec<Process> {
    let own = |role: &'static str| Process {
        role,
        pid: world.pid(role),
        with_children: false,
    };
    let mut processes: Vec<Process> = ["api", "relay", "pubsub", "sources"].into_iter().map(own).collect();
    for role in ["cdc-worker", "cdc-worker-2", "workflow-worker", "workflow-worker-2"] {
        if replicas > 1 || !role.ends_with("-2") {
            processes.push(own(role));
        }
    }
    let stack = |role, variable: &str, with_children| {
        Some(Process {
            role,
            pid: listener_pid(&std::env::var(variable).ok()?)?,
            with_children,
        })
    };
    processes.extend(stack("temporal", "LQDTY_TEST_TEMPORAL_ADDRESS", false));
    processes.extend(stack("postgres", "LQDTY_TEST_PG_ADMIN_URL", true));
    processes
}
