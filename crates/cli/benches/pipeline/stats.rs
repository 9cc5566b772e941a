//! Load generation and the statistics every scenario prints.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;

use crate::world::World;

pub async fn closed_loop<F, Fut>(requests: usize, concurrency: usize, request: F) -> (Duration, Vec<Duration>)
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

pub fn report(name: &str, latencies: &[Duration], elapsed: Duration) {
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

pub fn print_seconds(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        values.len(),
        percentile(values, 0.5) * 1e3,
        percentile(values, 0.95) * 1e3,
        values.last().copied().unwrap_or_default() * 1e3
    );
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS:` and `VmHWM:` in KiB, `Threads:`).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The load averages (1, 5 and 15 minutes), to print next to every figure (the machine is shared).
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_seconds(&stat).unwrap_or_default()
}

/// CPU seconds of a process and of its living children: PostgreSQL's backends and walsenders are
/// children of the postmaster.
pub fn cpu_seconds_with_children(pid: u32) -> f64 {
    let children: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat_field(stat, 1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(pid))
        .filter_map(|stat| stat_cpu_seconds(&stat))
        .sum();
    cpu_seconds(pid) + children
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds (USER_HZ is 100 on Linux).
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let ticks = |index| stat_field(stat, index)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Field `index` of a `/proc/<pid>/stat` line, counted from the state (field 3) as 0: the command
/// before it may hold spaces and parentheses, so the count starts after its last `)`.
fn stat_field(stat: &str, index: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(index)
}

/// The process listening on the port of `address` (`http://host:port` or
/// `postgres://user:password@host:port/database`), from `ss`: the test stack's Temporal server
/// and PostgreSQL are started by its supervisor, not by the harness.
pub fn listener_pid(address: &str) -> Option<u32> {
    let port = address.rsplit(':').next()?.split('/').next()?;
    let output = std::process::Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let pid = listing.split("pid=").nth(1)?.split(',').next()?;
    pid.parse().ok()
}

/// Persistence requests by operation, summed over Temporal's services.
pub type PersistenceRequests = std::collections::BTreeMap<String, f64>;

/// The persistence requests the test stack's Temporal server has made so far, by operation
/// (`UpdateWorkflowExecution`, `CreateTasks`…): Temporal's own view of what a workflow costs it,
/// from its Prometheus endpoint (`LQDTY_TEST_TEMPORAL_METRICS`). `None` when the endpoint is not
/// known or does not answer.
pub async fn temporal_persistence_requests() -> Option<PersistenceRequests> {
    let url = std::env::var("LQDTY_TEST_TEMPORAL_METRICS").ok()?;
    let text = async { reqwest::get(url).await?.text().await }.await.ok()?;
    let mut requests = PersistenceRequests::new();
    for line in text.lines().filter(|line| line.starts_with("persistence_requests{")) {
        let operation = line
            .split("operation=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        let count = line.rsplit(' ').next().and_then(|count| count.parse::<f64>().ok());
        if let (Some(operation), Some(count)) = (operation, count) {
            *requests.entry(operation.to_owned()).or_default() += count;
        }
    }
    Some(requests)
}

/// What `after` adds to `before`, per unit of work (`units`), largest first: "12.0 in all:
/// UpdateWorkflowExecution 5.0, …" (the operations under 0.1 per unit are left out), or why
/// there is no figure.
pub fn persistence_per_unit(
    before: Option<&PersistenceRequests>,
    after: Option<&PersistenceRequests>,
    units: usize,
) -> String {
    let (Some(before), Some(after)) = (before, after) else {
        return "unknown (LQDTY_TEST_TEMPORAL_METRICS unset, or Temporal's metrics endpoint did not answer)".to_owned();
    };
    let mut per_unit: Vec<(&str, f64)> = after
        .iter()
        .map(|(operation, count)| {
            let delta = count - before.get(operation).copied().unwrap_or_default();
            (operation.as_str(), delta / units as f64)
        })
        .filter(|(_, per)| *per >= 0.1)
        .collect();
    per_unit.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = per_unit.iter().map(|(_, per)| per).sum();
    let listed: Vec<String> = per_unit.iter().map(|(op, per)| format!("{op} {per:.1}")).collect();
    format!("{total:.1} in all: {}", listed.join(", "))
}

/// One client asking `reportStatus` of one report, one request at a time and at most one per
/// `pace` (zero: back to back), until a deadline: the read latency a user sees while a scenario
/// loads the API.
///
/// The client runs on a thread and runtime of its own, with a connection of its own: on the
/// scenario's runtime its requests would also wait behind the load generator's tasks, which is
/// not the API's latency.
pub struct StatusProbe(std::thread::JoinHandle<Vec<(Instant, f64)>>);

impl StatusProbe {
    /// Starts asking now.
    pub fn start(world: &World, token: &str, report_id: &str, until: Instant, pace: Duration) -> Self {
        let (url, token, report_id) = (format!("{}/graphql", world.api), token.to_owned(), report_id.to_owned());
        Self(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let http = reqwest::Client::new();
                let body = json!({ "query": "query($id: ID!) { reportStatus(id: $id) { status } }", "variables": { "id": report_id } });
                let mut ticks = tokio::time::interval(pace.max(Duration::from_micros(1)));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    ticks.tick().await;
                    let started = Instant::now();
                    let answer: serde_json::Value =
                        http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
                    assert!(answer["data"]["reportStatus"]["status"].is_string(), "{answer}");
                    latencies.push((started, started.elapsed().as_secs_f64()));
                }
                latencies
            })
        }))
    }

    /// The latencies in seconds, sorted, once the deadline has passed.
    pub async fn latencies(self) -> Vec<f64> {
        sorted_latencies(self.samples().await)
    }

    /// The latencies in seconds of the requests sent before `at` and of those sent from `at` on,
    /// each sorted, once the deadline has passed.
    pub async fn latencies_split(self, at: Instant) -> (Vec<f64>, Vec<f64>) {
        let (before, after) = self.samples().await.into_iter().partition(|(sent, _)| *sent < at);
        (sorted_latencies(before), sorted_latencies(after))
    }

    /// When each request was sent and its latency in seconds, once the deadline has passed.
    async fn samples(self) -> Vec<(Instant, f64)> {
        tokio::task::spawn_blocking(move || self.0.join().unwrap())
            .await
            .unwrap()
    }
}

fn sorted_latencies(samples: Vec<(Instant, f64)>) -> Vec<f64> {
    let mut latencies: Vec<f64> = samples.into_iter().map(|(_, latency)| latency).collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}
