//! `register`, `login`, `me`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use garde::Validate;
use liquidity_core::TenantId;
use liquidity_core::accounts::Registration;
use liquidity_core::catalog;
use liquidity_core::tenancy::TenantRegistry;

use super::{ApiDeps, claims, client_ip, deps};
use crate::error::ApiError;

/// A user of Liquidity.
#[derive(SimpleObject)]
pub struct User {
    id: ID,
    tenant_id: ID,
    username: String,
    tax_id: String,
}

impl From<catalog::User> for User {
    fn from(user: catalog::User) -> Self {
        Self {
            id: user.id.to_string().into(),
            tenant_id: user.tenant_id.to_string().into(),
            username: user.username,
            tax_id: user.tax_id,
        }
    }
}

/// A user and a fresh token for them.
#[derive(SimpleObject)]
pub struct AuthPayload {
    user: User,
    /// JWT (HS256) to send as `Authorization: Bearer <token>`.
    token: String,
}

/// Registration of a user in a tenant.
#[derive(InputObject, Validate)]
#[garde(context(TenantRegistry))]
pub struct RegisterInput {
    /// A tenant id of the registry.
    #[garde(custom(known_tenant))]
    tenant_id: ID,
    /// 3-64 letters, digits, `.`, `_`, `-`; unique across tenants, case-insensitively.
    #[garde(length(chars, min = 3, max = 64), custom(username_chars))]
    username: String,
    /// 8-128 characters.
    #[garde(length(chars, min = 8, max = 128))]
    password: String,
    /// 1-32 letters, digits, `-`, `.`, `/`.
    #[garde(length(chars, min = 1, max = 32), custom(tax_id_chars))]
    tax_id: String,
}

/// Username and password.
#[derive(InputObject, Validate)]
pub struct LoginInput {
    #[garde(length(chars, min = 1, max = 64))]
    username: String,
    #[garde(length(chars, min = 1, max = 128))]
    password: String,
}

fn known_tenant(value: &ID, registry: &TenantRegistry) -> garde::Result {
    let id: TenantId = value.parse().map_err(|_| garde::Error::new("must be a UUID"))?;
    if registry.contains(id) {
        Ok(())
    } else {
        Err(garde::Error::new("unknown tenant"))
    }
}

fn username_chars(value: &str, _: &TenantRegistry) -> garde::Result {
    only_chars(
        value,
        &['.', '_', '-'],
        "may only contain letters, digits, '.', '_' and '-'",
    )
}

fn tax_id_chars(value: &str, _: &TenantRegistry) -> garde::Result {
    only_chars(
        value,
        &['-', '.', '/'],
        "may only contain letters, digits, '-', '.' and '/'",
    )
}

fn only_chars(value: &str, extra: &[char], message: &'static str) -> garde::Result {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c)) {
        Ok(())
    } else {
        Err(garde::Error::new(message))
    }
}

#[derive(Default)]
pub struct UsersQuery;

#[Object]
impl UsersQuery {
    /// The authenticated user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let claims = claims(ctx)?;
        let user = deps(ctx)?
            .accounts
            .find(claims.tenant_id, claims.user_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::Unauthenticated("the token's user does not exist"))?;
        Ok(user.into())
    }
}

#[derive(Default)]
pub struct UsersMutation;

#[Object]
impl UsersMutation {
    /// Creates a user in a tenant and logs them in.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> async_graphql::Result<AuthPayload> {
        let deps = deps(ctx)?;
        admit_client(ctx, deps)?;
        input.validate_with(&deps.registry).map_err(ApiError::from)?;
        let registration = Registration {
            tenant_id: input
                .tenant_id
                .parse()
                .map_err(|_| ApiError::bad_field("tenantId", "must be a UUID"))?,
            username: input.username,
            password: input.password,
            tax_id: input.tax_id,
        };
        let user = deps.accounts.register(registration).await.map_err(ApiError::from)?;
        Ok(auth_payload(deps, user)?)
    }

    /// Exchanges a username and password for a token.
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> async_graphql::Result<AuthPayload> {
        let deps = deps(ctx)?;
        admit_client(ctx, deps)?;
        input.validate().map_err(ApiError::from)?;
        let user = deps
            .accounts
            .login(&input.username, input.password)
            .await
            .map_err(ApiError::from)?;
        Ok(auth_payload(deps, user)?)
    }
}

/// Takes a token from the caller's per-IP bucket: `RATE_LIMITED` before any validation, lookup
/// or hash when it is empty.
fn admit_client(ctx: &Context<'_>, deps: &ApiDeps) -> Result<(), ApiError> {
    let client = client_ip(ctx)?;
    deps.auth_throttle.check(client.0).map_err(|retry_after| {
        tracing::info!(client_ip = %client.0, ?retry_after, "login/register rate limited");
        ApiError::RateLimited {
            message: "too many login or register attempts from this address: retry later",
            retry_after,
        }
    })
}

fn auth_payload(deps: &ApiDeps, user: catalog::User) -> Result<AuthPayload, ApiError> {
    let token = deps
        .tokens
        .issue(&user)
        .map_err(|e| ApiError::internal(e, "token signing failed"))?;
    Ok(AuthPayload {
        user: user.into(),
        token,
    })
}
