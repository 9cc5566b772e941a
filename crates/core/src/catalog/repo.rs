//! SQL of the catalog database.

use std::time::Duration;

use sqlx::{FromRow, PgExecutor};

use crate::ids::{TenantId, UserId};
use crate::tenancy::TenantConfig;

/// A user as every caller may see it: no password hash.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The tenant the user belongs to; decides the database of every report they start.
    pub tenant_id: TenantId,
    /// Unique across tenants, case-insensitively.
    pub username: String,
    /// The user's tax id, carried in their token.
    pub tax_id: String,
}

/// A user with the stored argon2id hash, for login only.
#[derive(FromRow)]
pub struct UserCredentials {
    /// The user.
    #[sqlx(flatten)]
    pub user: User,
    /// PHC string of the password.
    pub password: String,
}

/// A user to insert; the password is already hashed.
pub struct NewUser<'a> {
    /// Must be a tenant of the catalog.
    pub tenant_id: TenantId,
    /// Already validated.
    pub username: &'a str,
    /// PHC string.
    pub password_hash: &'a str,
    /// Already validated.
    pub tax_id: &'a str,
}

/// What a catalog write can fail on.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Another user, in any tenant, has this username (compared case-insensitively).
    #[error("username is taken")]
    UsernameTaken,
    /// The tenant is not in the catalog (`liquidity migrate` has not registered it).
    #[error("tenant is not in the catalog")]
    UnknownTenant,
    /// Anything else.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Inserts the tenant or updates its name and description.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant.id))]
pub async fn upsert_tenant(db: impl PgExecutor<'_>, tenant: &TenantConfig) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant (id, name, description) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description",
    )
    .bind(tenant.id)
    .bind(&tenant.name)
    .bind(&tenant.description)
    .execute(db)
    .await?;
    Ok(())
}

/// Inserts a user.
///
/// # Errors
/// [`CatalogError::UsernameTaken`], [`CatalogError::UnknownTenant`], or the database error.
#[tracing::instrument(skip_all, fields(tenant_id = %user.tenant_id))]
pub async fn insert_user(db: impl PgExecutor<'_>, user: &NewUser<'_>) -> Result<User, CatalogError> {
    sqlx::query_as::<_, User>(
        r#"INSERT INTO "user" (tenant_id, username, password, tax_id) VALUES ($1, $2, $3, $4)
           RETURNING id, tenant_id, username, tax_id"#,
    )
    .bind(user.tenant_id)
    .bind(user.username)
    .bind(user.password_hash)
    .bind(user.tax_id)
    .fetch_one(db)
    .await
    .map_err(|e| match constraint_of(&e) {
        Some("user_username_key") => CatalogError::UsernameTaken,
        Some("user_tenant_id_fkey") => CatalogError::UnknownTenant,
        _ => CatalogError::Database(e),
    })
}

/// The user with this username (case-insensitively) and their password hash.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn find_credentials_by_username(
    db: impl PgExecutor<'_>,
    username: &str,
) -> Result<Option<UserCredentials>, sqlx::Error> {
    sqlx::query_as::<_, UserCredentials>(
        r#"SELECT id, tenant_id, username, tax_id, password FROM "user" WHERE lower(username) = lower($1)"#,
    )
    .bind(username)
    .fetch_optional(db)
    .await
}

/// A user of one tenant; `None` when the id is unknown or belongs to another tenant.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, user_id = %user_id))]
pub async fn find_user(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>(r#"SELECT id, tenant_id, username, tax_id FROM "user" WHERE id = $1 AND tenant_id = $2"#)
        .bind(user_id)
        .bind(tenant_id)
        .fetch_optional(db)
        .await
}

/// How consecutive login failures of one account turn into a lockout.
#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    /// Failures in a row that cost nothing (at least 1); the next one locks the account.
    pub free_failures: i32,
    /// The first lockout; each further failure doubles it.
    pub first_lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// A failure this long after the previous one starts the count again.
    pub forget_after: Duration,
}

/// How long login for this username (case-insensitively) stays locked, or `None`.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn login_locked_for(db: impl PgExecutor<'_>, username: &str) -> Result<Option<Duration>, sqlx::Error> {
    let remaining_ms: Option<i64> = sqlx::query_scalar(
        "SELECT ceil(extract(epoch FROM locked_until - now()) * 1000)::int8 FROM login_throttle
         WHERE username_key = lower($1) AND locked_until > now()",
    )
    .bind(username)
    .fetch_optional(db)
    .await?;
    Ok(remaining_ms.map(millis))
}

/// Counts one more failed login of this username and returns the lockout it earned, if any.
/// One statement, so concurrent failures on several replicas all count.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn record_login_failure(
    db: impl PgExecutor<'_>,
    username: &str,
    policy: &LockoutPolicy,
) -> Result<Option<Duration>, sqlx::Error> {
    // One INSERT .. ON CONFLICT, so that the count and the lockout change together, atomically
    // under concurrent failures. The new count (`failures` of the UPDATE) is 1 again when the
    // previous failure is older than `forget_after`; it is spelled twice because SET cannot
    // refer to another SET. The lockout: none up to `free_failures`, then `first_lockout`
    // doubling per failure, capped at `max_lockout`.
    let locked_ms: Option<i64> = sqlx::query_scalar(
        "INSERT INTO login_throttle AS t (username_key, failures, last_failure_at, locked_until)
         VALUES (lower($1), 1, now(), CASE WHEN 1 > $2 THEN now() + make_interval(secs => $3) END)
         ON CONFLICT (username_key) DO UPDATE SET
             failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $5) THEN 1
                             ELSE t.failures + 1 END,
             last_failure_at = now(),
             locked_until = CASE
                 WHEN t.last_failure_at < now() - make_interval(secs => $5) THEN NULL
                 WHEN t.failures + 1 > $2
                 THEN now() + make_interval(secs => least($3 * power(2, least(t.failures - $2, 30)), $4))
             END
         RETURNING ceil(extract(epoch FROM locked_until - now()) * 1000)::int8",
    )
    .bind(username)
    .bind(policy.free_failures)
    .bind(policy.first_lockout.as_secs_f64())
    .bind(policy.max_lockout.as_secs_f64())
    .bind(policy.forget_after.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(locked_ms.map(millis))
}

/// Forgets the failures of this username after a successful login.
///
/// # Errors
/// The database error.
#[tracing::instrument(skip_all)]
pub async fn clear_login_failures(db: impl PgExecutor<'_>, username: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE username_key = lower($1)")
        .bind(username)
        .execute(db)
        .await?;
    Ok(())
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The name of the constraint a database error violated, if any: match on that, not on text.
pub(crate) fn constraint_of(error: &sqlx::Error) -> Option<&str> {
    error.as_database_error().and_then(|e| e.constraint())
}
