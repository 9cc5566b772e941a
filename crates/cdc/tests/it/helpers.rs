use std::collections::HashMap;
use std::sync::Arc;

use liquidity_cdc::CdcDeps;
use liquidity_core::reports::{self, REPORT_SOURCES, ReportContent};
use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use liquidity_core::{ReportId, TenantId, UserId};
use liquidity_test_support::TestDatabases;
use liquidity_workflows::starter::WorkflowState;
use liquidity_workflows::{TemporalSettings, WorkflowStarter};
use serde_json::{Value, json};

pub struct Harness {
    pub dbs: TestDatabases,
    pub deps: Arc<CdcDeps>,
    pub temporal: TemporalSettings,
}

pub async fn harness() -> Harness {
    liquidity_test_support::init_tracing();
    // As in `main`: every TLS stack of ours runs on ring, installed once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dbs = TestDatabases::create(2, 5).await;
    let registry = Arc::new(TenantRegistry::new(
        parse_tenants_config(&dbs.tenants_config(5)).unwrap(),
        PoolSettings::default(),
    ));
    let address = std::env::var("LQDTY_TEST_TEMPORAL_ADDRESS").unwrap_or_else(|_| "http://127.0.0.1:7243".to_owned());
    let settings = TemporalSettings {
        address: address.parse().unwrap(),
        task_queue: format!("cdc-test-{}", uuid::Uuid::new_v4()),
        ..TemporalSettings::default()
    };
    let client = liquidity_workflows::connect(&settings)
        .await
        .expect("test Temporal reachable");
    let starter = WorkflowStarter::new(client, settings.task_queue.clone());
    Harness {
        dbs,
        deps: Arc::new(CdcDeps { registry, starter }),
        temporal: settings,
    }
}

impl Harness {
    pub fn tenant(&self, index: usize) -> TenantId {
        self.dbs.tenants[index].id
    }

    /// A new report of tenant `index` and its contents.
    pub async fn report(&self, index: usize) -> (ReportId, Vec<ReportContent>) {
        let tenant = self.tenant(index);
        let pool = self.deps.registry.pool(tenant).await.unwrap();
        let id = reports::create_report(pool, tenant, UserId::new_random(), &REPORT_SOURCES)
            .await
            .unwrap();
        (id, reports::list_contents(pool, id).await.unwrap())
    }

    /// Whether Temporal knows the content's workflow (without starting it).
    pub async fn workflow_exists(&self, index: usize, content: &ReportContent) -> bool {
        self.workflow_started_at(index, content).await.is_some()
    }

    /// When Temporal started the latest run of the content's workflow; `None` before it exists.
    pub async fn workflow_started_at(&self, index: usize, content: &ReportContent) -> Option<std::time::SystemTime> {
        let client = liquidity_workflows::connect(&self.temporal).await.unwrap();
        let id = liquidity_workflows::workflow_id(self.tenant(index), content.id);
        client
            .get_workflow_handle::<liquidity_workflows::FetchReportContentWorkflow>(id)
            .describe(Default::default())
            .await
            .ok()
            .and_then(|description| description.start_time())
    }

    /// Where the content's workflow stands.
    pub async fn workflow_state(&self, index: usize, content: &ReportContent) -> WorkflowState {
        self.deps.starter.state(self.tenant(index), content.id).await.unwrap()
    }

    pub async fn content(&self, index: usize, content: &ReportContent) -> ReportContent {
        let pool = self.deps.registry.pool(self.tenant(index)).await.unwrap();
        reports::find_content(pool, content.id).await.unwrap().unwrap()
    }
}

/// A Debezium change event value (schemas disabled), as the relay publishes it.
pub fn event(
    tenant: TenantId,
    table: &str,
    op: &str,
    before: Option<&ReportContent>,
    after: Option<&ReportContent>,
) -> Vec<u8> {
    json!({
        "before": before.map(row), "after": after.map(row), "op": op, "ts_ms": 1,
        "source": { "connector": "postgresql", "name": tenant.to_string(), "db": "lqdty", "schema": "public",
                    "table": table, "lsn": 1 }
    })
    .to_string()
    .into_bytes()
}

fn row(content: &ReportContent) -> Value {
    json!({
        "id": content.id, "report_id": content.report_id, "source": content.source, "status": content.status,
        "data": content.data, "created_at": content.created_at, "last_run_at": content.last_run_at,
    })
}

pub fn no_attributes() -> HashMap<String, String> {
    HashMap::new()
}
