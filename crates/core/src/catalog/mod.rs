//! The catalog database: tenants and users.

mod repo;

pub use repo::{
    CatalogError, LockoutPolicy, NewUser, User, UserCredentials, clear_login_failures, find_credentials_by_username,
    find_user, insert_user, login_locked_for, record_login_failure, upsert_tenant,
};
