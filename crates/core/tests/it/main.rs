//! Integration tests of liquidity-core against the test stack's real PostgreSQL.

mod helpers;
mod migrations;
mod reports;
mod tenancy;
