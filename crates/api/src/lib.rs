//! The GraphQL API of Liquidity.
//!
//! `POST /graphql` executes one GraphQL request (batches and GET queries are refused);
//! `GET /graphql` serves GraphiQL, or upgrades to a graphql-ws socket for subscriptions (the
//! token then comes in `connection_init`). Callers authenticate with `Authorization: Bearer <JWT>`;
//! the tenant of every report query comes from that verified token, never from an argument.
//!
//! # Layout
//! - [`schema`]: the schema, buildable without HTTP (tests execute it, `liquidity schema`
//!   exports it): users (`register`, `login`, `me`) and reports (`startReport`,
//!   `reportStatus`, `report`).
//! - [`auth`]: JWT issuing and verification, and the per-request [`auth::Auth`] data.
//! - [`error`]: [`error::ApiError`], the only error type resolvers return, with its
//!   `extensions.code`.
//! - [`guard`]: refuses operations that cost too much (repeated `login`/`register`/
//!   `startReport`, too many root fields, too deep) before anything executes.
//! - [`live`]: live report updates: one `LISTEN` per tenant database per process, fanned out
//!   to the `reportUpdated` subscriptions, bounded per connection and per user.
//! - [`metrics`]: request latency per operation (the schema's root field) and errors by
//!   code, for `/metrics`.
//! - [`throttle`]: per-client-IP token buckets of `login` and `register`.
//! - [`documents`]: parsed documents kept by query text, so that a repeated query is not
//!   parsed again.
//! - [`client_ip`]: the client address, from the socket or a trusted proxy's
//!   `X-Forwarded-For`.
//! - [`socket`]: the graphql-ws endpoint (`GET /graphql` upgraded): token in `connection_init`.
//! - [`server`]: the axum application: routes, limits, request ids, 429/503 with
//!   `Retry-After`, graceful shutdown.

pub mod auth;
pub mod client_ip;
pub mod documents;
pub mod error;
pub mod guard;
pub mod live;
pub mod metrics;
pub mod schema;
pub mod server;
pub mod socket;
pub mod throttle;

pub use schema::{ApiDeps, AppSchema, build_schema, schema_sdl};
pub use server::{ApiSettings, Application};
