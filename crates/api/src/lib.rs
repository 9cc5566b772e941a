//! The GraphQL API of Liquidity.
//!
//! `POST /graphql` executes one GraphQL request (batches and GET queries are refused);
//! `GET /graphql` serves GraphiQL. Callers authenticate with `Authorization: Bearer <JWT>`;
//! the tenant of every report query comes from that verified token, never from an argument.
//!
//! # Layout
//! - [`schema`]: the schema, buildable without HTTP (tests execute it, `liquidity schema`
//!   exports it): users (`register`, `login`, `me`) and reports (`startReport`,
//!   `reportStatus`, `report`).
//! - [`auth`]: JWT issuing and verification, and the per-request [`auth::Auth`] data.
//! - [`error`]: [`error::ApiError`], the only error type resolvers return, with its
//!   `extensions.code`.
//! - [`server`]: the axum application: routes, limits, request ids, graceful shutdown.

pub mod auth;
pub mod error;
pub mod schema;
pub mod server;

pub use schema::{ApiDeps, AppSchema, build_schema, schema_sdl};
pub use server::{ApiSettings, Application};
