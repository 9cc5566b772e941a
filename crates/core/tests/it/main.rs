//! Integration tests of liquidity-core against the test stack's real PostgreSQL.

mod accounts;
mod helpers;
mod migrations;
mod notify;
mod provision;
mod reports;
mod tenancy;
