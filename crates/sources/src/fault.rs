//! Deterministic fault injection.
//!
//! Each request to a source takes the next number of that source's request counter, and its fault
//! is drawn from `StdRng::seed_from_u64(hash(seed, source name, number))`. So the same seed and
//! the same request sequence give the same faults, and a request's fault does not depend on how
//! requests to other sources interleave with it. (A shared `StdRng` behind a mutex would do the
//! same for one source, but would make every request wait on one lock.)

use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::config::SourceBehaviour;

/// What a request suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answered normally.
    None,
    /// `422` with a JSON error; nothing is done.
    Reject,
    /// `500`; nothing is done.
    Error,
    /// Carried out, then held for `hangFor` and answered `504`.
    Timeout,
    /// Carried out, then answered `200` with a body that is not JSON.
    Malformed,
}

/// Draws the fault of each request of one source.
#[derive(Debug)]
pub(crate) struct FaultPicker {
    key: u64,
    counter: AtomicU64,
    /// Cumulative thresholds, in the order of [`SourceBehaviour::rates`].
    thresholds: [f64; 4],
}

impl FaultPicker {
    pub(crate) fn new(seed: u64, source: &str, behaviour: &SourceBehaviour) -> Self {
        let mut thresholds = [0.0; 4];
        let mut sum = 0.0;
        for (threshold, (_, rate)) in thresholds.iter_mut().zip(behaviour.rates()) {
            sum += rate;
            *threshold = sum;
        }
        Self {
            key: stable_hash(&[&seed.to_le_bytes(), source.as_bytes()]),
            counter: AtomicU64::new(0),
            thresholds,
        }
    }

    /// The fault of the next request.
    pub(crate) fn next(&self) -> Fault {
        let number = self.counter.fetch_add(1, Ordering::Relaxed);
        let draw: f64 = StdRng::seed_from_u64(mix(self.key ^ mix(number))).random();
        let [reject, error, timeout, malformed] = self.thresholds;
        // Strict `<`: a rate of 0 never fires, a rate of 1 always does (draws are in [0, 1)).
        if draw < reject {
            Fault::Reject
        } else if draw < error {
            Fault::Error
        } else if draw < timeout {
            Fault::Timeout
        } else if draw < malformed {
            Fault::Malformed
        } else {
            Fault::None
        }
    }
}

/// FNV-1a over the parts, finished with [`mix`]. Spelled out rather than `DefaultHasher`, whose
/// algorithm may change between Rust releases: seeds must keep giving the same faults.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().copied().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    mix(hash)
}

/// The splitmix64 finaliser: spreads nearby inputs (counter values) over the whole range.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(seed: u64, error_rate: f64, malformed_rate: f64) -> FaultPicker {
        let behaviour = SourceBehaviour {
            error_rate,
            malformed_rate,
            ..SourceBehaviour::default()
        };
        FaultPicker::new(seed, "source_1", &behaviour)
    }

    #[test]
    fn rates_of_zero_and_one_are_never_and_always() {
        // Arrange
        let never = picker(1, 0.0, 0.0);
        let always = picker(1, 1.0, 0.0);

        // Act
        let faults: Vec<_> = (0..200).map(|_| (never.next(), always.next())).collect();

        // Assert
        assert!(faults.iter().all(|&(n, a)| n == Fault::None && a == Fault::Error));
    }

    #[test]
    fn faults_come_at_about_their_rates() {
        // Arrange
        let picker = picker(7, 0.2, 0.3);

        // Act
        let faults: Vec<_> = (0..10_000).map(|_| picker.next()).collect();

        // Assert
        let errors = faults.iter().filter(|&&f| f == Fault::Error).count();
        let malformed = faults.iter().filter(|&&f| f == Fault::Malformed).count();
        assert!((1_800..2_200).contains(&errors), "{errors}");
        assert!((2_700..3_300).contains(&malformed), "{malformed}");
    }
}
