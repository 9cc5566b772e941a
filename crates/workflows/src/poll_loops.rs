//! The poll loops a workflow worker carries: their slots (`WORKER_MAX_ACTIVITIES`), the client
//! they report through, and their hand-over when the worker shuts down.
//!
//! A `pollSource` activity takes a slot, starts its content's [`PollLoop`] on a task of its own
//! and returns: the SDK's activity slot is free again within milliseconds, so the SDK needs only
//! a few ([`HANDOFF_SLOTS`]), and the bound on polling contents is this one. When every slot is
//! taken, a new activity waits for one, heartbeating, and says so (a warning and
//! `lqdty_workflow_contents_waiting_for_a_loop`); the SDK then stops taking activities once its
//! own few slots are taken, and the rest wait in Temporal's backlog, where [`crate::backlog`]
//! sees them and where another replica with free slots takes them.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use temporalio_client::Client;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activities::PollProgress;
use crate::poll_loop::HEARTBEAT_EVERY;

/// Activity slots of the SDK: activities in the middle of being handed to a loop, or waiting for
/// a loop slot. A hand-over takes microseconds, so the SDK's default (100) is plenty for its
/// pollers and for eager activity dispatch, and it bounds the contents that wait in one replica
/// when its loops are full (the others stay in Temporal's backlog, for any replica).
pub const HANDOFF_SLOTS: usize = 100;

/// Longest wait, after the loops are told to hand over, for their reports to reach Temporal.
/// One not sent in time is no loss: its attempt times out on the server and is retried.
const HANDOVER_REPORTS_WITHIN: Duration = Duration::from_secs(20);

/// A loop's slot among the worker's `WORKER_MAX_ACTIVITIES`, given back when it is dropped.
pub(crate) struct LoopSlot {
    /// Held, never read: dropping it gives the slot back.
    pub(crate) _permit: OwnedSemaphorePermit,
    /// The content waited for the slot, heartbeating through the SDK, which sends at most one
    /// heartbeat per period: the loop's first must then go out at once, not a period later.
    pub(crate) waited: bool,
}

/// The worker's poll loops. Created with the activities, opened by the worker once it is
/// connected (until then there is no slot, and no activity runs either).
pub struct PollLoops {
    slots: Arc<Semaphore>,
    opened: OnceLock<Opened>,
    running: TaskTracker,
    handover: CancellationToken,
}

struct Opened {
    client: Client,
    capacity: usize,
}

impl Default for PollLoops {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(0)),
            opened: OnceLock::new(),
            running: TaskTracker::new(),
            handover: CancellationToken::new(),
        }
    }
}

impl PollLoops {
    /// Gives the loops `capacity` slots and the client they report through. Once per worker.
    ///
    /// # Panics
    /// When called twice: one set of activities serves one worker.
    pub(crate) fn open(&self, client: Client, capacity: usize) {
        assert!(
            self.opened.set(Opened { client, capacity }).is_ok(),
            "the poll loops of one set of activities are opened once, by one worker"
        );
        self.slots.add_permits(capacity);
    }

    fn opened(&self) -> &Opened {
        self.opened
            .get()
            .expect("activities run only once their worker has opened the poll loops")
    }

    /// The client the loops report through.
    pub(crate) fn client(&self) -> &Client {
        &self.opened().client
    }

    /// Cancelled when the loops must hand their contents over to another worker.
    pub(crate) fn handover(&self) -> &CancellationToken {
        &self.handover
    }

    /// A slot for a new loop. When none is free, waits for one, visibly, and heartbeats the
    /// activity meanwhile so that the server does not time it out. Cancelled with the activity
    /// (worker shutdown, workflow cancelled).
    pub(crate) async fn slot(&self, ctx: &ActivityContext, progress: &PollProgress) -> Result<LoopSlot, ActivityError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(LoopSlot {
                _permit: permit,
                waited: false,
            });
        }
        let _waiting = crate::metrics::Counted::waiting_for_a_loop();
        tracing::warn!(
            slots = self.opened().capacity,
            "a content waits for a poll loop: every slot of this worker is taken (WORKER_MAX_ACTIVITIES); add replicas or slots"
        );
        let acquire = self.slots.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                permit = &mut acquire => {
                    let permit = permit.expect("the slots are never closed");
                    return Ok(LoopSlot { _permit: permit, waited: true });
                }
                () = ctx.cancelled() => return Err(ActivityError::cancelled()),
                () = tokio::time::sleep(HEARTBEAT_EVERY / 4) => {
                    ctx.record_heartbeat(progress.clone()).await.map_err(ActivityError::from)?;
                }
            }
        }
    }

    /// Runs a loop on a task of its own, counted until it ends.
    pub(crate) fn spawn(&self, poll_loop: impl Future<Output = ()> + Send + 'static) {
        self.running.spawn(poll_loop);
    }

    /// Lets running loops go on for `grace` (a content done meanwhile completes here), then tells
    /// the rest to hand over, and returns once every loop has reported or
    /// [`HANDOVER_REPORTS_WITHIN`] later.
    pub(crate) async fn drain(&self, grace: Duration) {
        self.running.close();
        tokio::select! {
            () = self.running.wait() => return,
            () = tokio::time::sleep(grace) => {}
        }
        tracing::info!(
            running = self.running.len(),
            "handing the poll loops over to other workers"
        );
        self.handover.cancel();
        if tokio::time::timeout(HANDOVER_REPORTS_WITHIN, self.running.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.running.len(),
                "poll loops did not report their hand-over in time; Temporal retries them after the heartbeat timeout"
            );
        }
    }
}
