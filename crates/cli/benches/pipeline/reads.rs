//! `reads`: `reportStatus`, `report` and `startReport` at c=16 against the API, with `pgbench`
//! of the same SQL on the same tenant database as the ceiling.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::stats::*;
use crate::world::{Options, World, json_of};

const CONCURRENCY: usize = 16;
const DURATION: Duration = Duration::from_secs(15);

/// One operation of the scenario: its GraphQL request and the SQL the API runs for it.
struct Operation {
    name: &'static str,
    query: &'static str,
    /// The answer's `data` field that must be present.
    field: &'static str,
    /// A pgbench script of the statements the API runs for one request, in the same order and
    /// transaction shape (`:rid`, `:uid`, `:tid` and `:sources` are set with `-D`).
    pgbench: &'static str,
}

const OPERATIONS: [Operation; 3] = [
    Operation {
        name: "reportStatus",
        query: "query($id: ID!) { reportStatus(id: $id) { status } }",
        field: "reportStatus",
        pgbench: "SELECT r.finished_at, c.status FROM report r JOIN report_contents c ON c.report_id = r.id \
                  WHERE r.id = :rid AND r.user_id = :uid AND r.tenant_id = :tid;\n",
    },
    Operation {
        name: "report",
        query: "query($id: ID!) { report(id: $id) { id tenantId userId status startedAt finishedAt \
                contents { id source status data createdAt lastRunAt } } }",
        field: "report",
        pgbench: "SELECT id, tenant_id, user_id, started_at, finished_at FROM report \
                  WHERE id = :rid AND user_id = :uid AND tenant_id = :tid;\n\
                  SELECT id, report_id, source, status, data, created_at, last_run_at FROM report_contents \
                  WHERE report_id = :rid ORDER BY source;\n",
    },
    Operation {
        name: "startReport",
        query: "mutation { startReport { reportId } }",
        field: "startReport",
        pgbench: "BEGIN;\n\
                  INSERT INTO report (tenant_id, user_id) VALUES (:tid, :uid) RETURNING id \\gset\n\
                  INSERT INTO report_contents (report_id, source) SELECT :id::uuid, unnest(:sources::text[]);\n\
                  COMMIT;\n",
    },
];

/// What one closed loop measured.
struct Run {
    requests: usize,
    elapsed: Duration,
    /// Sorted, seconds.
    latencies: Vec<f64>,
    /// CPU seconds the API and this process (the load generator) used meanwhile.
    api_cpu: f64,
    generator_cpu: f64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Each operation at c=16 for 15 s through the API, then pgbench of its SQL on the same
/// database, and the API's RSS along the way.
///
/// The pipeline's relay and workers are stopped before the loops: the reads then share the two
/// cores with nothing but the API, PostgreSQL and the load generator, as pgbench does, and the
/// thousands of reports `startReport` writes do not start a drain under the measurement. The
/// load generator's own CPU is printed next to the API's, and `wrk` (when on the `PATH`) runs
/// the same requests as a second, lighter generator.
pub async fn run() {
    let mut world = World::start(Options::default()).await;
    let token = world.user(0).await;
    // A completed report to read: `report` then carries the three sources' documents.
    let report_id = world.start_report(&token).await;
    assert_eq!(
        world.wait_final(&token, &report_id, Duration::from_secs(60)).await,
        "completed"
    );
    for name in ["relay", "cdc-worker", "workflow-worker"] {
        world.kill(name);
    }
    let api = world.pid("api");
    let mut rss = vec![("idle", proc_status_kib(api, "VmRSS:"))];
    let ids = pgbench_ids(&world, &report_id).await;

    let mut rows = Vec::new();
    for operation in &OPERATIONS {
        let variables = if operation.name == "startReport" {
            json!({})
        } else {
            json!({ "id": report_id })
        };
        let body = json!({ "query": operation.query, "variables": variables });
        let measured = closed_loop_for(&world, &token, &body, operation.field, api).await;
        rss.push((operation.name, proc_status_kib(api, "VmRSS:")));
        let wrk = wrk(&world, &token, &body, operation.field);
        let ceiling = pgbench(&world, operation, &ids);
        rows.push((operation.name, measured, wrk, ceiling));
    }

    println!(
        "reads: c={CONCURRENCY}, {} s each; load average {}",
        DURATION.as_secs(),
        load_average()
    );
    for (name, run, wrk, pgbench) in &rows {
        println!(
            "reads: {name}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms; API CPU {:.0} µs/request, load generator {:.0} µs/request",
            run.per_second(),
            percentile(&run.latencies, 0.5) * 1e3,
            percentile(&run.latencies, 0.99) * 1e3,
            run.api_cpu / run.requests as f64 * 1e6,
            run.generator_cpu / run.requests as f64 * 1e6,
        );
        if let Some(wrk) = wrk {
            println!(
                "reads: {name} (wrk -t1 -c{CONCURRENCY}): {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
                wrk.per_second, wrk.p50_ms, wrk.p99_ms
            );
        }
        println!(
            "reads: {name} pgbench of the same SQL: {:.0} tps, mean latency {:.2} ms; API/pgbench {:.0}% (wrk {})",
            pgbench.tps,
            pgbench.mean_ms,
            run.per_second() / pgbench.tps * 100.0,
            wrk.as_ref().map_or("-".to_owned(), |w| format!(
                "{:.0}%",
                w.per_second / pgbench.tps * 100.0
            )),
        );
    }
    let rss: Vec<String> = rss
        .iter()
        .map(|(after, kib)| format!("{after} {} MiB", kib / 1024))
        .collect();
    println!(
        "reads: API RSS after: {}; peak {} MiB",
        rss.join(", "),
        proc_status_kib(api, "VmHWM:") / 1024
    );
}

/// `CONCURRENCY` clients sending `body` again and again for `DURATION`, on this process's
/// runtime and one keep-alive connection each.
async fn closed_loop_for(world: &World, token: &str, body: &Value, field: &str, api: u32) -> Run {
    let url = format!("{}/graphql", world.api);
    let (api_before, generator_before) = (cpu_seconds(api), cpu_seconds(std::process::id()));
    let started = Instant::now();
    let until = started + DURATION;
    let clients = futures::stream::iter(0..CONCURRENCY).map(|_| {
        let (http, url) = (world.http.clone(), &url);
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let answer = json_of(http.post(url).bearer_auth(token).json(body)).await;
                assert!(answer["data"][field].is_object(), "{answer}");
                latencies.push(sent.elapsed().as_secs_f64());
            }
            latencies
        }
    });
    let mut latencies: Vec<f64> = clients
        .buffer_unordered(CONCURRENCY)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    Run {
        requests: latencies.len(),
        elapsed,
        latencies,
        api_cpu: cpu_seconds(api) - api_before,
        generator_cpu: cpu_seconds(std::process::id()) - generator_before,
    }
}

/// The `-D` variables of every pgbench script: the report read, its user and tenant, and the
/// sources a new report gets.
async fn pgbench_ids(world: &World, report_id: &str) -> Vec<(&'static str, String)> {
    let mut conn = world.dbs.connect(0).await;
    let (user_id, tenant_id): (String, String) =
        sqlx::query_as("SELECT user_id::text, tenant_id::text FROM report WHERE id = $1::uuid")
            .bind(report_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    vec![
        ("rid", report_id.to_owned()),
        ("uid", user_id),
        ("tid", tenant_id),
        ("sources", "{source_1,source_2,source_3}".to_owned()),
    ]
}

struct Pgbench {
    tps: f64,
    mean_ms: f64,
}

/// pgbench (PostgreSQL 15's) of the operation's SQL, c=16 on 2 threads for `DURATION`, with
/// prepared statements like sqlx, on the tenant database as its owner role.
fn pgbench(world: &World, operation: &Operation, ids: &[(&str, String)]) -> Pgbench {
    let script = std::env::temp_dir().join(format!("lqdty-reads-{}.sql", operation.name));
    std::fs::write(&script, operation.pgbench).unwrap();
    let mut command = Command::new("pgbench");
    command.args([
        "-n",
        "-M",
        "prepared",
        "-c",
        &CONCURRENCY.to_string(),
        "-j",
        "2",
        "-T",
        &DURATION.as_secs().to_string(),
        "-f",
    ]);
    command.arg(&script);
    for (name, value) in ids {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    let output = command
        .arg(&world.dbs.tenants[0].url)
        .output()
        .expect("pgbench on the PATH");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let number_after = |prefix: &str| -> f64 {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in pgbench's output: {stdout}"))
    };
    Pgbench {
        tps: number_after("tps = "),
        mean_ms: number_after("latency average = "),
    }
}

struct Wrk {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The same requests through `wrk` (C, one thread, one connection per client), when it is on
/// the `PATH` (`apt-get install wrk`): a generator that costs far less CPU than reqwest, so the
/// difference shows what our own generator takes from the API on two cores.
fn wrk(world: &World, token: &str, body: &Value, field: &str) -> Option<Wrk> {
    let script = std::env::temp_dir().join(format!("lqdty-reads-{field}.lua"));
    let lua = format!(
        "wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n\
         wrk.body = {body}\n\
         function response(status, headers, body)\n\
         \x20 if status ~= 200 or not body:find('\"{field}\":{{') then error(status .. \" \" .. body) end\n\
         end\n",
        body = lua_string(&body.to_string()),
    );
    std::fs::write(&script, lua).unwrap();
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONCURRENCY}"),
            &format!("-d{}s", DURATION.as_secs()),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("{}/graphql", world.api))
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {stdout}");
    let after = |prefix: &str| -> &str {
        stdout
            .lines()
            .find_map(|line| line.trim_start().strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output: {stdout}"))
    };
    Some(Wrk {
        per_second: after("Requests/sec:").parse().unwrap(),
        p50_ms: milliseconds(after("50%")),
        p99_ms: milliseconds(after("99%")),
    })
}

/// A Lua long-bracket string: no escaping needed inside.
fn lua_string(text: &str) -> String {
    format!("[==[{text}]==]")
}

/// wrk's `1.23ms`, `456.00us`, `1.50s`.
fn milliseconds(value: &str) -> f64 {
    let (number, scale) = if let Some(us) = value.strip_suffix("us") {
        (us, 1e-3)
    } else if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1e3)
    } else {
        panic!("unexpected wrk latency {value:?}")
    };
    number.parse::<f64>().unwrap() * scale
}
