//! The Pub/Sub streaming-pull loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::handler::{CdcDeps, CdcError, handle_message};
use crate::pubsub::{self, PubSubSettings};

/// First delay before a failed message is released for redelivery; doubles per consecutive
/// failure up to [`MAX_RETRY_DELAY`], so an outage never turns into a hot redelivery loop.
const BASE_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How the consumer runs.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerSettings {
    /// Messages handled at once (and leased from Pub/Sub at once).
    pub max_in_flight: usize,
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
    let dead_letters = Arc::new(pubsub::publisher(&pubsub, &pubsub.dead_letter_topic).await?);
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(settings.max_in_flight));
    let backoff = Arc::new(Backoff::default());
    let reconnect = Backoff::default();
    let mut streams = Vec::new();
    tracing::info!(subscription = %pubsub.subscription_path(), max_in_flight = settings.max_in_flight, "CDC consumer starting");

    'reconnect: while !shutdown.is_cancelled() {
        if pubsub.auto_create
            && let Err(e) = pubsub::ensure_topology(&pubsub).await
        {
            tracing::warn!(error.cause_chain = ?e, "cannot create the Pub/Sub topology yet");
            sleep_or_cancel(reconnect.failure(), &shutdown).await;
            continue;
        }
        let max_outstanding = i64::try_from(settings.max_in_flight).unwrap_or(i64::MAX);
        let mut stream = subscriber
            .subscribe(pubsub.subscription_path())
            .set_max_outstanding_messages(max_outstanding)
            .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
            .build();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => { streams.push(stream); break 'reconnect; }
                permit = permits.clone().acquire_owned() => permit?,
            };
            let next = tokio::select! {
                _ = shutdown.cancelled() => { streams.push(stream); break 'reconnect; }
                next = stream.next() => next,
            };
            match next {
                Some(Ok((message, handler))) => {
                    reconnect.reset();
                    let span = tracing::info_span!("cdc_message", message_id = %message.message_id);
                    let task = Task {
                        deps: deps.clone(),
                        dead_letters: dead_letters.clone(),
                        backoff: backoff.clone(),
                        shutdown: shutdown.clone(),
                        _permit: permit,
                    };
                    tracker.spawn(process(task, message, handler).instrument(span));
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

/// What one message task holds; the permit is released when the task ends.
struct Task {
    deps: Arc<CdcDeps>,
    dead_letters: Arc<Publisher>,
    backoff: Arc<Backoff>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

/// Handles one message and acks it, dead-letters it, or releases it for redelivery.
async fn process(task: Task, message: Message, handler: Handler) {
    match handle_message(&task.deps, &message.data, &message.attributes).await {
        Ok(outcome) => {
            tracing::debug!(?outcome, "handled");
            handler.ack();
            task.backoff.reset();
        }
        Err(CdcError::Poison(reason)) => {
            tracing::warn!(%reason, "dead-lettering a message that can never succeed");
            match dead_letter(&task.dead_letters, &message, &reason.to_string()).await {
                Ok(()) => handler.ack(),
                Err(e) => {
                    let delay = task.backoff.failure();
                    tracing::error!(error.cause_chain = ?e, retry_in = ?delay, "dead-letter publish failed");
                    sleep_or_cancel(delay, &task.shutdown).await;
                    handler.nack();
                }
            }
        }
        Err(CdcError::Transient(e)) => {
            let delay = task.backoff.failure();
            tracing::warn!(error.cause_chain = ?e, error.message = %e, retry_in = ?delay, "transient failure; message will be redelivered");
            sleep_or_cancel(delay, &task.shutdown).await;
            handler.nack();
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

async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Exponential backoff over consecutive failures, shared by concurrent tasks.
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
}
