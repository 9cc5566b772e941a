//! Per-client-IP token buckets for the endpoints that hash a password (`login`, `register`).
//!
//! The per-account lockout (in `liquidity_core::accounts`) stops guessing one account; this
//! stops one client from spraying guesses over many accounts, or from filling the hash slots.
//! Buckets live in this process: N API replicas admit up to N times the rate, which the docs
//! say when sizing it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How many requests one client may make: `per_minute` on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpQuota {
    /// Sustained rate, requests per minute (at least 1).
    pub per_minute: NonZeroU32,
    /// Requests a client may make at once after a quiet period (at least 1).
    pub burst: NonZeroU32,
}

/// Forget idle clients after this many checks, so that a spray of addresses cannot grow the
/// table without bound.
const PRUNE_EVERY: u32 = 4096;

/// Keyed token buckets, one per client address (an IPv6 client per /64, the block one host
/// usually gets).
pub struct IpThrottle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    checks: AtomicU32,
}

impl IpThrottle {
    /// Buckets with this quota.
    pub fn new(quota: IpQuota) -> Self {
        let quota = Quota::per_minute(quota.per_minute).allow_burst(quota.burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: AtomicU32::new(0),
        }
    }

    /// Takes a token for this client.
    ///
    /// # Errors
    /// How long the client must wait, when its bucket is empty.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&bucket_of(client))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The bucket key: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
fn bucket_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(burst: u32) -> IpThrottle {
        IpThrottle::new(IpQuota {
            per_minute: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_while_another_client_is_unaffected() {
        // Arrange
        let throttle = throttle(3);
        let alice: IpAddr = "192.0.2.1".parse().unwrap();
        let bob: IpAddr = "192.0.2.2".parse().unwrap();

        // Act
        let burst: Vec<_> = (0..3).map(|_| throttle.check(alice)).collect();
        let fourth = throttle.check(alice);

        // Assert
        assert!(burst.iter().all(Result::is_ok), "{burst:?}");
        let wait = fourth.unwrap_err();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(throttle.check(bob).is_ok());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
        let throttle = throttle(1);
        assert!(throttle.check("2001:db8:1:2::1".parse().unwrap()).is_ok());
        assert!(throttle.check("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        assert!(throttle.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert!(throttle.check("192.0.2.7".parse().unwrap()).is_ok());
        assert!(throttle.check("::ffff:192.0.2.7".parse().unwrap()).is_err());
    }
}
