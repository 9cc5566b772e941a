//! `login-flood`: 600 users logging in at once, and what it does to the API.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::auth::login;
use crate::stats::*;
use crate::world::{Options, World};

/// 600 users logging in at once, each from its own address, for 60 s, against the API's
/// defaults: how much memory and how many threads the API takes, how the logins are answered,
/// and what it does to `reportStatus` latency meanwhile. Each client logs in again as soon as
/// it is answered, or after `Retry-After` when it was refused.
pub async fn run() {
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
    let idle = StatusProbe::start(&world, &token, &report_id, Instant::now() + PROBE, Duration::ZERO)
        .latencies()
        .await;

    for generator in [Generator::SharedCores, Generator::Idle] {
        let until = Instant::now() + FLOOD;
        let flood = spawn_flood(world.api.clone(), users.clone(), until, generator);
        let threads = std::sync::atomic::AtomicU64::new(idle_threads);
        let flood_rss = std::sync::atomic::AtomicU64::new(0);
        let sample = async {
            while Instant::now() < until {
                threads.fetch_max(proc_status_kib(api, "Threads:"), std::sync::atomic::Ordering::Relaxed);
                flood_rss.fetch_max(proc_status_kib(api, "VmRSS:"), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let probe = StatusProbe::start(&world, &token, &report_id, until, Duration::ZERO);
        let (_, flooded) = tokio::join!(sample, probe.latencies());
        let outcomes = tokio::task::spawn_blocking(move || flood.join().unwrap())
            .await
            .unwrap();
        println!(
            "login-flood, load generator {generator:?}: {CLIENTS} clients for {} s; logins answered by HTTP status: {outcomes:?}",
            FLOOD.as_secs(),
        );
        println!(
            "login-flood, load generator {generator:?}: API RSS during the flood up to {} MiB, after {} MiB; threads up to {}",
            flood_rss.into_inner() / 1024,
            proc_status_kib(api, "VmRSS:") / 1024,
            threads.into_inner(),
        );
        println!(
            "login-flood, load generator {generator:?}: reportStatus p50/p99 idle {:.1}/{:.1} ms (n={}), during the flood {:.1}/{:.1} ms (n={}): p99 {:.1}x idle",
            percentile(&idle, 0.5) * 1e3,
            percentile(&idle, 0.99) * 1e3,
            idle.len(),
            percentile(&flooded, 0.5) * 1e3,
            percentile(&flooded, 0.99) * 1e3,
            flooded.len(),
            percentile(&flooded, 0.99) / percentile(&idle, 0.99),
        );
    }
    let hash_mib = 19 * std::thread::available_parallelism().map_or(1, usize::from) as u64;
    println!(
        "login-flood: API RSS idle {} MiB, peak {} MiB over both floods (while registering {} MiB; bound: idle + HASH_CONCURRENCY x 19 MiB = {} MiB + margin); threads idle {idle_threads}",
        idle_rss / 1024,
        proc_status_kib(api, "VmHWM:") / 1024,
        registered_peak / 1024,
        idle_rss / 1024 + hash_mib,
    );
}

/// Where the flood's clients get their CPU. In production a flood comes from other machines;
/// here the 600 clients share the API's two cores, and their own CPU (HTTP requests and
/// answers) competes with the API's request threads. The scenario runs the flood twice: with the
/// generator at normal priority (what this machine shows), then under `SCHED_IDLE` (the
/// generator gets only the CPU the API leaves: closer to a flood from elsewhere, though it then
/// also competes with the API's hashing threads, which run under `SCHED_IDLE` too).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Generator {
    SharedCores,
    Idle,
}

/// Starts the flood on a thread and runtime of its own (two workers, as many as the cores): each
/// client logs in again as soon as it is answered, or after `Retry-After` when it was refused.
/// Returns the count of answers by HTTP status.
fn spawn_flood(
    api: String,
    users: Vec<(String, String)>,
    until: Instant,
    generator: Generator,
) -> std::thread::JoinHandle<HashMap<u16, usize>> {
    let lower = move || {
        if generator == Generator::Idle {
            use thread_priority::{
                NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
                thread_native_id,
            };
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle).unwrap();
        }
    };
    std::thread::spawn(move || {
        lower();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_start(lower)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let http = reqwest::Client::new();
            let clients = users.into_iter().map(|(username, client)| {
                let (http, api) = (http.clone(), api.clone());
                tokio::spawn(async move {
                    let mut outcomes = HashMap::<u16, usize>::new();
                    while Instant::now() < until {
                        let response = login(&http, &api, &username, &client).await;
                        *outcomes.entry(response.status().as_u16()).or_default() += 1;
                        // Ordinary clients (our own front ends, HTTP libraries with backoff)
                        // come back after Retry-After, not at once.
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                        if let Some(seconds) = retry_after {
                            let resume = (Instant::now() + Duration::from_secs(seconds)).min(until);
                            tokio::time::sleep_until(resume.into()).await;
                        }
                    }
                    outcomes
                })
            });
            let mut total = HashMap::new();
            for client in futures::future::join_all(clients).await {
                for (status, count) in client.unwrap() {
                    *total.entry(status).or_default() += count;
                }
            }
            total
        })
    })
}
