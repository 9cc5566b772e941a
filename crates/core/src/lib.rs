//! The domain of Liquidity, free of HTTP, GraphQL and Temporal types.
//!
//! Every process role (API, CDC worker, workflow worker) builds on this crate, so the SQL that
//! touches a tenant's reports lives here once and is called by resolvers, CDC handlers and
//! activities alike.
//!
//! # Layout
//! - [`ids`]: typed ids (`TenantId`, `UserId`, `ReportId`, `ReportContentId`).
//! - [`tenancy`]: the `TENANTS_CONFIG` registry and its lazily created, reused pool per tenant.
//! - [`catalog`]: the catalog database (tenants, users) and its repository.
//! - [`accounts`]: registration and login on top of the catalog (argon2id passwords).
//! - [`reports`]: reports and their per-source contents in a tenant database.
//! - [`sources`]: the wire protocol of the external source servers.
//! - [`db`]: connection options and the embedded migrations.
//! - [`provision`]: least privilege: one login role per database, a replication role for Debezium.
//! - [`trace_context`]: the W3C `traceparent` that links one report's spans across processes.

pub mod accounts;
pub mod catalog;
pub mod db;
pub mod ids;
pub mod provision;
pub mod reports;
pub mod sources;
pub mod tenancy;
pub mod trace_context;

pub use ids::{ReportContentId, ReportId, TenantId, UserId};
