//! Connection-pool gauges, sampled when `/metrics` is scraped.
//!
//! Sampling at scrape time costs nothing between scrapes and is never stale: sqlx keeps the
//! counts itself (`Pool::size`, `Pool::num_idle`), so a scrape reads a few atomics per pool.

use std::sync::Arc;

use liquidity_core::tenancy::TenantRegistry;
use sqlx::PgPool;

/// `lqdty_db_pool_connections{pool, tenant, state}`: open connections of a pool, `in_use` or
/// `idle`. `pool` is `tenant` (then `tenant` is the tenant id) or `catalog` (`tenant` empty).
pub const POOL_CONNECTIONS: &str = "lqdty_db_pool_connections";
/// `lqdty_db_pool_max_connections{pool, tenant}`: the pool's bound; `in_use` at the bound
/// means requests wait for a connection (`TENANT_ACQUIRE_TIMEOUT`).
pub const POOL_MAX_CONNECTIONS: &str = "lqdty_db_pool_max_connections";

/// The pools of one process: its tenant registry's, and the catalog's where it has one (API).
#[derive(Clone)]
pub struct PoolGauges {
    registry: Arc<TenantRegistry>,
    catalog: Option<PgPool>,
}

impl PoolGauges {
    /// The pools of `registry`.
    pub fn new(registry: Arc<TenantRegistry>) -> Self {
        Self {
            registry,
            catalog: None,
        }
    }

    /// Also the catalog's pool.
    #[must_use]
    pub fn with_catalog(mut self, catalog: PgPool) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Sets the gauges from the pools' current counts.
    pub fn record(&self) {
        if let Some(catalog) = &self.catalog {
            let max = catalog.options().get_max_connections();
            record_pool(catalog, max, "catalog", String::new());
        }
        for (tenant, pool) in self.registry.created_pools() {
            record_pool(pool, tenant.max_connections, "tenant", tenant.id.to_string());
        }
    }
}

fn record_pool(pool: &PgPool, max: u32, kind: &'static str, tenant: String) {
    let open = pool.size();
    // `num_idle` and `size` are read one after the other: clamp so a connection that went idle
    // in between never makes "in use" negative.
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(open);
    metrics::gauge!(POOL_CONNECTIONS, "pool" => kind, "tenant" => tenant.clone(), "state" => "in_use")
        .set(f64::from(open - idle));
    metrics::gauge!(POOL_CONNECTIONS, "pool" => kind, "tenant" => tenant.clone(), "state" => "idle")
        .set(f64::from(idle));
    metrics::gauge!(POOL_MAX_CONNECTIONS, "pool" => kind, "tenant" => tenant).set(f64::from(max));
}
