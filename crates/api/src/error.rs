//! The one error type of resolvers, and how it reaches clients.
//!
//! Every error carries `extensions.code`. Internal errors are logged here, once, with their
//! whole cause chain, and reach the client only as an opaque message: never SQL, driver text,
//! hostnames or stack traces.

use std::time::Duration;

use async_graphql::ErrorExtensions as _;
use liquidity_core::accounts::AccountError;
use liquidity_core::tenancy::TenancyError;

use crate::guard::shape::Refusal;
use crate::live::SubscriptionLimit;

/// One invalid input field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The GraphQL name of the field (`taxId`, not `tax_id`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a resolver can fail with. Deliberately not `Display`, so that the only way into an
/// `async_graphql::Error` is the `From` below, which sets the code.
#[derive(Debug)]
pub enum ApiError {
    /// `BAD_USER_INPUT`: every violation at once, per field.
    BadUserInput(Vec<FieldViolation>),
    /// `UNAUTHENTICATED`: no, invalid or expired token, or wrong credentials.
    Unauthenticated(&'static str),
    /// `CONFLICT`: e.g. the username is taken.
    Conflict(&'static str),
    /// `NOT_FOUND`: also for things that exist but belong to someone else.
    NotFound(&'static str),
    /// `OPERATION_REFUSED`: the operation asks for more than one request may (see
    /// [`crate::guard`]); `extensions.reason` says which limit.
    OperationRefused(Refusal),
    /// `RATE_LIMITED`: this client or account must wait; `extensions.retryAfterSeconds`.
    RateLimited {
        /// What is limited.
        message: &'static str,
        /// How long to wait.
        retry_after: Duration,
    },
    /// `UNAVAILABLE`: the server is saturated; `extensions.retryAfterSeconds`.
    Unavailable {
        /// What is saturated.
        message: &'static str,
        /// How long to wait.
        retry_after: Duration,
    },
    /// `TOO_MANY_SUBSCRIPTIONS`: this connection or user already holds as many live
    /// subscriptions as allowed; `extensions.scope` (`connection` or `user`) and
    /// `extensions.limit` say which bound. Not a rate: a place frees up when another
    /// subscription of theirs ends, so there is no `retryAfterSeconds`.
    TooManySubscriptions(SubscriptionLimit),
    /// `INTERNAL`: logged with its cause chain, opaque to the client.
    Internal(anyhow::Error),
}

/// `extensions.code` of [`ApiError::RateLimited`], which the HTTP layer answers with 429.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// `extensions.code` of [`ApiError::Unavailable`], which the HTTP layer answers with 503.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// The extension carrying the whole seconds to wait before retrying (at least 1).
pub const RETRY_AFTER_SECONDS: &str = "retryAfterSeconds";

/// Whole seconds, rounded up, at least 1: what `Retry-After` can say.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl ApiError {
    /// One invalid field.
    pub fn bad_field(field: &str, message: &str) -> Self {
        Self::BadUserInput(vec![FieldViolation::new(field, message)])
    }

    /// An unexpected failure, with context for the log.
    pub fn internal(error: impl Into<anyhow::Error>, context: &'static str) -> Self {
        Self::Internal(error.into().context(context))
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Conflict(_) => "CONFLICT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::OperationRefused(_) => "OPERATION_REFUSED",
            Self::RateLimited { .. } => RATE_LIMITED,
            Self::Unavailable { .. } => UNAVAILABLE,
            Self::TooManySubscriptions(_) => "TOO_MANY_SUBSCRIPTIONS",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        match error {
            ApiError::BadUserInput(violations) => {
                let fields: Vec<async_graphql::Value> = violations
                    .iter()
                    .map(|v| {
                        let mut field = async_graphql::indexmap::IndexMap::new();
                        field.insert(async_graphql::Name::new("field"), v.field.clone().into());
                        field.insert(async_graphql::Name::new("message"), v.message.clone().into());
                        async_graphql::Value::Object(field)
                    })
                    .collect();
                let names: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                async_graphql::Error::new(format!("invalid input: {}", names.join(", "))).extend_with(|_, ext| {
                    ext.set("code", code);
                    ext.set("fields", fields);
                })
            }
            ApiError::Unauthenticated(message) | ApiError::Conflict(message) | ApiError::NotFound(message) => {
                async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code))
            }
            ApiError::OperationRefused(refusal) => {
                async_graphql::Error::new(refusal.message()).extend_with(|_, ext| {
                    ext.set("code", code);
                    ext.set("reason", refusal.reason());
                })
            }
            ApiError::RateLimited { message, retry_after } | ApiError::Unavailable { message, retry_after } => {
                async_graphql::Error::new(message).extend_with(|_, ext| {
                    ext.set("code", code);
                    ext.set(RETRY_AFTER_SECONDS, retry_after_seconds(retry_after));
                })
            }
            ApiError::TooManySubscriptions(limit) => {
                let (scope, bound) = match limit {
                    SubscriptionLimit::Connection(bound) => ("connection", bound),
                    SubscriptionLimit::User(bound) => ("user", bound),
                };
                async_graphql::Error::new(format!("at most {bound} live subscriptions per {scope}")).extend_with(
                    |_, ext| {
                        ext.set("code", code);
                        ext.set("scope", scope);
                        ext.set("limit", bound);
                    },
                )
            }
            ApiError::Internal(e) => {
                tracing::error!(error.cause_chain = ?e, error.message = %e, "internal error");
                async_graphql::Error::new("internal error").extend_with(|_, ext| ext.set("code", code))
            }
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::UsernameTaken => Self::Conflict("username is taken"),
            AccountError::UnknownTenant => Self::bad_field("tenantId", "unknown tenant"),
            AccountError::InvalidCredentials => Self::Unauthenticated("invalid username or password"),
            AccountError::LockedOut(retry_after) => Self::RateLimited {
                message: "too many failed logins for this account: retry later",
                retry_after,
            },
            AccountError::Busy => Self::Unavailable {
                message: "the server is busy: retry shortly",
                retry_after: Duration::from_secs(1),
            },
            AccountError::Unexpected(e) => Self::Internal(e),
        }
    }
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        match e {
            // A verified token naming a tenant that has since left the registry.
            TenancyError::UnknownTenant(_) => Self::Unauthenticated("the token's tenant does not exist"),
            connect @ TenancyError::Connect { .. } => Self::internal(connect, "tenant database unavailable"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Every connection of the pool stayed busy for its whole acquire timeout: an
            // overload the client can wait out, not a fault.
            sqlx::Error::PoolTimedOut => Self::Unavailable {
                message: "the database is busy: retry shortly",
                retry_after: Duration::from_secs(1),
            },
            e => Self::internal(e, "database query failed"),
        }
    }
}

impl From<garde::Report> for ApiError {
    fn from(report: garde::Report) -> Self {
        Self::BadUserInput(
            report
                .iter()
                .map(|(path, error)| FieldViolation::new(graphql_name(&path.to_string()), error.message()))
                .collect(),
        )
    }
}

/// The GraphQL name of a Rust field path: async-graphql exposes `tax_id` as `taxId`.
fn graphql_name(rust_path: &str) -> String {
    let mut name = String::with_capacity(rust_path.len());
    let mut upper = false;
    for c in rust_path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                name.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => name.push(c),
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(super::retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(super::retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(super::retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(super::retry_after_seconds(Duration::from_secs(900)), 900);
    }

    #[test]
    fn a_pool_timeout_is_a_retryable_unavailable_and_other_database_errors_are_internal() {
        let busy = super::ApiError::from(sqlx::Error::PoolTimedOut);
        assert!(
            matches!(busy, super::ApiError::Unavailable { retry_after, .. } if retry_after == Duration::from_secs(1))
        );
        let closed = super::ApiError::from(sqlx::Error::PoolClosed);
        assert!(matches!(closed, super::ApiError::Internal(_)));
    }

    #[test]
    fn field_paths_are_reported_with_their_graphql_names() {
        assert_eq!(super::graphql_name("tax_id"), "taxId");
        assert_eq!(super::graphql_name("tenant_id"), "tenantId");
        assert_eq!(super::graphql_name("username"), "username");
    }
}
