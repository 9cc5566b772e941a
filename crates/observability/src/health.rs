//! `/healthz`, `/readyz` and `/metrics`: the operations routes of every role.
//!
//! - `/healthz` answers `200 ok` while the process's runtime serves requests: a wedged or dead
//!   process stops answering, which is what a liveness probe restarts. It checks no dependency,
//!   so that an outage of PostgreSQL or Temporal never makes an orchestrator restart every
//!   replica at once (they wait for it on their own).
//! - `/readyz` runs every dependency check of the role at once, each bounded by
//!   [`CHECK_TIMEOUT`], and answers `200` when all pass, else `503`; both with a JSON body
//!   naming each dependency's state. The body names states only (`ok`, `unreachable`,
//!   `timeout`), never an error's text: on the API it is served on the public port. The cause is
//!   logged.
//! - `/metrics` samples the pool gauges, then renders every metric in Prometheus text format.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::pools::PoolGauges;
use crate::recorder;

/// Bound of one dependency check: well under a probe's usual timeout (Kubernetes' default is
/// 1 s per probe, which operators raise for readiness; ours answers within this plus a little).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed check's cause, logged (never sent).
pub type CheckError = Box<dyn std::error::Error + Send + Sync>;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), CheckError>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The dependencies a role needs to do its work, each with a check.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

/// The state of one dependency, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyState {
    /// The check passed.
    Ok,
    /// The check failed (refused, unknown resource, error answer).
    Unreachable,
    /// The check did not answer within [`CHECK_TIMEOUT`].
    Timeout,
}

/// What `/readyz` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// The dependencies whose check did not pass, in the order they were declared.
    pub failing: Vec<&'static str>,
    /// Every dependency's state, in the order they were declared.
    pub checks: Vec<(&'static str, DependencyState)>,
}

impl ReadinessReport {
    /// Whether every dependency passed.
    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

impl Readiness {
    /// No dependency yet: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency, named as `/readyz` reports it, and its check: a cheap round trip
    /// that proves the dependency answers (`SELECT 1`, a health RPC, a metadata read).
    #[must_use]
    pub fn check<F, Fut, E>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<CheckError>,
    {
        let check: Check = Arc::new(move || {
            let checked = check();
            Box::pin(async move { checked.await.map_err(Into::into) })
        });
        self.checks.push((name, check));
        self
    }

    /// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`]; failures are logged
    /// with their cause.
    pub async fn evaluate(&self) -> ReadinessReport {
        let states = futures::future::join_all(self.checks.iter().map(|(name, check)| async move {
            match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => DependencyState::Ok,
                Ok(Err(e)) => {
                    tracing::warn!(dependency = name, error.message = %e, error.cause_chain = ?e, "readiness check failed");
                    DependencyState::Unreachable
                }
                Err(_) => {
                    tracing::warn!(dependency = name, timeout = ?CHECK_TIMEOUT, "readiness check timed out");
                    DependencyState::Timeout
                }
            }
        }))
        .await;
        let checks: Vec<(&'static str, DependencyState)> =
            self.checks.iter().map(|(name, _)| *name).zip(states).collect();
        let failing: Vec<&'static str> = checks
            .iter()
            .filter(|(_, state)| *state != DependencyState::Ok)
            .map(|(name, _)| *name)
            .collect();
        ReadinessReport {
            status: if failing.is_empty() { "ready" } else { "unavailable" },
            failing,
            checks,
        }
    }
}

/// What the operations routes serve.
#[derive(Clone)]
pub struct Ops {
    /// The role's dependencies.
    pub readiness: Readiness,
    /// The role's pools.
    pub pools: PoolGauges,
}

/// `/healthz`, `/readyz` and `/metrics`, to serve on their own listener ([`serve`]) or to
/// merge into a role's router (of any state).
pub fn routes<S: Clone + Send + Sync + 'static>(ops: Ops) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(ops))
}

async fn ready(State(ops): State<Arc<Ops>>) -> Response {
    let report = ops.readiness.evaluate().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let checks: serde_json::Map<String, serde_json::Value> = report
        .checks
        .iter()
        .map(|(name, state)| ((*name).to_owned(), serde_json::json!(state)))
        .collect();
    let body = serde_json::json!({ "status": report.status, "failing": report.failing, "checks": checks });
    (status, axum::Json(body)).into_response()
}

/// Prometheus' text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    ops.pools.record();
    match recorder::render() {
        Some(text) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no metrics recorder in this process").into_response(),
    }
}

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another metrics recorder was installed first.
    #[error("cannot install the metrics recorder")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
    /// The address cannot be bound.
    #[error("cannot listen on METRICS_ADDR {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
}

/// Installs the metrics recorder, binds `addr` (`METRICS_ADDR` of the workers; port 0 picks a
/// free port) and serves [`routes`] there on a task of its own for the rest of the process:
/// also while the role drains after SIGTERM, so probes and scrapes see the drain. Returns the
/// bound address.
///
/// # Errors
/// [`ServeError`].
pub async fn serve(addr: SocketAddr, ops: Ops) -> Result<SocketAddr, ServeError> {
    recorder::install()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes::<()>(ops)).await {
            tracing::error!(error.message = %e, error.cause_chain = ?e, "the operations listener failed");
        }
    });
    tracing::info!(addr = %bound, "/metrics, /healthz and /readyz listening");
    Ok(bound)
}
