//! `spawn_app`: fresh tenant database, fake source (or the real simulator), in-process worker on
//! its own task queue.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use liquidity_core::reports::{self, REPORT_SOURCES, ReportContent, ReportStatus};
use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use liquidity_core::{ReportContentId, TenantId, UserId};
use liquidity_test_support::TestDatabases;
use liquidity_workflows::worker::WorkerTuning;
use liquidity_workflows::workflows::POLL_SOURCE_HEARTBEAT_TIMEOUT;
use liquidity_workflows::{
    FetchOutcome, FetchPolicy, FetchReportContentWorkflow, SourceActivities, SourceClient, SourcesConfig, StartOutcome,
    TemporalSettings, Url, WorkflowStarter, connect, run_worker, workflow_id,
};
use sqlx::PgPool;
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowHandle};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use tokio_util::sync::CancellationToken;

use crate::source::{Behaviour, FakeSource};

/// How long a test waits for a workflow result before failing: longer than the longest pass a
/// test runs (the heartbeat timeout plus 2 s).
pub const RESULT_TIMEOUT: Duration = POLL_SOURCE_HEARTBEAT_TIMEOUT.saturating_add(Duration::from_secs(60));

/// The policy of the tests: fast polls, two bad answers tolerated.
pub fn test_policy() -> FetchPolicy {
    FetchPolicy {
        poll_interval: Duration::from_millis(200),
        deadline: Duration::from_secs(60 * 60),
        max_bad_answers: 2,
        http_timeout: Duration::from_secs(2),
        max_body: 1024 * 1024,
    }
}

/// The test stack's Temporal.
pub fn temporal_address() -> Url {
    let address = std::env::var("LQDTY_TEST_TEMPORAL_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:7243".to_owned());
    Url::parse(&address).expect("LQDTY_TEST_TEMPORAL_ADDRESS is a URL")
}

/// Settings on a task queue of the test's own.
pub fn test_settings(address: Url) -> TemporalSettings {
    TemporalSettings {
        address,
        namespace: "default".to_owned(),
        task_queue: format!("lqdty-wf-test-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// The log lines of one worker thread (its own subscriber, INFO and above, no colours).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|line| line.contains(needle)).count()
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let buffer = self.0.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || CaptureWriter(buffer.clone()))
            .finish()
    }
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    sources_config: String,
    policy: FetchPolicy,
    // Last: the databases are dropped after everything that uses them.
    _dbs: TestDatabases,
}

/// The worker runs on a thread and runtime of its own: its future is not `Send`.
pub struct WorkerThread {
    shutdown: CancellationToken,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl WorkerThread {
    /// A worker with the test's settings; with `logs`, its thread logs there (on a
    /// current-thread runtime, so every task of the worker logs on that thread).
    pub fn spawn(
        settings: &TemporalSettings,
        tenants_config: &str,
        sources_config: &str,
        policy: FetchPolicy,
        logs: Option<LogCapture>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let worker_shutdown = shutdown.clone();
        let settings = settings.clone();
        let tenants_config = tenants_config.to_owned();
        let sources_config = sources_config.to_owned();
        let thread = std::thread::spawn(move || {
            let _logging = logs.map(|logs| tracing::subscriber::set_default(logs.subscriber()));
            let runtime = if _logging.is_some() {
                tokio::runtime::Builder::new_current_thread().enable_all().build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?
            };
            runtime.block_on(async move {
                let registry = Arc::new(TenantRegistry::new(
                    parse_tenants_config(&tenants_config)?,
                    PoolSettings::default(),
                ));
                let sources = SourceClient::new(
                    SourcesConfig::parse(&sources_config)?,
                    policy.http_timeout,
                    policy.max_body,
                )?;
                let activities = SourceActivities::new(registry.clone(), sources, policy);
                let result = run_worker(
                    &settings,
                    activities,
                    WorkerTuning {
                        max_activities: 100,
                        ..WorkerTuning::default()
                    },
                    worker_shutdown,
                )
                .await;
                registry.close().await;
                result
            })
        });
        Self { shutdown, thread }
    }

    /// Whether the worker has returned (by itself, or after [`Self::stop`]).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Drains the worker and waits for its thread.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .unwrap()
            .expect("worker thread did not panic")
            .expect("worker stopped cleanly");
    }
}

pub async fn spawn_app(behaviour: Behaviour, policy: FetchPolicy) -> TestApp {
    spawn_app_with(behaviour, policy, None).await
}

/// Like [`spawn_app`], with the worker calling the sources of `sources_config` (e.g. the real
/// simulator's) instead of the fake source (which then sees nothing).
pub async fn spawn_app_with(behaviour: Behaviour, policy: FetchPolicy, sources_config: Option<String>) -> TestApp {
    liquidity_test_support::init_tracing();
    let dbs = TestDatabases::create(1, 5).await;
    let tenant_id = dbs.tenants[0].id;
    let tenants_config = dbs.tenants_config(5);
    let source = FakeSource::start(behaviour).await;
    let sources_config = sources_config.unwrap_or_else(|| source.sources_config());
    let settings = test_settings(temporal_address());

    let worker = WorkerThread::spawn(&settings, &tenants_config, &sources_config, policy, None);
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
        sources_config,
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

    /// The handle of the content's workflow.
    fn workflow(&self, content: &ReportContent) -> WorkflowHandle<Client, FetchReportContentWorkflow> {
        self.client
            .get_workflow_handle::<FetchReportContentWorkflow>(workflow_id(self.tenant_id, content.id))
    }

    /// The result of the content's workflow, waiting for it.
    pub async fn result(&self, content: &ReportContent) -> FetchOutcome {
        let handle = self.workflow(content);
        tokio::time::timeout(RESULT_TIMEOUT, handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .expect("workflow finished in time")
            .expect("workflow succeeded")
    }

    /// The events of the content's workflow history so far, oldest first.
    pub async fn history(&self, content: &ReportContent) -> Vec<Attributes> {
        use futures::TryStreamExt as _;
        use temporalio_client::WorkflowFetchHistoryOptions;

        let handle = self.workflow(content);
        let events: Vec<_> = handle
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .try_collect()
            .await
            .expect("the workflow's history");
        events.into_iter().filter_map(|event| event.attributes).collect()
    }

    /// The activity attempts of the content's workflow, from its history: the attempt number of
    /// every `ActivityTaskStarted` (Temporal records the started event of a retried activity
    /// once, with the attempt that ended it) and the count of `ActivityTaskTimedOut`.
    pub async fn activity_attempts(&self, content: &ReportContent) -> (Vec<i32>, usize) {
        let mut started = Vec::new();
        let mut timed_out = 0;
        for event in self.history(content).await {
            match event {
                Attributes::ActivityTaskStartedEventAttributes(a) => started.push(a.attempt),
                Attributes::ActivityTaskTimedOutEventAttributes(_) => timed_out += 1,
                _ => {}
            }
        }
        (started, timed_out)
    }

    /// Asks Temporal to cancel the content's workflow.
    pub async fn cancel(&self, content: &ReportContent) {
        use temporalio_client::WorkflowCancelOptions;

        self.workflow(content)
            .cancel(WorkflowCancelOptions::default())
            .await
            .expect("the cancellation request");
    }

    /// The `pollSource` activity of the content's workflow as the server sees it while it runs:
    /// its attempt, and the seconds from the attempt's start to the last heartbeat the server
    /// received (`None` before the first). `None` when no activity is pending.
    pub async fn pending_poll(&self, content: &ReportContent) -> Option<(i32, Option<i64>)> {
        use temporalio_client::WorkflowDescribeOptions;

        let handle = self.workflow(content);
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .expect("the workflow's description");
        let activity = description.raw_description.pending_activities.into_iter().next()?;
        let started = activity.last_started_time.map(|t| t.seconds);
        let heartbeat_after = activity
            .last_heartbeat_time
            .zip(started)
            .map(|(heartbeat, started)| heartbeat.seconds - started);
        Some((activity.attempt, heartbeat_after))
    }

    /// Starts the content's workflow and waits for its result.
    pub async fn fetch(&self, content: &ReportContent) -> FetchOutcome {
        self.start(content).await;
        self.result(content).await
    }

    /// Fetches the content, which must end failed with its reason recorded; returns the reason.
    pub async fn fetch_failing(&self, content: &ReportContent) -> String {
        let outcome = self.fetch(content).await;
        let row = self.content(content.id).await;
        assert_eq!(row.status, ReportStatus::Failed);
        let reason = row.data.unwrap();
        assert_eq!(outcome, FetchOutcome::Failed { reason: reason.clone() });
        reason
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
        self.worker = Some(WorkerThread::spawn(
            &self.settings,
            &self.tenants_config,
            &self.sources_config,
            self.policy,
            None,
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
