//! The catalog database: tenants and users.

mod repo;

pub use repo::{
    CatalogError, NewUser, User, UserCredentials, find_credentials_by_username, find_user, insert_user, upsert_tenant,
};
