//! `liquidity migrate`: catalog first, then every tenant database, each as its owner (the user
//! of its URL); then the owner grants Debezium's replication role its tables.

use anyhow::Context as _;
use liquidity_core::{catalog, db};

use crate::args::MigrateArgs;

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let registry = args.tenancy.registry()?;
    let catalog_pool = args.catalog.pool()?;
    db::CATALOG_MIGRATOR
        .run(&catalog_pool)
        .await
        .context("migrating the catalog database failed")?;
    tracing::info!("catalog migrated");
    for tenant in registry.tenants() {
        catalog::upsert_tenant(&catalog_pool, tenant)
            .await
            .with_context(|| format!("registering tenant {} in the catalog failed", tenant.name))?;
        let pool = registry.pool(tenant.id).await?;
        db::TENANT_MIGRATOR
            .run(pool)
            .await
            .with_context(|| format!("migrating tenant {} ({}) failed", tenant.name, tenant.database()))?;
        if let Some(role) = &args.cdc_database_user {
            let mut conn = pool.acquire().await?;
            db::grant_cdc_access(&mut conn, role)
                .await
                .with_context(|| format!("granting {role} the CDC tables of tenant {} failed", tenant.name))?;
        }
        tracing::info!(tenant = %tenant.name, tenant_id = %tenant.id, database = %tenant.database(), "tenant migrated");
    }
    registry.close().await;
    catalog_pool.close().await;
    Ok(())
}
