//! SQL of the catalog database.

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

/// The name of the constraint a database error violated, if any: match on that, not on text.
pub(crate) fn constraint_of(error: &sqlx::Error) -> Option<&str> {
    error.as_database_error().and_then(|e| e.constraint())
}
