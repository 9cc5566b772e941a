//! Per-source counters, readable while the simulator runs (tests and benchmarks assert on them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::fault::Fault;

/// Live counters of one source. Relaxed atomics: each counter is exact, but a snapshot taken
/// while requests run may mix counts from slightly different instants.
#[derive(Debug, Default)]
pub struct SourceStats {
    posts: AtomicU64,
    gets: AtomicU64,
    jobs_created: AtomicU64,
    jobs_completed: AtomicU64,
    rejects_injected: AtomicU64,
    errors_injected: AtomicU64,
    timeouts_injected: AtomicU64,
    malformed_injected: AtomicU64,
}

/// The counters of one source at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatsSnapshot {
    /// `POST /jobs` requests received, faulty ones included.
    pub posts: u64,
    /// `GET /jobs/{id}` requests received, faulty ones and unknown ids included.
    pub gets: u64,
    /// Jobs created (an idempotent repeat of a `POST` creates none).
    pub jobs_created: u64,
    /// Jobs seen completed by a poll (each counted once).
    pub jobs_completed: u64,
    /// `422` answers injected.
    pub rejects_injected: u64,
    /// `500` answers injected.
    pub errors_injected: u64,
    /// Held-then-`504` answers injected.
    pub timeouts_injected: u64,
    /// Non-JSON `200` answers injected.
    pub malformed_injected: u64,
}

impl SourceStatsSnapshot {
    /// All injected faults.
    pub fn faults_injected(&self) -> u64 {
        self.rejects_injected + self.errors_injected + self.timeouts_injected + self.malformed_injected
    }
}

impl SourceStats {
    /// The counters now.
    pub fn snapshot(&self) -> SourceStatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SourceStatsSnapshot {
            posts: read(&self.posts),
            gets: read(&self.gets),
            jobs_created: read(&self.jobs_created),
            jobs_completed: read(&self.jobs_completed),
            rejects_injected: read(&self.rejects_injected),
            errors_injected: read(&self.errors_injected),
            timeouts_injected: read(&self.timeouts_injected),
            malformed_injected: read(&self.malformed_injected),
        }
    }

    pub(crate) fn post(&self) {
        self.posts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) {
        self.gets.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn job_created(&self) {
        self.jobs_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn job_completed(&self) {
        self.jobs_completed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fault(&self, fault: Fault) {
        let counter = match fault {
            Fault::None => return,
            Fault::Reject => &self.rejects_injected,
            Fault::Error => &self.errors_injected,
            Fault::Timeout => &self.timeouts_injected,
            Fault::Malformed => &self.malformed_injected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A cheap, cloneable handle on the counters of every source; it stays valid after
/// [`crate::Simulator::run_until_stopped`] has taken the simulator.
#[derive(Clone, Debug, Default)]
pub struct SimulatorStats {
    sources: BTreeMap<String, Arc<SourceStats>>,
}

impl SimulatorStats {
    pub(crate) fn insert(&mut self, source: &str) -> Arc<SourceStats> {
        self.sources.entry(source.to_owned()).or_default().clone()
    }

    /// The counters of `source` now, if it is one of the simulated sources.
    pub fn source(&self, source: &str) -> Option<SourceStatsSnapshot> {
        self.sources.get(source).map(|stats| stats.snapshot())
    }

    /// The counters of every source now, by source name.
    pub fn snapshot(&self) -> BTreeMap<String, SourceStatsSnapshot> {
        self.sources
            .iter()
            .map(|(name, stats)| (name.clone(), stats.snapshot()))
            .collect()
    }
}
