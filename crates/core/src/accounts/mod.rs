//! Registration and login.
//!
//! Two bounds keep login from being a cheap attack or a way to exhaust the API:
//! - password hashing runs at most [`HashLimits::concurrency`] at a time ([`password`]);
//! - an account whose password was guessed wrong too often in a row is locked for a growing
//!   time ([`LOCKOUT`]), answered without hashing. The count lives in the catalog, so every API
//!   replica, and a restarted one, enforces the same lockout.

mod password;

use std::time::Duration;

use sqlx::PgPool;

pub use password::{HashError, HashLimits, MEMORY_KIB, PasswordHasher};

use crate::catalog::{self, CatalogError, LockoutPolicy, NewUser, User};
use crate::ids::{TenantId, UserId};

/// A validated registration request.
pub struct Registration {
    /// A tenant of the registry.
    pub tenant_id: TenantId,
    /// 3-64 chars of letters, digits, `._-`.
    pub username: String,
    /// 8-128 chars, in clear until hashed here.
    pub password: String,
    /// The user's tax id.
    pub tax_id: String,
}

/// Per-account lockout: 5 free failures in a row, then 1 s, doubling with each further failure
/// up to 15 minutes; a failure an hour after the previous one starts the count again. At the
/// cap an online guesser gets about 100 guesses a day per account, while the owner who mistypes
/// a few times is never locked out.
pub const LOCKOUT: LockoutPolicy = LockoutPolicy {
    free_failures: 5,
    first_lockout: Duration::from_secs(1),
    max_lockout: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(60 * 60),
};

/// What registration or login can fail on.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another user has this username.
    #[error("username is taken")]
    UsernameTaken,
    /// The tenant is not in the catalog.
    #[error("unknown tenant")]
    UnknownTenant,
    /// Wrong username or wrong password; deliberately the same error for both.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins in a row for this username: try again after this long. Known
    /// and unknown usernames are locked alike, so a lockout does not reveal which exist.
    #[error("too many failed logins: locked for {0:?}")]
    LockedOut(Duration),
    /// Password hashing is saturated; retry after a short while.
    #[error("password hashing is saturated")]
    Busy,
    /// Database or hashing failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<HashError> for AccountError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy(_) => Self::Busy,
            failed @ HashError::Failed(_) => Self::Unexpected(failed.into()),
        }
    }
}

impl From<CatalogError> for AccountError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::UsernameTaken => Self::UsernameTaken,
            CatalogError::UnknownTenant => Self::UnknownTenant,
            CatalogError::Database(e) => Self::Unexpected(anyhow::Error::new(e).context("catalog write failed")),
        }
    }
}

/// Users of the catalog database.
#[derive(Clone)]
pub struct Accounts {
    catalog: PgPool,
    hasher: PasswordHasher,
}

impl Accounts {
    /// Accounts over the catalog pool.
    pub fn new(catalog: PgPool, hasher: PasswordHasher) -> Self {
        Self { catalog, hasher }
    }

    /// Creates a user with a freshly salted argon2id hash of the password.
    ///
    /// # Errors
    /// [`AccountError::UsernameTaken`], [`AccountError::UnknownTenant`], or unexpected failures.
    #[tracing::instrument(skip_all, fields(tenant_id = %registration.tenant_id))]
    pub async fn register(&self, registration: Registration) -> Result<User, AccountError> {
        let password_hash = self.hasher.hash(registration.password).await?;
        let user = catalog::insert_user(
            &self.catalog,
            &NewUser {
                tenant_id: registration.tenant_id,
                username: &registration.username,
                password_hash: &password_hash,
                tax_id: &registration.tax_id,
            },
        )
        .await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Checks a username and password, under the per-account [`LOCKOUT`].
    ///
    /// Takes the same time whether or not the username exists: an unknown user is verified
    /// against a dummy hash, so response times do not reveal which usernames are taken. A
    /// locked username is answered at once, without hashing.
    ///
    /// # Errors
    /// [`AccountError::InvalidCredentials`] for an unknown user or a wrong password alike;
    /// [`AccountError::LockedOut`] while the username is locked (the failure that earns a
    /// lockout is still answered `InvalidCredentials`); [`AccountError::Busy`] when hashing is
    /// saturated.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, username: &str, password: String) -> Result<User, AccountError> {
        if let Some(remaining) = catalog::login_locked_for(&self.catalog, username)
            .await
            .map_err(|e| anyhow::Error::new(e).context("login throttle lookup failed"))?
        {
            return Err(AccountError::LockedOut(remaining));
        }
        let credentials = catalog::find_credentials_by_username(&self.catalog, username)
            .await
            .map_err(|e| anyhow::Error::new(e).context("catalog lookup failed"))?;
        let (user, stored_hash) = match credentials {
            Some(c) => (Some(c.user), Some(c.password)),
            None => (None, None),
        };
        let verified = self.hasher.verify(password, stored_hash).await?;
        match user {
            Some(user) if verified => {
                catalog::clear_login_failures(&self.catalog, username)
                    .await
                    .map_err(|e| anyhow::Error::new(e).context("login throttle reset failed"))?;
                Ok(user)
            }
            _ => {
                let locked = catalog::record_login_failure(&self.catalog, username, &LOCKOUT)
                    .await
                    .map_err(|e| anyhow::Error::new(e).context("login throttle update failed"))?;
                if let Some(lockout) = locked {
                    tracing::warn!(?lockout, "repeated failed logins: account locked");
                }
                Err(AccountError::InvalidCredentials)
            }
        }
    }

    /// The catalog's pool (for its gauges).
    pub fn catalog(&self) -> &PgPool {
        &self.catalog
    }

    /// Whether the catalog database answers.
    ///
    /// # Errors
    /// The database error.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.catalog).await.map(drop)
    }

    /// A user of a tenant, or `None` if it no longer exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find(&self, tenant_id: TenantId, user_id: UserId) -> Result<Option<User>, AccountError> {
        catalog::find_user(&self.catalog, tenant_id, user_id)
            .await
            .map_err(|e| anyhow::Error::new(e).context("catalog lookup failed").into())
    }
}
