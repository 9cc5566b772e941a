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
