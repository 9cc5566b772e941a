//! `liquidity api`: the GraphQL server.

use std::sync::Arc;

use anyhow::Context as _;
use liquidity_api::auth::TokenService;
use liquidity_api::throttle::{IpQuota, IpThrottle};
use liquidity_api::{ApiDeps, ApiSettings, Application};
use liquidity_core::accounts::{Accounts, HashLimits, PasswordHasher};

use crate::args::ApiArgs;

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    // Before anything records: `/metrics` is served on the API's own port (see the router).
    liquidity_observability::recorder::install().context("cannot install the metrics recorder")?;
    let registry = args.tenancy.registry()?;
    let catalog = args.catalog.pool()?;
    let tokens = TokenService::new(&args.jwt_secret, args.jwt_ttl)?;
    let defaults = HashLimits::default();
    let limits = HashLimits {
        concurrency: args.hash_concurrency.map_or(defaults.concurrency, usize::from),
        queue_timeout: args.hash_queue_timeout.unwrap_or(defaults.queue_timeout),
        ..defaults
    };
    let hasher = PasswordHasher::new(limits).context("password hasher")?;
    let deps = ApiDeps {
        accounts: Accounts::new(catalog.clone(), hasher),
        registry: registry.clone(),
        tokens,
        auth_throttle: Arc::new(IpThrottle::new(IpQuota {
            per_minute: args.auth_ip_rate,
            burst: args.auth_ip_burst,
        })),
    };
    let app = Application::build(
        &ApiSettings {
            listen_addr: args.listen_addr,
            graphiql: args.graphiql,
            introspection: args.graphql_introspection,
            trusted_proxies: args.trusted_proxies,
        },
        deps,
    )
    .await
    .with_context(|| format!("cannot listen on LISTEN_ADDR {}", args.listen_addr))?;
    tracing::info!(
        addr = %app.local_addr()?,
        tenants = registry.tenants().count(),
        hash_concurrency = limits.concurrency,
        graphiql = args.graphiql,
        introspection = args.graphql_introspection,
        "GraphQL API listening on /graphql"
    );
    let shutdown = super::shutdown_token();
    app.run_until_stopped(shutdown.cancelled_owned())
        .await
        .context("server failed")?;
    registry.close().await;
    catalog.close().await;
    tracing::info!("API stopped");
    Ok(())
}
