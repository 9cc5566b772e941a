//! The GraphQL schema, buildable without HTTP.

mod reports;
mod subscriptions;
mod users;

use std::sync::Arc;

use async_graphql::{Context, MergedObject, MergedSubscription, Schema};
use liquidity_core::accounts::Accounts;
use liquidity_core::tenancy::TenantRegistry;

use crate::auth::{Auth, Claims, TokenService};
use crate::client_ip::ClientIp;
use crate::error::ApiError;
use crate::guard::OperationGuard;
use crate::live::{LiveReports, SubscriptionLimits};
use crate::metrics::RequestMetrics;
use crate::throttle::IpThrottle;

/// Most expensive query we execute (every selected field costs 1). The standard introspection
/// query costs about 100. Depth and the number of costly and root fields are limited by
/// [`crate::guard`], which exempts introspection from the operation depth limit.
pub const MAX_COMPLEXITY: usize = 250;

/// What resolvers need; attached to the schema once.
#[derive(Clone)]
pub struct ApiDeps {
    /// Registration and login against the catalog.
    pub accounts: Accounts,
    /// Tenant id -> pool of that tenant's database.
    pub registry: Arc<TenantRegistry>,
    /// JWT issuing.
    pub tokens: TokenService,
    /// Per-client-IP buckets of `login` and `register`.
    pub auth_throttle: Arc<IpThrottle>,
}

/// Queries of every module.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(users::UsersQuery, reports::ReportsQuery);

/// Mutations of every module.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(users::UsersMutation, reports::ReportsMutation);

/// Subscriptions of every module, served over the graphql-ws protocol on `/graphql`.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(subscriptions::ReportsSubscription);

/// The executable schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_complexity(MAX_COMPLEXITY)
}

/// The schema with its dependencies. Each request must carry an [`Auth`] and a [`ClientIp`]
/// as request data (a websocket connection carries them as connection data, with its
/// [`crate::live::ConnectionSubscriptions`]). Without `introspection`, `__schema` and
/// `__type` are refused (production deployments that publish no schema).
///
/// The schema holds this process's [`LiveReports`]: build one schema per process, so that the
/// per-user bound and the one `LISTEN` per tenant hold process-wide.
pub fn build_schema(deps: ApiDeps, introspection: bool) -> AppSchema {
    let live = Arc::new(LiveReports::new(deps.registry.clone(), SubscriptionLimits::default()));
    let builder = builder()
        .data(deps)
        .data(live)
        .extension(OperationGuard { introspection })
        // After the guard, so that a refused operation is still labelled by its root field.
        .extension(RequestMetrics);
    if introspection {
        builder
    } else {
        builder.disable_introspection()
    }
    .finish()
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn schema_sdl() -> String {
    builder().finish().sdl()
}

fn deps<'a>(ctx: &Context<'a>) -> Result<&'a ApiDeps, ApiError> {
    ctx.data::<ApiDeps>()
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("ApiDeps missing from the schema")))
}

/// The client address the HTTP layer resolved (see [`crate::client_ip`]).
fn client_ip(ctx: &Context<'_>) -> Result<ClientIp, ApiError> {
    ctx.data::<ClientIp>()
        .copied()
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("ClientIp missing from the request")))
}

/// The verified claims of the caller, or `UNAUTHENTICATED`.
fn claims<'a>(ctx: &Context<'a>) -> Result<&'a Claims, ApiError> {
    match ctx.data_opt::<Auth>() {
        Some(Auth::User(claims)) => Ok(claims),
        Some(Auth::Invalid) => Err(ApiError::Unauthenticated("invalid or expired token")),
        Some(Auth::Anonymous) | None => Err(ApiError::Unauthenticated("a Bearer token is required")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schema_matches_the_code() {
        // `liquidity schema > schema.graphql` regenerates the file after a deliberate change.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema.graphql");
        let committed = std::fs::read_to_string(path).expect("schema.graphql at the workspace root");
        assert_eq!(
            committed.trim(),
            super::schema_sdl().trim(),
            "schema.graphql is out of date: run `cargo run -q --bin liquidity -- schema > schema.graphql`"
        );
    }
}
