//! What operators see of every Liquidity role: Prometheus metrics at `/metrics`, liveness at
//! `/healthz`, readiness (its dependencies reachable) at `/readyz`.
//!
//! The roles record metrics with the `metrics` facade where things happen (each crate names its
//! own metrics in a `metrics` module); this crate installs the one Prometheus recorder of the
//! process, samples the connection pools, checks dependencies and serves the routes. The API
//! merges [`routes`] into its own router; the workers serve them on `METRICS_ADDR`
//! ([`serve`]).
//!
//! # Layout
//! - [`recorder`]: [`recorder::install`] and the histogram buckets.
//! - [`pools`]: [`PoolGauges`], in-use and idle connections per tenant pool and the catalog's.
//! - [`health`]: [`Readiness`] (named dependency checks with a timeout), [`routes`],
//!   [`serve`].

pub mod health;
pub mod pools;
pub mod recorder;

pub use health::{CheckError, DependencyState, Ops, Readiness, ReadinessReport, ServeError, routes, serve};
pub use pools::PoolGauges;
