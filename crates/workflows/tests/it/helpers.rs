//! `spawn_app`: fresh tenant database, fake source, in-process worker on its own task queue.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use liquidity_core::reports::{self, REPORT_SOURCES, ReportContent};
use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use liquidity_core::{ReportContentId, TenantId, UserId};
use liquidity_test_support::TestDatabases;
use liquidity_workflows::{
    FetchOutcome, FetchPolicy, FetchReportContentWorkflow, SourceActivities, SourceClient, SourcesConfig, StartOutcome,
    TemporalSettings, Url, WorkflowStarter, connect, run_worker, workflow_id,
};
use sqlx::PgPool;
use temporalio_client::{Client, WorkflowGetResultOptions};
use tokio_util::sync::CancellationToken;

use crate::source::{Behaviour, FakeSource};

/// How long a test waits for a workflow result before failing.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The policy of the tests: fast polls, two bad answers tolerated.
pub fn test_policy() -> FetchPolicy {
    FetchPolicy {
        poll_interval: Duration::from_millis(200),
        deadline: Duration::from_secs(60 * 60),
        max_bad_answers: 2,
        http_timeout: Duration::from_secs(2),
    }
}

pub struct TestApp {
    pub tenant_id: TenantId,
    pub source: FakeSource,
    pub starter: WorkflowStarter,
    pub client: Client,
    /// The test's own pool (the worker has its own registry on its own runtime).
    pub pool: PgPool,
    worker: Option<WorkerThread>,
    settings: TemporalSettings,
    tenants_config: String,
    policy: FetchPolicy,
    // Last: the databases are dropped after everything that uses them.
    _dbs: TestDatabases,
}

/// The worker runs on a thread and runtime of its own: its future is not `Send`.
struct WorkerThread {
    shutdown: CancellationToken,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl WorkerThread {
    fn spawn(settings: &TemporalSettings, tenants_config: &str, sources_config: &str, policy: FetchPolicy) -> Self {
        let shutdown = CancellationToken::new();
        let worker_shutdown = shutdown.clone();
        let settings = settings.clone();
        let tenants_config = tenants_config.to_owned();
        let sources_config = sources_config.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let registry = Arc::new(TenantRegistry::new(
                    parse_tenants_config(&tenants_config)?,
                    PoolSettings::default(),
                ));
                let sources = SourceClient::new(SourcesConfig::parse(&sources_config)?, policy.http_timeout)?;
                let activities = SourceActivities::new(registry.clone(), sources, policy);
                let result = run_worker(&settings, activities, 100, worker_shutdown).await;
                registry.close().await;
                result
            })
        });
        Self { shutdown, thread }
    }

    /// Drains the worker and waits for its thread.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .unwrap()
            .expect("worker thread did not panic")
            .expect("worker stopped cleanly");
    }
}

pub async fn spawn_app(behaviour: Behaviour, policy: FetchPolicy) -> TestApp {
    liquidity_test_support::init_tracing();
    let dbs = TestDatabases::create(1, 5).await;
    let tenant_id = dbs.tenants[0].id;
    let tenants_config = dbs.tenants_config(5);
    let source = FakeSource::start(behaviour).await;
    let address = std::env::var("LQDTY_TEST_TEMPORAL_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:7243".to_owned());
    let settings = TemporalSettings {
        address: Url::parse(&address).expect("LQDTY_TEST_TEMPORAL_ADDRESS is a URL"),
        namespace: "default".to_owned(),
        task_queue: format!("lqdty-wf-test-{}", uuid::Uuid::new_v4().simple()),
    };

    let worker = WorkerThread::spawn(&settings, &tenants_config, &source.sources_config(), policy);
    let client = connect(&settings)
        .await
        .expect("test Temporal reachable (scripts/test.sh)");
    let starter = WorkflowStarter::new(client.clone(), settings.task_queue.clone());
    let pool = PgPool::connect(&dbs.tenants[0].url)
        .await
        .expect("connect to the test tenant");
    TestApp {
        tenant_id,
        source,
        starter,
        client,
        pool,
        worker: Some(worker),
        settings,
        tenants_config,
        policy,
        _dbs: dbs,
    }
}

impl TestApp {
    /// A new report of a random user; returns its `source_1` content (the other two stay in
    /// progress: no workflow is started for them).
    pub async fn new_content(&self) -> ReportContent {
        let report_id = reports::create_report(&self.pool, self.tenant_id, UserId::new_random(), &REPORT_SOURCES)
            .await
            .unwrap();
        reports::list_contents(&self.pool, report_id)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.source == "source_1")
            .unwrap()
    }

    pub async fn content(&self, id: ReportContentId) -> ReportContent {
        reports::find_content(&self.pool, id)
            .await
            .unwrap()
            .expect("content exists")
    }

    pub async fn start(&self, content: &ReportContent) -> StartOutcome {
        self.starter.ensure_started(self.tenant_id, content).await.unwrap()
    }

    /// The result of the content's workflow, waiting for it.
    pub async fn result(&self, content: &ReportContent) -> FetchOutcome {
        let handle = self
            .client
            .get_workflow_handle::<FetchReportContentWorkflow>(workflow_id(self.tenant_id, content.id));
        tokio::time::timeout(RESULT_TIMEOUT, handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .expect("workflow finished in time")
            .expect("workflow succeeded")
    }

    /// Starts the content's workflow and waits for its result.
    pub async fn fetch(&self, content: &ReportContent) -> FetchOutcome {
        self.start(content).await;
        self.result(content).await
    }

    /// Drains the worker and waits for it to stop; returns how long that took.
    pub async fn stop(mut self) -> Duration {
        self.stop_worker().await
    }

    /// Drains the running worker (in-flight activities are cancelled after the grace period
    /// and retried by Temporal); returns how long that took.
    pub async fn stop_worker(&mut self) -> Duration {
        let started = std::time::Instant::now();
        self.worker.take().expect("worker running").stop().await;
        started.elapsed()
    }

    /// Starts a fresh worker (new registry, new source client) on the same task queue.
    pub fn restart_worker(&mut self) {
        assert!(self.worker.is_none(), "stop the running worker first");
        let sources_config = self.source.sources_config();
        self.worker = Some(WorkerThread::spawn(
            &self.settings,
            &self.tenants_config,
            &sources_config,
            self.policy,
        ));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A failed test never reached `stop`: at least stop the worker polling.
        if let Some(worker) = &self.worker {
            worker.shutdown.cancel();
        }
    }
}
