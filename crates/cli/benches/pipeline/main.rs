//! Benchmarks of the whole system, on the same process tree as the end-to-end tests (release
//! builds, every role its own process, real PostgreSQL, Debezium, Pub/Sub and Temporal).
//!
//! `scripts/test.sh --bench` runs it (it brings up the test stack); `cargo bench -p liquidity --bench
//! pipeline -- <scenario>...` with the test stack's `LQDTY_TEST_*` exported does the same.
//! Scenarios: `auth`, `latency`, `capacity`, `login-flood`, `burst`, `temporal-ceiling`, `reads`,
//! `relay` (all when none is named). Results go to stdout and are quoted in the README. One
//! module per scenario; `stats` holds the load generator and the figures they print.

// The end-to-end tests' harness, so that benchmarks measure exactly the tested process tree; the
// benchmarks use only part of it.
#[path = "../../tests/e2e/world.rs"]
#[allow(dead_code)]
mod world;

mod auth;
mod burst;
mod capacity;
mod latency;
mod login_flood;
mod reads;
mod relay;
mod stats;
mod temporal_ceiling;

#[tokio::main]
async fn main() {
    // reqwest is built without a default TLS provider; the stack's metrics endpoints are plain
    // HTTP, but a client cannot be built without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if runs("auth") {
        auth::run().await;
    }
    if runs("latency") {
        latency::run().await;
    }
    if runs("capacity") {
        capacity::run().await;
    }
    if runs("login-flood") {
        login_flood::run().await;
    }
    if runs("burst") {
        burst::run().await;
    }
    if runs("temporal-ceiling") {
        temporal_ceiling::run().await;
    }
    if runs("reads") {
        reads::run().await;
    }
    if runs("relay") {
        relay::run().await;
    }
}
