//! The run-time switch from tenant id to that tenant's connection pool.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::TenantConfig;
use crate::ids::TenantId;

/// How every tenant pool of this process is sized beyond its `maxConnections`.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// How long a request waits for a free connection before it fails.
    pub acquire_timeout: Duration,
    /// Connections idle for longer than this are closed, so an idle tenant holds none.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Why no pool could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// The id is not in the registry. Callers must treat this as "no such tenant", never fall
    /// back to another database.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// The tenant's database could not be reached when its pool was first created.
    #[error("cannot connect to the database of tenant {tenant} ({database})")]
    Connect {
        /// The tenant.
        tenant: TenantId,
        /// `host:port/database`.
        database: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
}

struct TenantSlot {
    config: TenantConfig,
    pool: OnceCell<PgPool>,
}

/// All tenants of `TENANTS_CONFIG`, each with one pool that is created on first use and then
/// shared by every request of this process.
pub struct TenantRegistry {
    tenants: BTreeMap<TenantId, TenantSlot>,
    settings: PoolSettings,
    pools_created: AtomicUsize,
}

impl TenantRegistry {
    /// A registry over already validated tenants. No connection is opened yet.
    pub fn new(tenants: Vec<TenantConfig>, settings: PoolSettings) -> Self {
        let tenants = tenants
            .into_iter()
            .map(|config| {
                (
                    config.id,
                    TenantSlot {
                        config,
                        pool: OnceCell::new(),
                    },
                )
            })
            .collect();
        Self {
            tenants,
            settings,
            pools_created: AtomicUsize::new(0),
        }
    }

    /// Every tenant, ordered by id.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantConfig> {
        self.tenants.values().map(|slot| &slot.config)
    }

    /// The configuration of one tenant.
    ///
    /// # Errors
    /// [`TenancyError::UnknownTenant`] when the id is not registered.
    pub fn tenant(&self, id: TenantId) -> Result<&TenantConfig, TenancyError> {
        self.slot(id).map(|slot| &slot.config)
    }

    /// Whether the id is registered.
    pub fn contains(&self, id: TenantId) -> bool {
        self.tenants.contains_key(&id)
    }

    /// The pool of the tenant's own database.
    ///
    /// The first call for a tenant connects; concurrent first calls wait for that one
    /// connection attempt instead of racing to build pools of their own (single flight). A
    /// failed attempt is not remembered, so the next call tries again.
    ///
    /// # Errors
    /// [`TenancyError::UnknownTenant`] for an unregistered id, [`TenancyError::Connect`] when
    /// the database cannot be reached on first use.
    #[tracing::instrument(skip(self), fields(tenant_id = %id))]
    pub async fn pool(&self, id: TenantId) -> Result<&PgPool, TenancyError> {
        let slot = self.slot(id)?;
        // Boxed: sqlx's connect future is ~15 KiB (release build), and inline it would make
        // every caller's future that large for the life of the caller, long after the pool
        // exists: 15 KiB of the workflow worker's memory per polling content.
        slot.pool
            .get_or_try_init(|| Box::pin(async {
                let config = &slot.config;
                let pool = crate::db::pool_options()
                    .max_connections(config.max_connections)
                    .min_connections(0)
                    .acquire_timeout(self.settings.acquire_timeout)
                    .idle_timeout(self.settings.idle_timeout)
                    .connect_with(config.connect_options.clone())
                    .await
                    .map_err(|source| TenancyError::Connect {
                        tenant: id,
                        database: config.database(),
                        source,
                    })?;
                self.pools_created.fetch_add(1, Ordering::Relaxed);
                tracing::info!(database = %config.database(), max_connections = config.max_connections, "tenant pool created");
                Ok(pool)
            }))
            .await
    }

    /// Every tenant whose pool exists, with that pool: what pool gauges sample (a tenant this
    /// process never served has no pool, and no connection to report).
    pub fn created_pools(&self) -> impl Iterator<Item = (&TenantConfig, &PgPool)> {
        self.tenants
            .values()
            .filter_map(|slot| slot.pool.get().map(|pool| (&slot.config, pool)))
    }

    /// How many pools this registry has created so far (at most one per tenant).
    pub fn pools_created(&self) -> usize {
        self.pools_created.load(Ordering::Relaxed)
    }

    /// Closes every pool that was created, waiting for checked-out connections to return.
    pub async fn close(&self) {
        for slot in self.tenants.values() {
            if let Some(pool) = slot.pool.get() {
                pool.close().await;
            }
        }
    }

    fn slot(&self, id: TenantId) -> Result<&TenantSlot, TenancyError> {
        self.tenants.get(&id).ok_or(TenancyError::UnknownTenant(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looking_up_a_pool_costs_its_caller_no_room_for_creating_one() {
        // Arrange: a long-lived caller (a content's poll loop) holds this future's state in its own
        let registry = TenantRegistry::new(Vec::new(), PoolSettings::default());

        // Act
        let lookup = registry.pool(TenantId::new_random());

        // Assert: the connect future (~15 KiB) is boxed, only allocated while a pool is created
        assert!(
            std::mem::size_of_val(&lookup) < 1024,
            "{} bytes",
            std::mem::size_of_val(&lookup)
        );
    }
}
