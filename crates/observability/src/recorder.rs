//! The process's one Prometheus recorder.
//!
//! Instrumented code anywhere in the workspace records through the `metrics` facade
//! (`metrics::counter!`, `histogram!`, `gauge!`); [`install`] makes those calls land in a
//! Prometheus registry whose text rendering `/metrics` serves. Before [`install`] (unit and
//! integration tests of a single crate) the facade's calls are no-ops.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of request and call durations, in seconds: 1 ms to 30 s (the API's request
/// timeout). A cached `reportStatus` is around a millisecond, a login around 25 ms.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of lags, in seconds: 10 ms to 1 h. Commit → handled is ~100 ms when the pipeline is
/// healthy and minutes to hours when a part of it is down (the reconciler's hour-long deadline
/// bounds it); a poll pass is late by milliseconds unless the worker is starved.
pub const LAG_BUCKETS: [f64; 15] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Histograms whose name ends so get [`DURATION_BUCKETS`].
pub const DURATION_SUFFIX: &str = "_duration_seconds";
/// Histograms whose name ends so get [`LAG_BUCKETS`].
pub const LAG_SUFFIX: &str = "_lag_seconds";

/// How often histograms are compacted when nobody scrapes: without it, samples recorded
/// between two scrapes are kept one by one.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls
/// return the same handle) and starts its upkeep task. Must be called inside a Tokio runtime,
/// before anything records, so that handles taken early are not no-ops.
///
/// # Errors
/// [`BuildError`] when another recorder was installed first.
pub fn install() -> Result<&'static PrometheusHandle, BuildError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix(DURATION_SUFFIX.to_owned()), &DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix(LAG_SUFFIX.to_owned()), &LAG_BUCKETS)?
        .install_recorder()?;
    let handle = HANDLE.get_or_init(|| handle);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP_EVERY);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    });
    Ok(handle)
}

/// The Prometheus text rendering of every metric, or `None` before [`install`].
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}
