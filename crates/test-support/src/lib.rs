//! Helpers for tests against the real stack (`scripts/test.sh` brings it up).
//!
//! Every test run gets databases of its own, named `lqt_<random>_*`, each owned by a login role
//! of the same name, migrated on creation and dropped with their roles when the
//! [`TestDatabases`] value is dropped, also when the test panics.
//!
//! # Layout
//! - [`TestDatabases`]: a fresh catalog plus N tenant databases and their `TENANTS_CONFIG`.
//! - [`wait_until`]: poll a condition with a deadline instead of sleeping.
//! - [`free_port`]: a local port for a process that starts listening later.
//! - [`init_tracing`]: quiet test logs unless `TEST_LOG` is set.
//! - [`graphql_ws`]: a graphql-ws client over a real websocket (subscription tests).

pub mod graphql_ws;

use std::future::Future;
use std::sync::Once;
use std::time::{Duration, Instant};

use liquidity_core::TenantId;
use liquidity_core::db::{CATALOG_MIGRATOR, TENANT_MIGRATOR, grant_cdc_access};
use liquidity_core::provision::{ProvisionPlan, RoleLogin, provision};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

/// Admin (superuser) URL of the test stack's PostgreSQL (`postgres` database), overridable with
/// `LQDTY_TEST_PG_ADMIN_URL`. For provisioning and for assertions that need a superuser
/// (`pg_stat_activity`, replication slots); services under test connect as the owner roles.
pub fn admin_url() -> String {
    std::env::var("LQDTY_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:55442/postgres".to_owned())
}

/// A URL of the test server for another database, as the admin.
pub fn database_url(database: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{database}")
}

/// One tenant of a [`TestDatabases`].
#[derive(Clone, Debug)]
pub struct TestTenant {
    /// Fresh random tenant id.
    pub id: TenantId,
    /// `t1`, `t2`...
    pub name: String,
    /// The tenant's own database.
    pub database: String,
    /// URL of that database, as its owner role (a role of its own, random password).
    pub url: String,
}

/// A login role of a [`TestDatabases`] and its random password.
#[derive(Clone, Debug)]
pub struct TestRole {
    /// Role name, `lqt_<random>_<what>`.
    pub role: String,
    /// Random password.
    pub password: String,
}

impl TestRole {
    fn fresh(role: String) -> Self {
        Self {
            role,
            password: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// A fresh, migrated catalog database and `n` tenant databases, dropped on drop.
///
/// They are provisioned like the dev stack's, through [`liquidity_core::provision`]: each
/// database is owned by a login role of its own (nothing else may connect to it), and a
/// replication role, [`TestDatabases::replication`], may connect to the tenant databases for
/// Debezium. The roles are dropped with the databases.
pub struct TestDatabases {
    /// Name of the catalog database.
    pub catalog: String,
    /// The tenants, in order `t1..tn`.
    pub tenants: Vec<TestTenant>,
    /// The replication role for Debezium (the relay's `CDC_DATABASE_USER`/`CDC_DATABASE_PASSWORD`).
    pub replication: TestRole,
    catalog_owner: TestRole,
    names: Vec<String>,
    roles: Vec<String>,
}

impl TestDatabases {
    /// Provisions and migrates the databases; the tenants are registered in the catalog.
    ///
    /// # Panics
    /// When the test stack's PostgreSQL is not reachable: run the tests with `scripts/test.sh`.
    pub async fn create(tenant_count: usize, max_connections: u32) -> Self {
        let prefix = format!("lqt_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let catalog = format!("{prefix}_catalog");
        let catalog_owner = TestRole::fresh(catalog.clone());
        let tenants: Vec<(TestTenant, TestRole)> = (1..=tenant_count)
            .map(|i| {
                let database = format!("{prefix}_t{i}");
                let owner = TestRole::fresh(database.clone());
                let tenant = TestTenant {
                    id: TenantId::new_random(),
                    name: format!("t{i}"),
                    url: role_url(&owner, &database),
                    database,
                };
                (tenant, owner)
            })
            .collect();
        let replication = TestRole::fresh(format!("{prefix}_cdc"));
        let mut names = vec![catalog.clone()];
        names.extend(tenants.iter().map(|(t, _)| t.database.clone()));
        let mut roles = vec![catalog_owner.role.clone(), replication.role.clone()];
        roles.extend(tenants.iter().map(|(_, owner)| owner.role.clone()));
        let this = Self {
            catalog,
            tenants: tenants.into_iter().map(|(t, _)| t).collect(),
            replication,
            catalog_owner,
            names,
            roles,
        };

        let registry = liquidity_core::tenancy::parse_tenants_config(&this.tenants_config(max_connections))
            .expect("valid test TENANTS_CONFIG");
        let catalog_options = liquidity_core::db::parse_database_url(&this.catalog_url()).expect("valid catalog URL");
        let plan = ProvisionPlan::new(
            &catalog_options,
            &registry,
            Some(RoleLogin::new(&this.replication.role, &this.replication.password)),
        )
        .expect("valid test provisioning plan");
        provision(&admin_options(), &plan)
            .await
            .unwrap_or_else(|e| panic!("provisioning the test databases failed: {e:#}"));

        let mut catalog = PgConnection::connect(&this.catalog_url())
            .await
            .expect("connect to test catalog");
        CATALOG_MIGRATOR.run(&mut catalog).await.expect("migrate test catalog");
        for (tenant, config) in this.tenants.iter().zip(&registry) {
            liquidity_core::catalog::upsert_tenant(&mut catalog, config)
                .await
                .expect("register test tenant");
            let mut conn = PgConnection::connect(&tenant.url)
                .await
                .expect("connect to test tenant");
            TENANT_MIGRATOR.run(&mut conn).await.expect("migrate test tenant");
            grant_cdc_access(&mut conn, &this.replication.role)
                .await
                .expect("grant the replication role its tables");
        }
        this
    }

    /// URL of the catalog database.
    pub fn catalog_url(&self) -> String {
        role_url(&self.catalog_owner, &self.catalog)
    }

    /// The `TENANTS_CONFIG` JSON of these tenants.
    pub fn tenants_config(&self, max_connections: u32) -> String {
        let entries: Vec<serde_json::Value> = self
            .tenants
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id, "name": t.name, "description": format!("test tenant {}", t.name),
                    "databaseUrl": t.url, "maxConnections": max_connections,
                })
            })
            .collect();
        serde_json::Value::Array(entries).to_string()
    }

    /// A direct connection to one tenant's database, for assertions.
    pub async fn connect(&self, tenant: usize) -> PgConnection {
        PgConnection::connect(&self.tenants[tenant].url)
            .await
            .expect("connect to test tenant")
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        // Drop cannot await, and may run on a runtime thread: do the cleanup on a thread of
        // its own with a runtime of its own.
        let names = std::mem::take(&mut self.names);
        let roles = std::mem::take(&mut self.roles);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(drop_databases_and_roles(names, roles));
        });
        let _ = cleanup.join();
    }
}

async fn drop_databases_and_roles(names: Vec<String>, roles: Vec<String>) {
    let mut admin = admin_connection().await;
    // Replication slots (Debezium's) pin a database: they must go first.
    let _ = sqlx::query(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = ANY($1) AND active",
    )
    .bind(&names)
    .execute(&mut admin)
    .await;
    for _ in 0..50 {
        let dropped = sqlx::query(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE database = ANY($1) AND NOT active",
        )
        .bind(&names)
        .execute(&mut admin)
        .await;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots WHERE database = ANY($1)")
            .bind(&names)
            .fetch_one(&mut admin)
            .await
            .unwrap_or(0);
        if dropped.is_ok() && left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in names {
        if let Err(e) = admin
            .execute(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .await
        {
            eprintln!("could not drop test database {name}: {e}");
        }
    }
    // A role owns objects only in its own databases, which are gone now.
    for role in roles {
        if let Err(e) = admin
            .execute(sqlx::AssertSqlSafe(format!(r#"DROP ROLE IF EXISTS "{role}""#)))
            .await
        {
            eprintln!("could not drop test role {role}: {e}");
        }
    }
}

fn admin_options() -> PgConnectOptions {
    admin_url().parse().expect("LQDTY_TEST_PG_ADMIN_URL is a postgres URL")
}

/// A URL of the test server for `database`, as `role`. Test names and passwords are
/// `[a-z0-9_]`, so nothing needs percent-encoding.
fn role_url(role: &TestRole, database: &str) -> String {
    let admin = admin_options();
    format!(
        "postgres://{}:{}@{}:{}/{database}",
        role.role,
        role.password,
        admin.get_host(),
        admin.get_port()
    )
}

async fn admin_connection() -> PgConnection {
    admin_options().connect().await.unwrap_or_else(|e| {
        panic!(
            "test PostgreSQL unreachable at {} ({e}); run the tests with scripts/test.sh",
            admin_url()
        )
    })
}

/// Ports [`free_port`] returned in this process: a port is free until its process starts
/// listening, so without this two of a world's processes could be given the same one.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A local port that is free now, for a process that starts listening on it later, and that no
/// earlier call in this process returned.
///
/// Picked below Linux's ephemeral range (32768-60999), never with `bind(":0")`: that hands out a
/// port of the range every outgoing connection takes its local port from, so a connection
/// opened before the listener starts (a pool, Temporal, Pub/Sub) can take it, and the listener
/// then fails at start with "address already in use".
pub fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    const EPHEMERAL: u16 = 32_768;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let offset = uuid::Uuid::new_v4().as_u128() % u128::from(EPHEMERAL - LOW);
        let port = LOW + u16::try_from(offset).expect("below the range's width");
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
}

/// Polls `condition` every 50 ms until it is true or `timeout` passes.
///
/// # Panics
/// With `what` in the message when the condition did not hold in time.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Test logs go to the test writer, and only when `TEST_LOG` is set (e.g. `TEST_LOG=debug`).
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_hands_out_a_port_twice_in_a_process() {
        // Arrange: 500 draws from ~12,800 ports: drawn at random alone, two would match
        // with a probability above 99.99%
        let draws = 500;

        // Act
        let ports: std::collections::BTreeSet<u16> = (0..draws).map(|_| free_port()).collect();

        // Assert
        assert_eq!(ports.len(), draws);
        assert!(ports.iter().all(|port| (20_000..32_768).contains(port)), "{ports:?}");
    }
}
