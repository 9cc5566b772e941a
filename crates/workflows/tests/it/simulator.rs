//! The real source simulator (`liquidity-sources`) over HTTP on free ports, for the tests that
//! need its behaviours (slow answers, oversize documents, redirects).

use liquidity_sources::{SimulatorConfig, SimulatorStats, SourceBehaviour, SourceStatsSnapshot};
use tokio_util::sync::CancellationToken;

/// A running simulator; stops when dropped.
pub struct TestSimulator {
    sources_config: String,
    stats: SimulatorStats,
    stop: CancellationToken,
}

impl TestSimulator {
    /// The three report sources on free ports, `source_1` with `behaviour` and the others fast
    /// and healthy.
    pub async fn start(source_1: SourceBehaviour) -> Self {
        let mut config = SimulatorConfig::default_three(0);
        for behaviour in config.sources.values_mut() {
            *behaviour = healthy();
        }
        config.sources.insert("source_1".to_owned(), source_1);
        let simulator = liquidity_sources::bind(&config).await.expect("the simulator binds");
        let sources_config = simulator.sources_config_json();
        let stats = simulator.stats();
        let stop = CancellationToken::new();
        tokio::spawn(simulator.run_until_stopped(stop.clone().cancelled_owned()));
        Self {
            sources_config,
            stats,
            stop,
        }
    }

    /// `SOURCES_CONFIG` of the simulator.
    pub fn sources_config(&self) -> &str {
        &self.sources_config
    }

    /// The base URL of a source.
    pub fn url(&self, source: &str) -> String {
        let urls: serde_json::Value = serde_json::from_str(&self.sources_config).unwrap();
        urls[source].as_str().unwrap().to_owned()
    }

    /// What `source_1` has seen so far.
    pub fn source_1(&self) -> SourceStatsSnapshot {
        self.stats.source("source_1").expect("source_1 is simulated")
    }
}

impl Drop for TestSimulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Answers at once, and a job is completed as soon as it is submitted.
pub fn healthy() -> SourceBehaviour {
    SourceBehaviour {
        complete_after: std::time::Duration::ZERO,
        latency: std::time::Duration::ZERO,
        ..SourceBehaviour::default()
    }
}
