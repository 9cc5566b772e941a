use std::sync::Arc;

use liquidity_core::tenancy::{PoolSettings, TenantRegistry, parse_tenants_config};
use liquidity_test_support::TestDatabases;

/// Fresh databases and a registry over them.
pub async fn registry_over(tenants: usize, max_connections: u32) -> (TestDatabases, Arc<TenantRegistry>) {
    liquidity_test_support::init_tracing();
    let dbs = TestDatabases::create(tenants, max_connections).await;
    let config = parse_tenants_config(&dbs.tenants_config(max_connections)).unwrap();
    (dbs, Arc::new(TenantRegistry::new(config, PoolSettings::default())))
}

/// One fresh tenant: its databases (dropped with the value), its id and its pool.
pub struct OneTenant {
    pub _dbs: TestDatabases,
    pub tenant: liquidity_core::TenantId,
    pub pool: sqlx::PgPool,
}

pub async fn one_tenant(max_connections: u32) -> OneTenant {
    let (dbs, registry) = registry_over(1, max_connections).await;
    let tenant = dbs.tenants[0].id;
    let pool = registry.pool(tenant).await.unwrap().clone();
    OneTenant {
        _dbs: dbs,
        tenant,
        pool,
    }
}
