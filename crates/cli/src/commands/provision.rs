//! `liquidity provision`: the roles and databases of least privilege, as a superuser.

use anyhow::Context as _;
use liquidity_core::db;
use liquidity_core::provision::{self, ProvisionPlan, RoleLogin};
use liquidity_core::tenancy::parse_tenants_config;
use secrecy::ExposeSecret as _;

use crate::args::ProvisionArgs;

pub async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let admin = db::parse_database_url(args.pg_admin_url.expose_secret()).context("PG_ADMIN_URL is invalid")?;
    let tenants = parse_tenants_config(&args.tenants_config)?;
    let catalog = db::parse_database_url(&args.catalog_database_url).context("CATALOG_DATABASE_URL is invalid")?;
    let replication = match (args.cdc_database_user, args.cdc_database_password) {
        (Some(user), Some(password)) => Some(RoleLogin::new(user, password.expose_secret())),
        (None, None) => None,
        _ => anyhow::bail!("CDC_DATABASE_USER and CDC_DATABASE_PASSWORD go together"),
    };
    let plan = ProvisionPlan::new(&catalog, &tenants, replication)?;
    provision::provision(&admin, &plan).await?;
    tracing::info!(
        server = %db::describe(&admin),
        databases = plan.databases().len(),
        replication_role = plan.replication().map(|r| r.role.as_str()),
        "provisioned"
    );
    Ok(())
}
