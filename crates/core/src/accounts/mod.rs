//! Registration and login.

mod password;

use sqlx::PgPool;

pub use password::{PasswordHashError, PasswordHasher};

use crate::catalog::{self, CatalogError, NewUser, User};
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
    /// Database or hashing failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
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

    /// Checks a username and password.
    ///
    /// Takes the same time whether or not the username exists: an unknown user is verified
    /// against a dummy hash, so response times do not reveal which usernames are taken.
    ///
    /// # Errors
    /// [`AccountError::InvalidCredentials`] for an unknown user or a wrong password alike.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, username: &str, password: String) -> Result<User, AccountError> {
        let credentials = catalog::find_credentials_by_username(&self.catalog, username)
            .await
            .map_err(|e| anyhow::Error::new(e).context("catalog lookup failed"))?;
        let (user, stored_hash) = match credentials {
            Some(c) => (Some(c.user), Some(c.password)),
            None => (None, None),
        };
        let verified = self.hasher.verify(password, stored_hash).await?;
        match user {
            Some(user) if verified => Ok(user),
            _ => Err(AccountError::InvalidCredentials),
        }
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
