use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use liquidity_test_support::{TestDatabases, free_port};
use serde_json::{Value, json};
use sqlx::Connection as _;

/// The world emulator's project, its CDC topic, and the CDC worker's dead-letter topic (default).
pub const PROJECT: &str = "lqdty-e2e";
pub const TOPIC: &str = "tenant-cdc";
pub const DLQ_TOPIC: &str = "tenant-cdc-dlq";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through scripts/test.sh (it exports the test stack)")
    })
}

/// Sends a request and decodes its JSON answer; any failure panics (test code).
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// How a world's sources behave and how its workers are configured (the defaults suit tests:
/// 1.5 s sources, 1 s polls, and the reconciler out of the way, so that what completes was
/// done by the CDC path).
#[derive(Default)]
pub struct Options {
    /// Run the reconciler every 2 s with a 6 s staleness. Off, it runs once at boot and then
    /// every hour with a 1 h staleness: it cannot repair anything a test waits for, and
    /// [`World::reconciler_repairs`] shows whether it did.
    pub reconciler: bool,
    /// Per-source overrides of the simulator behaviour, e.g. `{"source_2": {"errorRate": 1}}`.
    pub simulator: Value,
    /// Extra environment of the workflow worker.
    pub workflow_env: Vec<(&'static str, String)>,
    /// Extra environment of the CDC worker.
    pub cdc_env: Vec<(&'static str, String)>,
    /// Replicas of the CDC worker and of the workflow worker (1 or 2; 0 means 1).
    pub replicas: usize,
    /// Extra environment of the API.
    pub api_env: Vec<(&'static str, String)>,
}

/// One process of the world.
struct Proc {
    child: Child,
    command: Command,
}

pub struct World {
    pub dbs: TestDatabases,
    /// Client addresses handed out by [`World::client_address`].
    clients: std::sync::atomic::AtomicU32,
    pub api: String,
    pub http: reqwest::Client,
    pub task_queue: String,
    pubsub_port: u16,
    /// The relay's `GET /status` URL.
    pub relay_status: String,
    dir: PathBuf,
    procs: HashMap<&'static str, Proc>,
    /// Base URL of each role's `/metrics`, `/healthz` and `/readyz`: the API's own port, the
    /// workers' `METRICS_ADDR`.
    ops: HashMap<&'static str, String>,
}

impl World {
    /// Fresh databases and a log directory; nothing runs yet.
    async fn new() -> Self {
        liquidity_test_support::init_tracing();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dbs = TestDatabases::create(3, 10).await;
        let dir = std::env::temp_dir().join(format!("lqdty-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("relay")).unwrap();
        let world = Self {
            clients: std::sync::atomic::AtomicU32::new(0),
            api: format!("http://127.0.0.1:{}", free_port()),
            http: reqwest::Client::new(),
            pubsub_port: free_port(),
            relay_status: format!("http://127.0.0.1:{}/status", free_port()),
            task_queue: format!("e2e-{}", uuid::Uuid::new_v4().simple()),
            procs: HashMap::new(),
            ops: HashMap::new(),
            dbs,
            dir,
        };
        eprintln!("e2e world logs: {}", world.dir.display());
        world
    }

    /// Only what lies between PostgreSQL and Pub/Sub: the databases, the emulator with its
    /// topics, and the relay (the relay benchmark).
    pub async fn relay_only() -> Self {
        let mut world = Self::new().await;
        world.start_emulator().await;
        let tenants_config = world.dbs.tenants_config(10);
        world.start_relay(&tenants_config).await;
        world
    }

    pub async fn start(options: Options) -> Self {
        let mut world = Self::new().await;
        world.start_emulator().await;
        let sources = world.start_sources(&options.simulator);
        let tenants_config = world.dbs.tenants_config(10);
        let common = [
            ("TENANTS_CONFIG", tenants_config.clone()),
            ("TEMPORAL_ADDRESS", env("LQDTY_TEST_TEMPORAL_ADDRESS")),
            ("TEMPORAL_TASK_QUEUE", world.task_queue.clone()),
            ("LOG_LEVEL", "info,sqlx=warn,temporalio_sdk_core=warn".to_owned()),
        ];
        let pubsub = world.pubsub_env();
        for name in ["cdc-worker", "cdc-worker-2"].into_iter().take(options.replicas.max(1)) {
            let mut cdc = world.liquidity("cdc-worker");
            let (interval, stale_after) = if options.reconciler { ("2s", "6s") } else { ("1h", "1h") };
            cdc.envs(common.clone()).envs(pubsub.clone()).envs([
                ("PUBSUB_AUTO_CREATE", "true".to_owned()),
                ("RECONCILE_INTERVAL", interval.to_owned()),
                ("RECONCILE_STALE_AFTER", stale_after.to_owned()),
            ]);
            cdc.envs(options.cdc_env.clone());
            cdc.env("METRICS_ADDR", world.ops_addr(name));
            world.spawn(name, cdc);
        }
        for name in ["workflow-worker", "workflow-worker-2"]
            .into_iter()
            .take(options.replicas.max(1))
        {
            let mut workflows = world.liquidity("workflow-worker");
            workflows
                .envs(common.clone())
                .env("SOURCES_CONFIG", &sources)
                .env("POLL_INTERVAL", "1s")
                .envs(options.workflow_env.clone());
            workflows.env("METRICS_ADDR", world.ops_addr(name));
            world.spawn(name, workflows);
        }
        let mut api = world.liquidity("api");
        api.envs(common).envs([
            ("CATALOG_DATABASE_URL", world.dbs.catalog_url()),
            ("JWT_SECRET", format!("e2e-secret-{}", uuid::Uuid::new_v4())),
            ("LISTEN_ADDR", world.api.trim_start_matches("http://").to_owned()),
            // The harness plays a reverse proxy in front of many users: each user is its own
            // client address (`client_address`), as behind a real load balancer, so that the
            // per-IP limits of login and register apply per user, not to the whole harness.
            ("TRUSTED_PROXIES", "127.0.0.1".to_owned()),
        ]);
        api.envs(options.api_env);
        world.ops.insert("api", world.api.clone());
        world.spawn("api", api);
        world.wait_http(&format!("{}/healthz", world.api), "the API").await;
        world.start_relay(&tenants_config).await;
        world
    }

    /// A free `host:port` for a worker's `METRICS_ADDR`, remembered as its operations URL.
    fn ops_addr(&mut self, name: &'static str) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        self.ops.insert(name, format!("http://{addr}"));
        addr
    }

    /// `PATH` (`/metrics`, `/healthz`, `/readyz`) of a role's operations endpoints.
    pub fn ops_url(&self, name: &str, path: &str) -> String {
        format!("{}{path}", self.ops[name])
    }

    /// `host:port` of the world's Pub/Sub emulator.
    pub fn pubsub_host(&self) -> String {
        format!("127.0.0.1:{}", self.pubsub_port)
    }

    /// Where the world's Pub/Sub is, as every process that talks to it is told.
    fn pubsub_env(&self) -> [(&'static str, String); 3] {
        [
            ("PUBSUB_EMULATOR_HOST", self.pubsub_host()),
            ("PUBSUB_PROJECT", PROJECT.to_owned()),
            ("PUBSUB_TOPIC", TOPIC.to_owned()),
        ]
    }

    /// Runs a one-shot `liquidity` command to its end and returns its stdout.
    fn run_liquidity(&self, args: &[&str], envs: &[(&str, String)]) -> Vec<u8> {
        let output = self
            .liquidity(args[0])
            .args(&args[1..])
            .envs(envs.iter().cloned())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "liquidity {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// The topics and subscriptions, created as the scripts do after every emulator start:
    /// before Debezium starts, or its first events would go to a topic nobody subscribed to.
    fn pubsub_setup(&self) {
        self.run_liquidity(&["pubsub-setup"], &self.pubsub_env());
    }

    fn liquidity(&self, role: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_liquidity"));
        command
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        command
    }

    fn spawn(&mut self, name: &'static str, mut command: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.procs.insert(name, Proc { child, command });
    }

    async fn start_emulator(&mut self) {
        let mut command = Command::new("java");
        command.args([
            "-Xms32m",
            "-Xmx256m",
            "-cp",
            &env("LQDTY_TEST_PUBSUB_CLASSPATH"),
            "com.google.cloud.pubsub.testing.v1.Main",
            "--host=127.0.0.1",
            &format!("--port={}", self.pubsub_port),
        ]);
        self.spawn("pubsub", command);
        self.wait_http(
            &format!("http://127.0.0.1:{}/", self.pubsub_port),
            "the Pub/Sub emulator",
        )
        .await;
        self.pubsub_setup();
    }

    fn start_sources(&mut self, overrides: &Value) -> String {
        let mut sources = serde_json::Map::new();
        let mut urls = serde_json::Map::new();
        for name in ["source_1", "source_2", "source_3"] {
            let port = free_port();
            let mut behaviour = json!({ "port": port, "completeAfter": "1500ms", "latency": "5ms" });
            if let Some(extra) = overrides.get(name).and_then(Value::as_object) {
                behaviour.as_object_mut().unwrap().extend(extra.clone());
            }
            sources.insert(name.to_owned(), behaviour);
            urls.insert(name.to_owned(), json!(format!("http://127.0.0.1:{port}")));
        }
        let mut command = self.liquidity("sources");
        command.env("SIMULATOR_CONFIG", json!({ "seed": 7, "sources": sources }).to_string());
        self.spawn("sources", command);
        Value::Object(urls).to_string()
    }

    async fn start_relay(&mut self, tenants_config: &str) {
        let relay_dir = self.dir.join("relay");
        let ready = relay_dir.join("ready");
        // The relay's configuration, rendered by `liquidity` as the scripts do. Debezium connects
        // as the replication role, never as a tenant database's owner.
        let mut envs = self.pubsub_env().to_vec();
        envs.extend([
            ("TENANTS_CONFIG", tenants_config.to_owned()),
            ("CDC_DATABASE_USER", self.dbs.replication.role.clone()),
            ("CDC_DATABASE_PASSWORD", self.dbs.replication.password.clone()),
        ]);
        let config = relay_dir.join("config.json");
        std::fs::write(&config, self.run_liquidity(&["cdc-config", "--format", "relay"], &envs)).unwrap();
        let status_addr = self
            .relay_status
            .trim_start_matches("http://")
            .trim_end_matches("/status");
        let mut command = Command::new(Path::new(&env("LQDTY_TEST_VENV")).join("bin/python"));
        command
            .arg(env("LQDTY_TEST_RELAY"))
            .current_dir(&relay_dir)
            .env("RELAY_CONFIG", &config)
            .env("RELAY_STATE_DIR", &relay_dir)
            .env("RELAY_READY_FILE", &ready)
            .env("RELAY_STATUS_ADDR", status_addr);
        self.spawn("relay", command);
        self.wait_relay_ready().await;
        // Least privilege: every slot streams as the replication role, not as a database owner.
        let databases: Vec<String> = self.dbs.tenants.iter().map(|t| t.database.clone()).collect();
        let mut admin = sqlx::PgConnection::connect(&liquidity_test_support::admin_url())
            .await
            .unwrap();
        let streaming_as: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE backend_type = 'walsender' AND datname = ANY($1)",
        )
        .bind(&databases)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(streaming_as, std::slice::from_ref(&self.dbs.replication.role));
    }

    /// Waits for the relay's ready file (written once every engine streams).
    async fn wait_relay_ready(&mut self) {
        let ready = self.dir.join("relay").join("ready");
        let started = Instant::now();
        while !ready.exists() {
            self.assert_running("relay");
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the relay did not stream within 180 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_http(&mut self, url: &str, what: &str) {
        let started = Instant::now();
        loop {
            if self.http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what} did not answer {url} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn assert_running(&mut self, name: &str) {
        let proc = self.procs.get_mut(name).unwrap();
        if let Ok(Some(status)) = proc.child.try_wait() {
            let log = self.dir.join(format!("{name}.log"));
            // CI keeps only what the test prints: the reason is in the log's last lines
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("{name} exited ({status}); {}, last lines:\n{tail}", log.display());
        }
    }

    /// The process id of a running process of the world.
    pub fn pid(&self, name: &str) -> u32 {
        self.procs[name].child.id()
    }

    /// `kill -9` one process.
    pub fn kill(&mut self, name: &str) {
        let proc = self.procs.get_mut(name).unwrap();
        proc.child.kill().unwrap();
        proc.child.wait().unwrap();
    }

    /// SIGTERM one process, and wait until it has exited.
    pub async fn terminate(&mut self, name: &str) {
        let pid = self.pid(name).to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(signalled.success(), "kill -TERM {name} ({pid})");
        let started = Instant::now();
        while self.procs.get_mut(name).unwrap().child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} did not stop within 60 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a killed or terminated process again, with the same command, and waits until it
    /// serves (the emulator answering, the relay streaming).
    pub async fn restart(&mut self, name: &'static str) {
        if name == "relay" {
            let _ = std::fs::remove_file(self.dir.join("relay").join("ready"));
        }
        let mut proc = self.procs.remove(name).unwrap();
        let child = proc.command.spawn().unwrap();
        proc.child = child;
        self.procs.insert(name, proc);
        match name {
            "pubsub" => {
                self.wait_http(
                    &format!("http://127.0.0.1:{}/", self.pubsub_port),
                    "the Pub/Sub emulator",
                )
                .await;
                self.pubsub_setup();
            }
            "relay" => self.wait_relay_ready().await,
            _ => {}
        }
    }

    /// Log lines of the CDC workers that report a reconciler repair. Zero proves that what
    /// completed was done by the CDC path.
    pub fn reconciler_repairs(&self) -> Vec<String> {
        ["cdc-worker", "cdc-worker-2"]
            .iter()
            .flat_map(|name| self.log_lines(name, "the reconciler repaired work the CDC path missed"))
            .collect()
    }

    /// The lines of process `name`'s log that contain `needle` (none if it never ran).
    pub fn log_lines(&self, name: &str, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// The world's Pub/Sub emulator over REST: `PATH` under the project, e.g.
    /// `topics/tenant-cdc:publish`.
    pub fn pubsub_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/v1/projects/{PROJECT}/{path}", self.pubsub_port)
    }

    pub async fn graphql(&self, query: &str, variables: Value, token: Option<&str>) -> Value {
        json_of(self.graphql_request(query, variables, token)).await
    }

    /// A GraphQL POST, to send as it is or from a client address (`x-forwarded-for`).
    pub fn graphql_request(&self, query: &str, variables: Value, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}/graphql", self.api))
            .json(&json!({ "query": query, "variables": variables }));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A fresh client address from 198.18.0.0/15, the range reserved for benchmarks: only ever
    /// written into `x-forwarded-for`, never connected to.
    pub fn client_address(&self) -> String {
        let n = self.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("198.{}.{}.{}", 18 + (n >> 16) % 2, (n >> 8) & 0xff, n & 0xff)
    }

    /// Registers a user in tenant `index`, from a client address of its own, and returns their
    /// token.
    pub async fn user(&self, index: usize) -> String {
        self.named_user(index, &format!("user-{}", uuid::Uuid::new_v4().simple()))
            .await
    }

    /// Like [`World::user`], with this username.
    pub async fn named_user(&self, index: usize, username: &str) -> String {
        let register = self
            .graphql_request(
                "mutation($input: RegisterInput!) { register(input: $input) { token } }",
                json!({ "input": { "tenantId": self.dbs.tenants[index].id, "username": username,
                                   "password": "correct-horse-battery", "taxId": "TAX-1" } }),
                None,
            )
            .header("x-forwarded-for", self.client_address());
        let body = json_of(register).await;
        body["data"]["register"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("register failed: {body}"))
            .to_owned()
    }

    /// Starts a report as a client that honours `UNAVAILABLE`: it waits the answer's
    /// `retryAfterSeconds` and tries again, three times at most. Such an answer means no
    /// connection was free in time and nothing was written (a burst on cold tenant pools, where
    /// every new connection hashes its password, on a loaded machine); any other error fails.
    pub async fn start_report(&self, token: &str) -> String {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let body = self
                .graphql("mutation { startReport { reportId } }", json!({}), Some(token))
                .await;
            if let Some(id) = body["data"]["startReport"]["reportId"].as_str() {
                return id.to_owned();
            }
            let error = &body["errors"][0]["extensions"];
            match error["retryAfterSeconds"].as_u64() {
                Some(seconds) if error["code"] == "UNAVAILABLE" && attempt < 3 => {
                    eprintln!("startReport attempt {attempt} answered UNAVAILABLE: retrying in {seconds} s");
                    tokio::time::sleep(Duration::from_secs(seconds)).await;
                }
                _ => panic!("startReport failed: {body}"),
            }
        }
    }

    pub async fn status(&self, token: &str, id: &str) -> String {
        let body = self
            .graphql(
                "query($id: ID!) { reportStatus(id: $id) { status } }",
                json!({ "id": id }),
                Some(token),
            )
            .await;
        body["data"]["reportStatus"]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("reportStatus failed: {body}"))
            .to_owned()
    }

    pub async fn report(&self, token: &str, id: &str) -> Value {
        let body = self
            .graphql(
                "query($id: ID!) { report(id: $id) { status startedAt finishedAt contents { id source status data lastRunAt } } }",
                json!({ "id": id }),
                Some(token),
            )
            .await;
        body["data"]["report"].clone()
    }

    /// Polls `reportStatus` until it is final, and returns it.
    pub async fn wait_final(&self, token: &str, id: &str, timeout: Duration) -> String {
        let started = Instant::now();
        loop {
            let status = self.status(token, id).await;
            if status != "in_progress" {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "report {id} still in progress after {timeout:?}; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A Temporal client of the world's namespace.
    pub async fn temporal_client(&self) -> temporalio_client::Client {
        let settings = liquidity_workflows::TemporalSettings {
            address: env("LQDTY_TEST_TEMPORAL_ADDRESS").parse().unwrap(),
            task_queue: self.task_queue.clone(),
            ..Default::default()
        };
        liquidity_workflows::connect(&settings).await.unwrap()
    }

    /// How many runs Temporal has for the workflow id (duplicates would be more than one).
    pub async fn workflow_runs(&self, workflow_id: &str) -> usize {
        use futures::StreamExt as _;
        let query = format!("WorkflowId = '{workflow_id}'");
        self.temporal_client()
            .await
            .list_workflows(query, Default::default())
            .collect::<Vec<_>>()
            .await
            .len()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("e2e world logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
