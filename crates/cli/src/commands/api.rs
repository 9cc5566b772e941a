//! `liquidity api`: the GraphQL server.

use anyhow::Context as _;
use liquidity_api::auth::TokenService;
use liquidity_api::{ApiDeps, ApiSettings, Application};
use liquidity_core::accounts::{Accounts, PasswordHasher};

use crate::args::ApiArgs;

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let registry = args.tenancy.registry()?;
    let catalog = args.catalog.pool()?;
    let tokens = TokenService::new(&args.jwt_secret, args.jwt_ttl)?;
    let hasher = PasswordHasher::new().context("password hasher")?;
    let deps = ApiDeps {
        accounts: Accounts::new(catalog.clone(), hasher),
        registry: registry.clone(),
        tokens,
    };
    let app = Application::build(
        &ApiSettings {
            listen_addr: args.listen_addr,
        },
        deps,
    )
    .await
    .with_context(|| format!("cannot listen on LISTEN_ADDR {}", args.listen_addr))?;
    tracing::info!(addr = %app.local_addr()?, tenants = registry.tenants().count(), "GraphQL API listening on /graphql");
    let shutdown = super::shutdown_token();
    app.run_until_stopped(shutdown.cancelled_owned())
        .await
        .context("server failed")?;
    registry.close().await;
    catalog.close().await;
    tracing::info!("API stopped");
    Ok(())
}
