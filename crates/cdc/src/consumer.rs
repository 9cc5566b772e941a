//! The Pub/Sub streaming-pull loop.
//!
//! Two budgets bound what a replica holds:
//! - `max_in_flight` **permits**: messages being handled (a database or Temporal call) at once;
//! - `max_parked` **parking slots**: messages of tenants in backoff, held (their lease kept
//!   alive by the client) without a permit until their tenant's next attempt.
//!
//! A transient failure backs off **its tenant** only (tenant = the event's `source.name`): that
//! tenant's messages wait in the parking lot, where they hold no permit, while the other tenants'
//! messages keep every permit. When the backoff ends, one message of the tenant is the probe;
//! the others wait for its result (a success releases them all, a failure doubles the backoff),
//! so a tenant whose database is down costs one failing call per backoff period, not one per
//! message. A full parking lot nacks the message instead (Pub/Sub redelivers it): the lot is
//! what bounds memory, the stream's flow control (`max_in_flight + max_parked`) what bounds the
//! lot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError as LockPoisoned};
use std::time::Duration;

use chrono::{DateTime, Utc};
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler;
use liquidity_core::TenantId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::envelope;
use crate::handler::{CdcDeps, CdcError, Outcome, PoisonError, handle_change};
use crate::metrics::{EventLabels, Settled, Timeline};
use crate::pubsub::{self, PubSubSettings};

/// First backoff of a tenant after a transient failure; doubles per failed probe up to
/// [`MAX_RETRY_DELAY`], so an outage never turns into a hot redelivery loop.
const BASE_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Attempts of a message whose start Temporal rejects before it is dead-lettered: a refusal
/// may be momentary (a namespace being created), a permanent one must not loop forever.
const MAX_REJECTED_ATTEMPTS: u32 = 5;

/// How the consumer runs.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerSettings {
    /// Messages handled at once (permits).
    pub max_in_flight: usize,
    /// Messages of tenants in backoff held without a permit, over all tenants. Past it, such a
    /// message is nacked (redelivered later) instead.
    pub max_parked: usize,
    /// How long shutdown waits for in-flight messages before giving up on them (they are then
    /// redelivered to another worker).
    pub drain_timeout: Duration,
}

/// Pulls `tenant-cdc` until `shutdown` is cancelled, then drains in-flight messages.
///
/// A broken stream (emulator restart, network) is reopened with backoff; with
/// `auto_create`, the topology is re-created first.
///
/// # Errors
/// Only when the clients cannot be built at all.
pub async fn run_consumer(
    pubsub: PubSubSettings,
    settings: ConsumerSettings,
    deps: Arc<CdcDeps>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subscriber = pubsub::subscriber(&pubsub).await?;
    let shared = Arc::new(Shared {
        deps,
        dead_letters: pubsub::publisher(&pubsub, &pubsub.dead_letter_topic).await?,
        permits: Arc::new(Semaphore::new(settings.max_in_flight)),
        parking: Arc::new(Semaphore::new(settings.max_parked)),
        gate: TenantGate::default(),
        dead_letter_backoff: Backoff::default(),
        shutdown: shutdown.clone(),
    });
    // Mirrors the stream's flow control, in case the server does not enforce it. The emulator
    // does not: what it pushes past this budget waits unread, so unleased by the client, and may
    // come back after the stream's deadline (docs/stack-notes.md, "The emulator ignores a
    // streaming pull's flow control"). Handlers are idempotent; the cost is a repeated start.
    let max_outstanding = settings.max_in_flight.saturating_add(settings.max_parked);
    let outstanding = Arc::new(Semaphore::new(max_outstanding));
    let tracker = TaskTracker::new();
    let reconnect = Backoff::default();
    let mut streams = Vec::new();
    tracing::info!(
        subscription = %pubsub.subscription_path(),
        max_in_flight = settings.max_in_flight,
        max_parked = settings.max_parked,
        "CDC consumer starting"
    );

    'reconnect: while !shutdown.is_cancelled() {
        if pubsub.auto_create
            && let Err(e) = pubsub::ensure_topology(&pubsub).await
        {
            tracing::warn!(error.cause_chain = ?e, "cannot create the Pub/Sub topology yet");
            sleep_or_cancel(reconnect.failure(), &shutdown).await;
            continue;
        }
        let mut stream = subscriber
            .subscribe(pubsub.subscription_path())
            .set_max_outstanding_messages(i64::try_from(max_outstanding).unwrap_or(i64::MAX))
            .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
            .build();
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => { streams.push(stream); break 'reconnect; }
                slot = outstanding.clone().acquire_owned() => slot?,
            };
            let next = tokio::select! {
                _ = shutdown.cancelled() => { streams.push(stream); break 'reconnect; }
                next = stream.next() => next,
            };
            match next {
                Some(Ok((message, handler))) => {
                    reconnect.reset();
                    let received_at = Utc::now();
                    let span = tracing::info_span!(
                        "cdc_message",
                        message_id = %message.message_id,
                        capture_ms = tracing::field::Empty,
                        relay_ms = tracing::field::Empty,
                        delivery_ms = tracing::field::Empty,
                    );
                    tracker.spawn(process(shared.clone(), slot, message, handler, received_at).instrument(span));
                }
                Some(Err(e)) => {
                    tracing::warn!(error.cause_chain = ?e, "Pub/Sub stream failed; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("Pub/Sub stream ended; reconnecting");
                    break;
                }
            }
        }
        sleep_or_cancel(reconnect.failure(), &shutdown).await;
    }

    tracker.close();
    tracing::info!(in_flight = tracker.len(), "CDC consumer draining");
    if tokio::time::timeout(settings.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = tracker.len(),
            "drain timed out; unacked messages will be redelivered"
        );
    }
    drop(streams);
    tracing::info!("CDC consumer stopped");
    Ok(())
}

/// What every message task shares.
struct Shared {
    deps: Arc<CdcDeps>,
    dead_letters: Publisher,
    /// Held only while a message is handled.
    permits: Arc<Semaphore>,
    /// Held while a message waits for its tenant's backoff or a retry.
    parking: Arc<Semaphore>,
    gate: TenantGate,
    /// Backoff of the dead-letter topic: one topic, so shared by all messages.
    dead_letter_backoff: Backoff,
    shutdown: CancellationToken,
}

/// Handles one message: acks it, dead-letters it, or releases it for redelivery. `_slot` is
/// the message's share of the stream's flow control, held until the message is settled.
async fn process(
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
    message: Message,
    handler: Handler,
    received_at: DateTime<Utc>,
) {
    let event = match envelope::decode(&message.data, &message.attributes) {
        Ok(event) => event,
        Err(e) => {
            let reason = PoisonError::from(e).to_string();
            return dead_letter_or_release(&shared, &message, handler, &reason, &EventLabels::undecodable()).await;
        }
    };
    let labels = EventLabels::of(&shared.deps.registry, &event);
    let timeline = Timeline {
        committed_at: event.committed_at,
        captured_at: event.captured_at,
        published_at: message
            .publish_time
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds(), u32::try_from(t.nanos()).unwrap_or(0))),
        received_at,
    };
    timeline.record_in(&tracing::Span::current());
    let tenant_id = event.tenant_id;
    let mut rejected_attempts = 0;
    loop {
        if let Err(released) = shared.wait_turn(tenant_id).await {
            tracing::debug!(?released, %tenant_id, "message released for redelivery");
            handler.nack();
            labels.settled(Settled::Redelivered);
            return;
        }
        let permit = tokio::select! {
            () = shared.shutdown.cancelled() => { handler.nack(); labels.settled(Settled::Redelivered); return; }
            permit = shared.permits.acquire() => permit.expect("the permit semaphore is never closed"),
        };
        // The tenant may have started backing off while this message waited for its permit
        // (a burst of its messages queued behind the first failure): checked again, and this
        // time claimed (the probe after a backoff is whoever claims first).
        if shared.gate.admit(tenant_id, Instant::now(), true) != Turn::Go {
            continue;
        }
        let result = handle_change(&shared.deps, event.clone()).await;
        drop(permit);
        match result {
            Ok(outcome) => {
                tracing::debug!(?outcome, "handled");
                handler.ack();
                timeline.handled(&labels);
                if matches!(outcome, Outcome::Ignored(_)) {
                    labels.settled(Settled::Ignored);
                    // Touched nothing: says nothing about the tenant's health.
                    shared.gate.inconclusive(tenant_id);
                } else {
                    labels.settled(Settled::Handled);
                    shared.gate.succeeded(tenant_id);
                }
                return;
            }
            Err(CdcError::Poison(reason)) => {
                shared.gate.inconclusive(tenant_id);
                return dead_letter_or_release(&shared, &message, handler, &reason.to_string(), &labels).await;
            }
            Err(CdcError::Rejected(e)) => {
                shared.gate.inconclusive(tenant_id);
                rejected_attempts += 1;
                if rejected_attempts >= MAX_REJECTED_ATTEMPTS {
                    tracing::error!(error.cause_chain = ?e, error.message = %e, attempts = rejected_attempts, "Temporal keeps rejecting the start: dead-lettering");
                    let reason = format!("{}", anyhow::Error::new(e).context("Temporal rejected the start"));
                    return dead_letter_or_release(&shared, &message, handler, &reason, &labels).await;
                }
                let delay = BASE_RETRY_DELAY.saturating_mul(1 << rejected_attempts);
                tracing::warn!(error.cause_chain = ?e, error.message = %e, attempt = rejected_attempts, retry_in = ?delay, "Temporal rejected the start; retrying");
                // Parked if there is room; otherwise retried at once (still bounded).
                if let Ok(_parked) = shared.parking.clone().try_acquire_owned()
                    && !sleep_or_cancel(delay, &shared.shutdown).await
                {
                    handler.nack();
                    labels.settled(Settled::Redelivered);
                    return;
                }
            }
            Err(CdcError::Transient(e)) => {
                let retry_in = shared.gate.failed(tenant_id, Instant::now());
                labels.transient_failure();
                tracing::warn!(%tenant_id, error.cause_chain = ?e, error.message = %e, ?retry_in, "transient failure; the tenant backs off");
            }
        }
    }
}

/// Dead-letters a poison message and acks it; if the dead-letter topic cannot be reached,
/// waits (without a permit) and nacks it so that it comes back.
async fn dead_letter_or_release(
    shared: &Shared,
    message: &Message,
    handler: Handler,
    reason: &str,
    labels: &EventLabels,
) {
    tracing::warn!(%reason, "dead-lettering a message that can never succeed");
    match dead_letter(&shared.dead_letters, message, reason).await {
        Ok(()) => {
            shared.dead_letter_backoff.reset();
            handler.ack();
            labels.settled(Settled::DeadLettered);
        }
        Err(e) => {
            let delay = shared.dead_letter_backoff.failure();
            tracing::error!(error.cause_chain = ?e, retry_in = ?delay, "dead-letter publish failed");
            sleep_or_cancel(delay, &shared.shutdown).await;
            handler.nack();
            labels.settled(Settled::Redelivered);
        }
    }
}

/// Why a message waiting for its tenant's turn was given back to Pub/Sub.
#[derive(Debug)]
enum Released {
    /// The parking lot is full.
    ParkingFull,
    /// The worker is shutting down.
    Shutdown,
}

impl Shared {
    /// Waits until `tenant_id` looks ready to be tried: at once for a healthy tenant; for one in
    /// backoff, parked (no permit) until its backoff ends or its probe succeeds. The caller
    /// claims its turn once it holds a permit.
    async fn wait_turn(&self, tenant_id: TenantId) -> Result<(), Released> {
        let mut parked = None;
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = self.gate.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let until = match self.gate.admit(tenant_id, Instant::now(), false) {
                Turn::Go => return Ok(()),
                Turn::Wait(until) => until,
            };
            if parked.is_none() {
                parked = Some(
                    self.parking
                        .clone()
                        .try_acquire_owned()
                        .map_err(|_| Released::ParkingFull)?,
                );
            }
            let backoff_over = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = backoff_over => {}
                () = &mut changed => {}
                () = self.shutdown.cancelled() => return Err(Released::Shutdown),
            }
        }
    }
}

/// Whether a message of a tenant may be tried now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Try it.
    Go,
    /// Wait until this instant, or until the tenant's state changes (`None`: a probe of the
    /// tenant is in flight, wait for its result).
    Wait(Option<Instant>),
}

/// Per-tenant backoff. Healthy tenants have no entry.
#[derive(Default)]
struct TenantGate {
    tenants: Mutex<HashMap<TenantId, TenantBackoff>>,
    /// Notified whenever a tenant's state changes, to wake its parked messages.
    changed: Notify,
}

#[derive(Debug, Default)]
struct TenantBackoff {
    /// Failed probes so far (the first failure included).
    failures: u32,
    /// No message of the tenant is tried before this.
    retry_at: Option<Instant>,
    /// One message of the tenant is being tried after the backoff: the others wait for it.
    probing: bool,
}

impl TenantGate {
    /// Whether a message of the tenant may be tried now. With `claim`, a message allowed after
    /// a backoff becomes the tenant's probe (and the others wait for its result); without, this
    /// only looks.
    fn admit(&self, tenant_id: TenantId, now: Instant, claim: bool) -> Turn {
        let mut tenants = self.tenants.lock().unwrap_or_else(LockPoisoned::into_inner);
        let Some(state) = tenants.get_mut(&tenant_id) else {
            return Turn::Go;
        };
        match state.retry_at {
            _ if state.probing => Turn::Wait(None),
            Some(at) if now < at => Turn::Wait(Some(at)),
            _ => {
                state.probing |= claim;
                Turn::Go
            }
        }
    }

    /// A transient failure: starts or extends the tenant's backoff and returns what is left
    /// of it. Failures of messages tried before the backoff started count once: only the
    /// first failure and failed probes double the delay.
    fn failed(&self, tenant_id: TenantId, now: Instant) -> Duration {
        let mut tenants = self.tenants.lock().unwrap_or_else(LockPoisoned::into_inner);
        let state = tenants.entry(tenant_id).or_default();
        if let Some(at) = state.retry_at
            && now < at
        {
            return at - now;
        }
        let delay = BASE_RETRY_DELAY
            .saturating_mul(1 << state.failures.min(16))
            .min(MAX_RETRY_DELAY);
        state.failures += 1;
        state.retry_at = Some(now + delay);
        state.probing = false;
        drop(tenants);
        self.changed.notify_waiters();
        delay
    }

    /// The tenant answered: its backoff ends and its parked messages go.
    fn succeeded(&self, tenant_id: TenantId) {
        let removed = self
            .tenants
            .lock()
            .unwrap_or_else(LockPoisoned::into_inner)
            .remove(&tenant_id);
        if removed.is_some() {
            self.changed.notify_waiters();
        }
    }

    /// A message that proved nothing about the tenant (poison, ignored, rejected): if it was
    /// the probe, the next message becomes the probe.
    fn inconclusive(&self, tenant_id: TenantId) {
        let mut tenants = self.tenants.lock().unwrap_or_else(LockPoisoned::into_inner);
        if let Some(state) = tenants.get_mut(&tenant_id)
            && state.probing
        {
            state.probing = false;
            drop(tenants);
            self.changed.notify_waiters();
        }
    }
}

/// Republishes a poison message unchanged, with why it was refused.
async fn dead_letter(publisher: &Publisher, message: &Message, reason: &str) -> anyhow::Result<()> {
    let mut attributes: HashMap<String, String> = message.attributes.clone();
    attributes.insert("dead_letter_reason".to_owned(), reason.to_owned());
    attributes.insert("original_message_id".to_owned(), message.message_id.clone());
    publisher
        .publish(Message::new().set_data(message.data.clone()).set_attributes(attributes))
        .await?;
    Ok(())
}

/// Sleeps for `delay`; `false` when `shutdown` came first.
async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Exponential backoff over consecutive failures of one shared resource (the stream, the
/// dead-letter topic).
#[derive(Default)]
struct Backoff {
    consecutive_failures: AtomicU32,
}

impl Backoff {
    fn failure(&self) -> Duration {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed).min(16);
        BASE_RETRY_DELAY.saturating_mul(1 << n).min(MAX_RETRY_DELAY)
    }

    fn reset(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u128) -> TenantId {
        format!("00000000-0000-4000-8000-{n:012x}").parse().unwrap()
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_and_reset_on_success() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.failure()).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(delays[2], Duration::from_secs(1));
        assert_eq!(delays[9], MAX_RETRY_DELAY);
        backoff.reset();
        assert_eq!(backoff.failure(), BASE_RETRY_DELAY);
    }

    #[test]
    fn a_failing_tenant_backs_off_alone_and_another_tenants_success_does_not_reset_it() {
        // Arrange
        let gate = TenantGate::default();
        let now = Instant::now();

        // Act: t2 fails, t1 succeeds
        let delay = gate.failed(tenant(2), now);
        gate.succeeded(tenant(1));

        // Assert
        assert_eq!(delay, BASE_RETRY_DELAY);
        assert_eq!(gate.admit(tenant(1), now, true), Turn::Go);
        assert_eq!(
            gate.admit(tenant(2), now, true),
            Turn::Wait(Some(now + BASE_RETRY_DELAY))
        );
    }

    #[test]
    fn after_the_backoff_one_probe_goes_and_the_others_wait_for_its_result() {
        // Arrange
        let gate = TenantGate::default();
        let now = Instant::now();
        gate.failed(tenant(2), now);
        let later = now + BASE_RETRY_DELAY;

        // Act
        let probe = gate.admit(tenant(2), later, true);
        let other = gate.admit(tenant(2), later, true);

        // Assert
        assert_eq!(probe, Turn::Go);
        assert_eq!(other, Turn::Wait(None));
    }

    #[test]
    fn a_failed_probe_doubles_the_backoff_and_a_successful_one_ends_it() {
        // Arrange
        let gate = TenantGate::default();
        let now = Instant::now();
        gate.failed(tenant(2), now);
        let later = now + BASE_RETRY_DELAY;
        assert_eq!(gate.admit(tenant(2), later, true), Turn::Go);

        // Act
        let second = gate.failed(tenant(2), later);
        let much_later = later + second;
        assert_eq!(gate.admit(tenant(2), much_later, true), Turn::Go);
        gate.succeeded(tenant(2));

        // Assert
        assert_eq!(second, BASE_RETRY_DELAY * 2);
        assert_eq!(gate.admit(tenant(2), much_later, true), Turn::Go);
        assert!(gate.tenants.lock().unwrap().is_empty());
    }

    #[test]
    fn concurrent_failures_of_one_outage_count_once() {
        // Arrange
        let gate = TenantGate::default();
        let now = Instant::now();

        // Act: three messages tried before the backoff started all fail
        let delays: Vec<Duration> = (0..3).map(|_| gate.failed(tenant(2), now)).collect();

        // Assert
        assert_eq!(delays, vec![BASE_RETRY_DELAY; 3]);
        assert_eq!(gate.tenants.lock().unwrap()[&tenant(2)].failures, 1);
    }

    #[test]
    fn an_inconclusive_probe_lets_the_next_message_probe() {
        // Arrange
        let gate = TenantGate::default();
        let now = Instant::now();
        gate.failed(tenant(2), now);
        let later = now + BASE_RETRY_DELAY;
        assert_eq!(gate.admit(tenant(2), later, true), Turn::Go);

        // Act
        gate.inconclusive(tenant(2));

        // Assert
        assert_eq!(gate.admit(tenant(2), later, true), Turn::Go);
    }
}
