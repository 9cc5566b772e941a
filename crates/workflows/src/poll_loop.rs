//! The poll loop of one report content, detached from the `pollSource` activity that started it.
//!
//! The activity hands its content to a loop on a task of its own and returns at once, telling
//! the SDK that the attempt completes asynchronously: the SDK then keeps nothing of it. The loop
//! reports to Temporal itself, by the attempt's task token: heartbeats while it polls, then the
//! attempt's completion, failure or hand-over ([`Reporter`]). What a polling content costs this
//! process is this loop's task, about 1.3 KiB, instead of the ~11.5 KiB that the SDK kept per
//! running activity (README, "Memory at 3,000 reports").

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::Utc;
use liquidity_core::reports::{self, ReportContent};
use liquidity_core::sources::JobRequest;
use liquidity_core::tenancy::TenancyError;
use liquidity_core::{ReportContentId, TenantId};
use sqlx::PgPool;
use temporalio_client::errors::AsyncActivityError;
use temporalio_client::{ActivityIdentifier, AsyncActivityHandle, Client, RpcOptions};
use temporalio_common::protos::TaskToken;
use temporalio_sdk::ApplicationFailure;
use tokio::time::Instant;

use crate::activities::{Backoff, FetchPolicy, PollProgress, RowCheck, SourceActivities, Step, check_row, next_step};
use crate::poll_loops::LoopSlot;
use crate::workflows::{FetchOutcome, POLL_SOURCE_HEARTBEAT_TIMEOUT};

/// How often a loop heartbeats its attempt: 0.8 x the heartbeat timeout, the period the SDK
/// used when it sent them. The first goes out one period after the loop starts (less up to
/// [`FIRST_HEARTBEAT_SPREAD`]), so a content done sooner (every content of the `burst` bench)
/// costs Temporal no heartbeat at all. Each heartbeat is a write of the workflow's state on the
/// server; the 24 s left before the timeout are for the call itself, which runs beside the pass
/// or the wait, never delaying them.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(POLL_SOURCE_HEARTBEAT_TIMEOUT.as_secs() * 4 / 5);

/// The first heartbeat of a loop goes out up to this much before [`HEARTBEAT_EVERY`], spread by
/// its content id: the contents of a burst start within seconds of each other, and their first
/// heartbeats would otherwise reach the server together, one period later.
pub const FIRST_HEARTBEAT_SPREAD: Duration = Duration::from_secs(24);

/// Why an attempt failed. Turned into Temporal's failure (432 bytes) only when reported: a loop
/// keeps this (16 bytes) in its state, which every polling content holds.
#[derive(Debug)]
struct AttemptFailure {
    error: anyhow::Error,
    retryable: bool,
}

impl AttemptFailure {
    fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self {
            error: error.into(),
            retryable: true,
        }
    }

    fn into_application_failure(self) -> ApplicationFailure {
        let error: Box<dyn std::error::Error + Send + Sync> = self.error.into();
        if self.retryable {
            ApplicationFailure::new(error)
        } else {
            ApplicationFailure::non_retryable(error)
        }
    }
}

/// How a loop ended, and what it tells Temporal.
#[derive(Debug)]
enum LoopEnd {
    /// The content is done: the attempt completes with this outcome.
    Finished(FetchOutcome),
    /// The attempt failed (a database error, a stuck pass, an unknown tenant): Temporal retries
    /// it, from `progress`, unless the failure is non-retryable.
    Failed {
        failure: AttemptFailure,
        progress: PollProgress,
    },
    /// The worker is shutting down: the attempt fails retryably with `progress`, so another
    /// worker resumes it about a second later (the retry policy's first interval).
    HandedOver(PollProgress),
    /// The server asked for the attempt's cancellation (its workflow was cancelled).
    Cancelled(PollProgress),
    /// The server no longer knows the attempt: it timed out (another attempt may run elsewhere)
    /// or its workflow closed. Nothing to report.
    Lost,
}

/// What stops a loop before its content ends.
enum Interrupt {
    /// The server asked for the attempt's cancellation.
    Cancelled,
    /// The server no longer knows the attempt.
    Lost,
    /// The worker is shutting down.
    HandOver,
}

/// The loop's line to Temporal: its attempt's task token and when the next heartbeat is due.
struct Reporter<'a> {
    client: &'a Client,
    token: TaskToken,
    next_beat: Instant,
}

impl<'a> Reporter<'a> {
    fn new(client: &'a Client, token: TaskToken, first_beat_after: Duration) -> Self {
        Self {
            client,
            token,
            next_beat: Instant::now() + first_beat_after,
        }
    }

    fn handle(&self) -> AsyncActivityHandle<Client> {
        AsyncActivityHandle::new(self.client.clone(), ActivityIdentifier::TaskToken(self.token.clone()))
    }

    /// Heartbeats `progress` whenever one is due; returns only when the server says the attempt
    /// is cancelled or gone.
    async fn keep_alive(&mut self, progress: &Mutex<PollProgress>) -> Interrupt {
        loop {
            tokio::time::sleep_until(self.next_beat).await;
            // One heartbeat in flight at most, and one per period whatever its fate: given up
            // and sent again sooner, heartbeats that a busy server answers slowly multiply
            // (each costs it a state load) until it answers none in time. A failed one may
            // let the attempt time out; the server then retries it from its last details.
            let sent = Instant::now();
            self.next_beat = sent + HEARTBEAT_EVERY;
            let handle = self.handle();
            let details = Some(lock(progress).clone());
            let options = RpcOptions::builder().timeout(HEARTBEAT_EVERY).build();
            // Boxed: the client's call is large, and only exists while it runs.
            let beat = Box::pin(async move { handle.heartbeat(details, options).await });
            match beat.await {
                Ok(response) if response.cancel_requested => return Interrupt::Cancelled,
                Ok(_) => {}
                Err(AsyncActivityError::NotFound(_)) => return Interrupt::Lost,
                Err(e) => tracing::warn!(error = %e, "cannot heartbeat the poll loop's attempt"),
            }
        }
    }

    /// Tells Temporal how the loop ended. A report that fails is logged and left to the
    /// server: the attempt then times out and its retry finds the row as this loop left it.
    async fn report(&self, end: LoopEnd) {
        let handle = self.handle();
        let options = RpcOptions::default;
        let reported = match end {
            LoopEnd::Finished(outcome) => Box::pin(handle.complete(Some(outcome), options())).await,
            LoopEnd::Failed { failure, progress } => {
                Box::pin(handle.fail(failure.into_application_failure(), Some(progress), options())).await
            }
            LoopEnd::HandedOver(progress) => {
                let failure =
                    ApplicationFailure::new("the workflow worker shut down; another worker resumes the poll loop");
                Box::pin(handle.fail(failure, Some(progress), options())).await
            }
            LoopEnd::Cancelled(progress) => Box::pin(handle.report_cancelation(Some(progress), options())).await,
            LoopEnd::Lost => Ok(()),
        };
        if let Err(e) = reported {
            tracing::warn!(error = %e, "cannot report the end of the poll loop's attempt; Temporal retries it after the heartbeat timeout");
        }
    }
}

/// Everything one loop needs, moved onto its task.
pub(crate) struct PollLoop {
    pub(crate) activities: Arc<SourceActivities>,
    pub(crate) token: TaskToken,
    pub(crate) tenant_id: TenantId,
    pub(crate) content_id: ReportContentId,
    pub(crate) progress: PollProgress,
    /// The loop's slot, given back when it ends.
    pub(crate) slot: LoopSlot,
}

impl PollLoop {
    /// Polls the content to its end, then reports the end to Temporal.
    pub(crate) async fn run(self) {
        let _active = crate::metrics::Counted::poll_loop();
        let Self {
            activities,
            token,
            tenant_id,
            content_id,
            progress,
            slot,
        } = self;
        let loops = activities.loops();
        let first_beat_after = if slot.waited {
            Duration::ZERO
        } else {
            first_heartbeat_after(content_id)
        };
        let mut reporter = Reporter::new(loops.client(), token, first_beat_after);
        let end = poll(&activities, &mut reporter, tenant_id, content_id, progress).await;
        match &end {
            LoopEnd::Finished(outcome) => {
                crate::metrics::finished(outcome);
                tracing::info!(%tenant_id, %content_id, ?outcome, "pollSource finished");
            }
            LoopEnd::Failed { failure, .. } => {
                tracing::warn!(%tenant_id, %content_id, error = ?failure.error, retryable = failure.retryable, "pollSource attempt failed");
            }
            LoopEnd::HandedOver(_) => {
                tracing::info!(%tenant_id, %content_id, "pollSource handed over; Temporal retries it elsewhere")
            }
            LoopEnd::Cancelled(_) => tracing::info!(%tenant_id, %content_id, "pollSource cancelled by the server"),
            LoopEnd::Lost => tracing::info!(
                %tenant_id,
                %content_id,
                "pollSource attempt no longer known to Temporal (timed out, or its workflow closed); loop stopped"
            ),
        }
        // Boxed: the client's calls are large, and a loop reports once, at its end.
        Box::pin(reporter.report(end)).await;
        drop(slot);
    }
}

/// The loop, with its heartbeats beside it for its whole life and the worker's hand-over. The
/// heartbeats are one future, never cut short by the loop's own steps: at most one is in flight,
/// and a slow one is not sent again (cutting and re-sending slow heartbeats at every pass and
/// wait turned 9,000 polling contents into a storm of state loads on a busy server).
async fn poll(
    activities: &SourceActivities,
    reporter: &mut Reporter<'_>,
    tenant_id: TenantId,
    content_id: ReportContentId,
    progress: PollProgress,
) -> LoopEnd {
    // Written by the loop after each pass, read by each heartbeat.
    let progress = Mutex::new(progress);
    let handover = activities.loops().handover();
    let end = tokio::select! {
        end = polling(activities, &progress, tenant_id, content_id) => Ok(end),
        interrupt = reporter.keep_alive(&progress) => Err(interrupt),
        () = handover.cancelled() => Err(Interrupt::HandOver),
    };
    let progress = progress.into_inner().unwrap_or_else(PoisonError::into_inner);
    match end {
        Ok(Ok(outcome)) => LoopEnd::Finished(outcome),
        Ok(Err(failure)) => LoopEnd::Failed { failure, progress },
        Err(Interrupt::HandOver) => LoopEnd::HandedOver(progress),
        Err(Interrupt::Cancelled) => LoopEnd::Cancelled(progress),
        Err(Interrupt::Lost) => LoopEnd::Lost,
    }
}

/// A pass, then a wait, until a pass ends the content.
async fn polling(
    activities: &SourceActivities,
    progress: &Mutex<PollProgress>,
    tenant_id: TenantId,
    content_id: ReportContentId,
) -> Result<FetchOutcome, AttemptFailure> {
    let policy = activities.policy();
    let pool = activities.tenants().pool(tenant_id).await.map_err(tenancy_failure)?;
    let mut backoff = Backoff::new(policy.poll_interval);
    // When the next pass should start: the previous one's end plus its wait.
    let mut planned: Option<Instant> = None;
    loop {
        if let Some(at) = planned.take() {
            crate::metrics::poll_lag(at.elapsed());
        }
        let current = lock(progress).clone();
        // Boxed: a pass (row read, source call, row write) holds ~2.3 KiB of sqlx and HTTP
        // futures for a few milliseconds every poll interval. Inline, that room would be part
        // of this loop's own future, which every polling content keeps while it sleeps.
        let pass = Box::pin(pass(activities, pool, tenant_id, content_id, current, backoff));
        let bound = policy.pass_bound();
        let end = tokio::time::timeout(bound, pass).await.map_err(|_| {
            AttemptFailure::retryable(anyhow::anyhow!(
                "a pass of the poll loop took more than {bound:?}; retrying the attempt"
            ))
        })??;
        match end {
            PassEnd::Finished(outcome) => return Ok(outcome),
            PassEnd::Again {
                progress: next,
                backoff: next_backoff,
                wait,
            } => {
                *lock(progress) = next;
                backoff = next_backoff;
                let at = Instant::now() + wait;
                planned = Some(at);
                tokio::time::sleep_until(at).await;
            }
        }
    }
}

/// [`HEARTBEAT_EVERY`] less up to [`FIRST_HEARTBEAT_SPREAD`], by the content id's random bits.
fn first_heartbeat_after(content_id: ReportContentId) -> Duration {
    let spread_ms = FIRST_HEARTBEAT_SPREAD.as_millis();
    let early = u64::try_from(content_id.0.as_u128() % spread_ms).expect("below the spread");
    HEARTBEAT_EVERY - Duration::from_millis(early)
}

fn lock(progress: &Mutex<PollProgress>) -> MutexGuard<'_, PollProgress> {
    progress.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a pass ended.
enum PassEnd {
    /// The loop is over.
    Finished(FetchOutcome),
    /// Poll again after `wait`, from `progress` and `backoff`.
    Again {
        progress: PollProgress,
        backoff: Backoff,
        wait: Duration,
    },
}

/// One pass: read the row, call the source, act on the answer. Every decision is made by
/// [`check_row`] and [`next_step`]; this only does the I/O around them.
async fn pass(
    activities: &SourceActivities,
    pool: &PgPool,
    tenant_id: TenantId,
    content_id: ReportContentId,
    mut progress: PollProgress,
    mut backoff: Backoff,
) -> Result<PassEnd, AttemptFailure> {
    let policy: &FetchPolicy = activities.policy();
    // 1. The row decides: a retry after a crash must not redo finished work, and the
    //    deadline counts from the content's creation, across attempts.
    let row = reports::find_content(pool, content_id).await.map_err(db_failure)?;
    let time_left = match check_row(row.as_ref(), Utc::now(), policy) {
        RowCheck::Gone => return Ok(PassEnd::Finished(FetchOutcome::Gone)),
        RowCheck::AlreadyFinished => return Ok(PassEnd::Finished(FetchOutcome::AlreadyFinished)),
        RowCheck::DeadlinePassed { reason } => return fail(pool, content_id, reason).await.map(PassEnd::Finished),
        RowCheck::Poll { time_left } => time_left,
    };
    let content: ReportContent = row.expect("check_row polls only an existing row");
    // 2. Submit once, then ask for the job's status.
    let sources = activities.sources();
    let answer = match &progress.job_id {
        None => {
            let request = JobRequest {
                tenant_id,
                report_id: content.report_id,
                content_id,
            };
            sources.submit(&content.source, &request).await
        }
        Some(job_id) => sources.status(&content.source, job_id).await,
    };
    crate::metrics::source_answer(&content.source, &answer);
    // 3. Act on the decision. The wait never outlasts the deadline, so a content is failed
    //    at its deadline, not up to a backoff later.
    let wait = match next_step(answer, &mut progress, &mut backoff, policy) {
        Step::Complete { data } => {
            let data = serde_json::to_string(&data).map_err(AttemptFailure::retryable)?;
            let stored = reports::complete_content(pool, content_id, &data)
                .await
                .map_err(db_failure)?;
            return Ok(PassEnd::Finished(if stored {
                FetchOutcome::Completed
            } else {
                FetchOutcome::AlreadyFinished
            }));
        }
        Step::Fail { reason } => return fail(pool, content_id, reason).await.map(PassEnd::Finished),
        Step::Touch { wait } => {
            tracing::debug!(job_id = ?progress.job_id, "source still working");
            if !reports::touch_content(pool, content_id).await.map_err(db_failure)? {
                return Ok(PassEnd::Finished(FetchOutcome::AlreadyFinished));
            }
            wait
        }
        Step::Wait { wait } => wait,
    };
    Ok(PassEnd::Again {
        progress,
        backoff,
        wait: wait.min(time_left),
    })
}

async fn fail(pool: &PgPool, content_id: ReportContentId, reason: String) -> Result<FetchOutcome, AttemptFailure> {
    tracing::warn!(%reason, "marking the content failed");
    if reports::fail_content(pool, content_id, &reason)
        .await
        .map_err(db_failure)?
    {
        Ok(FetchOutcome::Failed { reason })
    } else {
        Ok(FetchOutcome::AlreadyFinished)
    }
}

/// A database error: retryable, Temporal retries the attempt with backoff.
fn db_failure(e: sqlx::Error) -> AttemptFailure {
    AttemptFailure::retryable(anyhow::Error::new(e).context("tenant database error"))
}

/// An unknown tenant cannot become known by retrying; a connection failure can.
fn tenancy_failure(e: TenancyError) -> AttemptFailure {
    AttemptFailure {
        retryable: !matches!(e, TenancyError::UnknownTenant(_)),
        error: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use liquidity_core::tenancy::{PoolSettings, TenantRegistry};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::source_client::{SourceClient, SourcesConfig};

    #[test]
    fn a_polling_content_costs_its_worker_about_a_kibibyte() {
        // Arrange: everything a loop holds for the life of its content
        let sources = SourcesConfig::parse(
            r#"{"source_1":"http://127.0.0.1:1","source_2":"http://127.0.0.1:1","source_3":"http://127.0.0.1:1"}"#,
        )
        .unwrap();
        let policy = FetchPolicy::default();
        let activities = Arc::new(SourceActivities::new(
            Arc::new(TenantRegistry::new(Vec::new(), PoolSettings::default())),
            SourceClient::new(sources, policy.http_timeout, policy.max_body).unwrap(),
            policy,
        ));
        let poll_loop = PollLoop {
            activities,
            token: TaskToken::from(vec![0; 200]),
            tenant_id: TenantId::new_random(),
            content_id: ReportContentId::new_random(),
            progress: PollProgress::default(),
            slot: LoopSlot {
                _permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
                waited: false,
            },
        };

        // Act
        let running = poll_loop.run();

        // Assert: the task the activity spawns holds this future (1,312 bytes on 2026-12-03),
        // plus the token's bytes and the tracing span, where the SDK held ~11.5 KiB per running
        // activity; the pass and every call to Temporal are boxed, allocated only while they run
        let size = std::mem::size_of_val(&running);
        assert!(size < 1536, "{size} bytes");
    }
}
