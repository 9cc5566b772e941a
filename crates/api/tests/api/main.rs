//! GraphQL over real HTTP, against a server bound on port 0 and the test stack's PostgreSQL.

mod abuse;
mod hardening;
mod helpers;
mod reports;
mod subscriptions;
mod users;
