//! Tenancy: which tenants exist and which physical database each one owns.
//!
//! The registry comes from one environment variable, `TENANTS_CONFIG`, holding a JSON array.
//! A tenant's database is chosen at run time from the tenant id of a *verified* JWT (or of a
//! CDC event's `source.name`), never from a request argument, and an unknown tenant id is an
//! error: there is no default database to fall back to.

mod config;
mod registry;

pub use config::{DatabaseEndpoint, TenantConfig, TenantsConfigError, parse_tenants_config};
pub use registry::{PoolSettings, TenancyError, TenantRegistry};
