//! Benchmarks of the whole system, on the same process tree as the end-to-end tests (release
//! builds, every role its own process, real PostgreSQL, Debezium, Pub/Sub and Temporal).
//!
//! `scripts/bench.sh` runs it (it brings up the test stack); `cargo bench -p liquidity --bench
//! pipeline -- <scenario>...` with the test stack's `LQDTY_TEST_*` exported does the same.
//! Scenarios: `auth`, `latency`, `capacity`, `login-flood` (all when none is named). Results go
//! to stdout and are quoted in the README.

// The end-to-end tests' harness, so that benchmarks measure exactly the tested process tree; the
// benchmarks use only part of it.
#[path = "../tests/e2e/world.rs"]
#[allow(dead_code)]
mod world;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use world::{Options, World};

#[tokio::main]
async fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if runs("auth") {
        auth().await;
    }
    if runs("latency") {
        latency().await;
    }
    if runs("capacity") {
        capacity().await;
    }
    if runs("login-flood") {
        login_flood().await;
    }
}

/// A login of `username` from client address `client` (through the harness's trusted proxy).
async fn login(world: &World, username: &str, client: &str) -> reqwest::Response {
    world
        .graphql_request(
            "mutation($input: LoginInput!) { login(input: $input) { token } }",
            json!({ "input": { "username": username, "password": "correct-horse-battery" } }),
            None,
        )
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
}

/// register and login latency under a closed-loop load of `CONCURRENCY` clients, each request
/// from a client address of its own (the per-IP limits do not apply to a crowd).
async fn auth() {
    const CONCURRENCY: usize = 8;
    const REGISTERS: usize = 200;
    const LOGINS: usize = 400;
    let world = World::start(Options::default()).await;
    let tenant = world.dbs.tenants[0].id;

    let register = |i: usize| {
        let world = &world;
        async move {
            let started = Instant::now();
            let body = world
                .graphql_request(
                    "mutation($input: RegisterInput!) { register(input: $input) { token } }",
                    json!({ "input": { "tenantId": tenant, "username": format!("bench-{i}"),
                                       "password": "correct-horse-battery", "taxId": "TAX-1" } }),
                    None,
                )
                .header("x-forwarded-for", world.client_address())
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap();
            assert!(body["data"]["register"]["token"].is_string(), "{body}");
            started.elapsed()
        }
    };
    let (elapsed, latencies) = closed_loop(REGISTERS, CONCURRENCY, register).await;
    report("register", &latencies, elapsed);

    let login = |i: usize| {
        let world = &world;
        async move {
            let started = Instant::now();
            let body = login(world, &format!("bench-{}", i % REGISTERS), &world.client_address())
                .await
                .json::<serde_json::Value>()
                .await
                .unwrap();
            assert!(body["data"]["login"]["token"].is_string(), "{body}");
            started.elapsed()
        }
    };
    let (elapsed, latencies) = closed_loop(LOGINS, CONCURRENCY, login).await;
    report("login", &latencies, elapsed);
}

/// 600 users logging in at once, each from its own address, for 60 s, against the API's
/// defaults: how much memory and how many threads the API takes, how the logins are answered,
/// and what it does to `reportStatus` latency meanwhile. Each client logs in again as soon as
/// it is answered, or after `Retry-After` when it was refused.
async fn login_flood() {
    const CLIENTS: usize = 600;
    const FLOOD: Duration = Duration::from_secs(60);
    const PROBE: Duration = Duration::from_secs(15);
    let world = World::start(Options::default()).await;
    let api = world.pid("api");
    let idle_rss = proc_status_kib(api, "VmRSS:");
    let idle_threads = proc_status_kib(api, "Threads:");

    // 600 users, registered 8 at a time, each from an address of its own.
    let users: Vec<(String, String)> = (0..CLIENTS)
        .map(|i| (format!("flood-{i}"), world.client_address()))
        .collect();
    futures::stream::iter(&users)
        .for_each_concurrent(8, |(username, _)| async { drop(world.named_user(0, username).await) })
        .await;
    let token = world.user(0).await;
    let report_id = world.start_report(&token).await;
    let registered_peak = proc_status_kib(api, "VmHWM:");
    let idle = probe_report_status(&world, &token, &report_id, Instant::now() + PROBE).await;

    let until = Instant::now() + FLOOD;
    let outcomes = std::sync::Mutex::new(HashMap::<u16, usize>::new());
    let flood = futures::future::join_all(users.iter().map(|(username, client)| {
        let outcomes = &outcomes;
        let world = &world;
        async move {
            while Instant::now() < until {
                let response = login(world, username, client).await;
                *outcomes.lock().unwrap().entry(response.status().as_u16()).or_default() += 1;
                // Ordinary clients (our own front ends, HTTP libraries with backoff) come back
                // after Retry-After, not at once.
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if let Some(seconds) = retry_after {
                    let resume = (Instant::now() + Duration::from_secs(seconds)).min(until);
                    tokio::time::sleep_until(resume.into()).await;
                }
            }
        }
    }));
    let threads = std::sync::atomic::AtomicU64::new(idle_threads);
    let flood_rss = std::sync::atomic::AtomicU64::new(0);
    let sample = async {
        while Instant::now() < until {
            threads.fetch_max(proc_status_kib(api, "Threads:"), std::sync::atomic::Ordering::Relaxed);
            flood_rss.fetch_max(proc_status_kib(api, "VmRSS:"), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (_, _, flooded) = tokio::join!(flood, sample, probe_report_status(&world, &token, &report_id, until));

    let peak_rss = proc_status_kib(api, "VmHWM:");
    let hash_mib = 19 * std::thread::available_parallelism().map_or(1, usize::from) as u64;
    println!(
        "login-flood: {CLIENTS} clients for {} s; logins answered by HTTP status: {:?}",
        FLOOD.as_secs(),
        outcomes.lock().unwrap()
    );
    println!(
        "login-flood: API RSS idle {} MiB, peak {} MiB (while registering {} MiB, during the flood {} MiB, after {} MiB; bound: idle + HASH_CONCURRENCY x 19 MiB = {} MiB + margin); threads idle {idle_threads}, peak {}",
        idle_rss / 1024,
        peak_rss / 1024,
        registered_peak / 1024,
        flood_rss.into_inner() / 1024,
        proc_status_kib(api, "VmRSS:") / 1024,
        idle_rss / 1024 + hash_mib,
        threads.into_inner(),
    );
    println!(
        "login-flood: reportStatus p50/p99 idle {:.1}/{:.1} ms (n={}), during the flood {:.1}/{:.1} ms (n={})",
        percentile(&idle, 0.5) * 1e3,
        percentile(&idle, 0.99) * 1e3,
        idle.len(),
        percentile(&flooded, 0.5) * 1e3,
        percentile(&flooded, 0.99) * 1e3,
        flooded.len(),
    );
}

/// `reportStatus` latencies (sorted, seconds) of one client asking in a loop until `until`.
///
/// The client runs on a thread and runtime of its own, with a connection of its own: on the
/// flood's runtime, its requests would also wait behind the 600 flooding clients' tasks in the
/// load generator, which is not the API's latency.
async fn probe_report_status(world: &World, token: &str, report_id: &str, until: Instant) -> Vec<f64> {
    let (url, token, report_id) = (format!("{}/graphql", world.api), token.to_owned(), report_id.to_owned());
    let probe = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let http = reqwest::Client::new();
            let body = json!({ "query": "query($id: ID!) { reportStatus(id: $id) { status } }", "variables": { "id": report_id } });
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                let answer: serde_json::Value =
                    http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
                assert!(answer["data"]["reportStatus"]["status"].is_string(), "{answer}");
                latencies.push(started.elapsed().as_secs_f64());
            }
            latencies.sort_by(f64::total_cmp);
            latencies
        })
    });
    tokio::task::spawn_blocking(move || probe.join().unwrap())
        .await
        .unwrap()
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS:` and `VmHWM:` in KiB, `Threads:`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Commit -> workflow start, and startReport -> finishedAt, with sources that complete at once.
async fn latency() {
    const REPORTS: usize = 60;
    let instant = json!({ "completeAfter": "0ms", "latency": "1ms" });
    let world = World::start(Options {
        simulator: json!({ "source_1": instant, "source_2": instant, "source_3": instant }),
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
    let contents: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT c.id, c.created_at FROM report_contents c WHERE c.report_id = ANY($1::uuid[])")
            .bind(&ids)
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
    history.sort_by(f64::total_cmp);
    println!(
        "workflow history length: p50 {} events, max {} events",
        percentile(&history, 0.5),
        history.last().copied().unwrap_or_default()
    );
    print_seconds("commit -> workflow start", &mut to_workflow);
    print_seconds("startReport -> finishedAt", &mut to_finish.clone());
}

/// How many reports in flight one machine carries at a 10 s poll interval: start reports in
/// steps and watch how late the polls are (age of `last_run_at` of in-progress contents).
async fn capacity() {
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

async fn closed_loop<F, Fut>(requests: usize, concurrency: usize, request: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Duration>,
{
    let started = Instant::now();
    let latencies = futures::stream::iter(0..requests)
        .map(request)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (started.elapsed(), latencies)
}

fn report(name: &str, latencies: &[Duration], elapsed: Duration) {
    let mut seconds: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
    seconds.sort_by(f64::total_cmp);
    println!(
        "{name}: {} requests in {:.2} s = {:.0} req/s; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        seconds.len(),
        elapsed.as_secs_f64(),
        seconds.len() as f64 / elapsed.as_secs_f64(),
        percentile(&seconds, 0.5) * 1e3,
        percentile(&seconds, 0.95) * 1e3,
        percentile(&seconds, 0.99) * 1e3,
    );
}

fn print_seconds(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        values.len(),
        percentile(values, 0.5) * 1e3,
        percentile(values, 0.95) * 1e3,
        values.last().copied().unwrap_or_default() * 1e3
    );
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}
