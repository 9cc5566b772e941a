//! A simulator of the three external source servers, a real HTTP server used by the dev stack,
//! the end-to-end tests and the benchmarks.
//!
//! Each configured source gets its own listener speaking the protocol of
//! [`liquidity_core::sources`]: `POST /jobs` (idempotent on `contentId`), `GET /jobs/{id}`
//! (`404` for an unknown job) and `GET /healthz`. A job completes `completeAfter` after its
//! creation and then carries a realistic document for its source. Faults (`500`, `422`, a held
//! request then `504`, a non-JSON `200`) are injected at configured rates by a seeded RNG, so a
//! seed replays the same faults for the same request sequence.
//!
//! ```no_run
//! # async fn example() -> Result<(), liquidity_sources::SimulatorError> {
//! let config = liquidity_sources::SimulatorConfig::from_json(r#"{"sources": {"source_1": {"completeAfter": "1s"}}}"#)?;
//! let simulator = liquidity_sources::bind(&config).await?;
//! println!("SOURCES_CONFIG={}", simulator.sources_config_json());
//! simulator.run_until_stopped(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! # Layout
//! - [`config`]: [`SimulatorConfig`] and [`SourceBehaviour`], parsed from JSON and validated.
//! - [`server`]: [`bind`] and [`Simulator`]: the listeners, routes, in-memory jobs and faults.
//! - [`documents`]: the per-source documents of completed jobs, deterministic per content id.
//! - [`stats`]: per-source request and fault counters, for tests and benchmarks.

pub mod config;
pub mod documents;
mod fault;
pub mod server;
pub mod stats;

pub use config::{ConfigError, SimulatorConfig, SourceBehaviour};
pub use server::{Simulator, SimulatorError, bind};
pub use stats::{SimulatorStats, SourceStats, SourceStatsSnapshot};
