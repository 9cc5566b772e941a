//! The `pollSource` activity: the whole poll loop of one report content, heartbeating.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use liquidity_core::reports::{self, ReportContent};
use liquidity_core::sources::{JobRequest, JobState, JobStatus};
use liquidity_core::tenancy::{TenancyError, TenantRegistry};
use liquidity_core::{ReportContentId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::source_client::{SourceClient, SourceError};
use crate::workflows::{
    FetchOutcome, FetchReportContentInput, POLL_SOURCE_HEARTBEAT_TIMEOUT, POLL_SOURCE_START_TO_CLOSE,
};

/// Longest wait after transient source failures: the backoff doubles up to this.
pub const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(60);

/// Longest sleep between two heartbeats while waiting for the next poll: a long backoff must
/// never look like a dead worker to the server (heartbeat timeout 30 s).
const SLEEP_CHUNK: Duration = Duration::from_secs(5);

/// Longest `http_timeout` accepted: the activity does not heartbeat during a call, so a call
/// plus the database round trips around it must fit in the heartbeat timeout.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// How one content is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Wait between two checks of an in-progress job (`POLL_INTERVAL`).
    pub poll_interval: Duration,
    /// A content still in progress this long after its `created_at` is marked failed
    /// (`SOURCE_DEADLINE`). Must stay below the activity's 24 h start-to-close timeout.
    pub deadline: Duration,
    /// Bad answers (malformed bodies, 4xx, lost jobs) tolerated before the content is marked
    /// failed (`SOURCE_MAX_BAD_ANSWERS`): the failure comes with answer number `max + 1`.
    pub max_bad_answers: u32,
    /// Bound of one HTTP call to a source, connect included (`SOURCE_HTTP_TIMEOUT`).
    pub http_timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            deadline: Duration::from_secs(60 * 60),
            max_bad_answers: 5,
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a [`FetchPolicy`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum FetchPolicyError {
    /// A zero poll interval would hammer the sources.
    #[error("the poll interval must be more than zero")]
    ZeroPollInterval,
    /// The deadline must end the loop before Temporal's start-to-close timeout of the activity.
    #[error("the source deadline ({deadline:?}) must be less than {limit:?}")]
    DeadlineTooLong {
        /// The configured deadline.
        deadline: Duration,
        /// The activity's start-to-close timeout.
        limit: Duration,
    },
    /// The HTTP timeout must be positive and fit in the heartbeat timeout.
    #[error("the source HTTP timeout ({timeout:?}) must be more than zero and at most {limit:?}")]
    HttpTimeout {
        /// The configured timeout.
        timeout: Duration,
        /// The largest accepted.
        limit: Duration,
    },
}

impl FetchPolicy {
    /// Checks the bounds documented on each field.
    ///
    /// # Errors
    /// The first [`FetchPolicyError`] found.
    pub fn validate(&self) -> Result<(), FetchPolicyError> {
        if self.poll_interval.is_zero() {
            return Err(FetchPolicyError::ZeroPollInterval);
        }
        if self.deadline >= POLL_SOURCE_START_TO_CLOSE {
            return Err(FetchPolicyError::DeadlineTooLong {
                deadline: self.deadline,
                limit: POLL_SOURCE_START_TO_CLOSE,
            });
        }
        if self.http_timeout.is_zero() || self.http_timeout > MAX_HTTP_TIMEOUT {
            return Err(FetchPolicyError::HttpTimeout {
                timeout: self.http_timeout,
                limit: MAX_HTTP_TIMEOUT,
            });
        }
        Ok(())
    }
}

/// The heartbeat details of `pollSource`: what a retried attempt (after a crash, a worker
/// shutdown or a database error) resumes from.
///
/// Heartbeats are throttled by the SDK (to 0.8 x heartbeat timeout), so a retry may see details
/// a little older than the last poll: a job id may be missing, and the retry then submits again,
/// which `POST /jobs` answers with the same job (idempotent on the content id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollProgress {
    /// The source's job, once submitted.
    pub job_id: Option<String>,
    /// Bad answers so far.
    pub bad_answers: u32,
}

/// Wait before the next poll: the poll interval after an answer, doubling after each transient
/// failure in a row, up to [`MAX_TRANSIENT_BACKOFF`] (or the poll interval, if longer).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    next_failure: Duration,
}

impl Backoff {
    pub(crate) fn new(poll_interval: Duration) -> Self {
        Self {
            base: poll_interval,
            max: MAX_TRANSIENT_BACKOFF.max(poll_interval),
            next_failure: poll_interval,
        }
    }

    /// The source answered: wait the poll interval, and start the next failure streak afresh.
    pub(crate) fn answered(&mut self) -> Duration {
        self.next_failure = self.base;
        self.base
    }

    /// A transient failure: wait the current backoff, and double it for the next one.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.next_failure;
        self.next_failure = self.next_failure.saturating_mul(2).min(self.max);
        wait
    }
}

/// The dependencies of the activities. The worker registers one instance; every activity
/// invocation shares it through `self: Arc<Self>`.
pub struct SourceActivities {
    tenants: Arc<TenantRegistry>,
    sources: SourceClient,
    policy: FetchPolicy,
}

impl SourceActivities {
    /// Bundles the dependencies; `policy` should have passed [`FetchPolicy::validate`].
    pub fn new(tenants: Arc<TenantRegistry>, sources: SourceClient, policy: FetchPolicy) -> Self {
        Self {
            tenants,
            sources,
            policy,
        }
    }
}

#[activities]
impl SourceActivities {
    /// Polls the content's source until it completes, fails or the deadline passes, and
    /// records the result in the tenant database.
    ///
    /// - Returns [`FetchOutcome::Gone`] / [`FetchOutcome::AlreadyFinished`] without a change
    ///   when the row is missing / no longer in progress, so retries and duplicates are safe.
    /// - Database errors are retryable failures (Temporal retries with backoff, resuming from
    ///   the heartbeat details); an unknown tenant is a non-retryable failure.
    /// - On worker shutdown the attempt ends as cancelled and is retried on another worker.
    #[activity(name = "pollSource")]
    // The macro turns the method name into an undocumented marker constant; it copies `allow`s.
    #[allow(missing_docs)]
    pub async fn poll_source(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FetchReportContentInput,
    ) -> Result<FetchOutcome, ActivityError> {
        let tenant_id = input.tenant_id;
        let content_id = input.report_content.id;
        let result = self.poll_loop(&ctx, tenant_id, &input.report_content).await;
        match &result {
            Ok(outcome) => tracing::info!(%tenant_id, %content_id, ?outcome, "pollSource finished"),
            Err(ActivityError::Cancelled { .. }) => {
                tracing::info!(%tenant_id, %content_id, "pollSource cancelled; Temporal retries it elsewhere")
            }
            Err(e) => tracing::warn!(%tenant_id, %content_id, error = ?e, "pollSource attempt failed"),
        }
        result
    }
}

impl SourceActivities {
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, content_id = %original.id, source = %original.source))]
    async fn poll_loop(
        &self,
        ctx: &ActivityContext,
        tenant_id: TenantId,
        original: &ReportContent,
    ) -> Result<FetchOutcome, ActivityError> {
        let content_id = original.id;
        let pool = self.tenants.pool(tenant_id).await.map_err(tenancy_failure)?;
        let mut progress: PollProgress = ctx
            .heartbeat_details()
            .deserialize()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable heartbeat details of a previous attempt; starting afresh");
                None
            })
            .unwrap_or_default();
        let mut backoff = Backoff::new(self.policy.poll_interval);
        loop {
            // 1. The row decides: a retry after a crash must not redo finished work.
            let Some(content) = reports::find_content(pool, content_id).await.map_err(db_failure)? else {
                return Ok(FetchOutcome::Gone);
            };
            if content.status.is_terminal() {
                return Ok(FetchOutcome::AlreadyFinished);
            }
            // 2. The deadline counts from the content's creation, across attempts.
            let age = Utc::now().signed_duration_since(content.created_at).to_std();
            if age.is_ok_and(|age| age > self.policy.deadline) {
                let reason = format!(
                    "deadline of {}s exceeded without the source completing",
                    self.policy.deadline.as_secs_f64()
                );
                return fail(pool, content_id, reason).await;
            }
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            // 3. Submit once, then ask for the job's status.
            let answer = match &progress.job_id {
                None => {
                    let request = JobRequest {
                        tenant_id,
                        report_id: content.report_id,
                        content_id,
                    };
                    self.sources.submit(&content.source, &request).await
                }
                Some(job_id) => self.sources.status(&content.source, job_id).await,
            };
            // 4-5. Act on the class of the answer.
            let wait = match answer {
                Ok(JobStatus {
                    status: JobState::Completed,
                    data: Some(data),
                    ..
                }) => {
                    let data = serde_json::to_string(&data).map_err(|e| ActivityError::from(anyhow::Error::new(e)))?;
                    let stored = reports::complete_content(pool, content_id, &data)
                        .await
                        .map_err(db_failure)?;
                    return Ok(if stored {
                        FetchOutcome::Completed
                    } else {
                        FetchOutcome::AlreadyFinished
                    });
                }
                // In progress (a completed answer without data was classified as a bad answer).
                Ok(job) => {
                    tracing::debug!(job_id = %job.id, "source still working");
                    progress.job_id = Some(job.id);
                    if !reports::touch_content(pool, content_id).await.map_err(db_failure)? {
                        return Ok(FetchOutcome::AlreadyFinished);
                    }
                    backoff.answered()
                }
                Err(SourceError::Transient(e)) => {
                    let wait = backoff.failed();
                    tracing::warn!(error = %e, retry_in = ?wait, "source unavailable");
                    wait
                }
                Err(e @ SourceError::UnknownSource(_)) => return fail(pool, content_id, e.to_string()).await,
                Err(e @ (SourceError::BadAnswer(_) | SourceError::JobLost { .. })) => {
                    if matches!(e, SourceError::JobLost { .. }) {
                        progress.job_id = None;
                    }
                    progress.bad_answers += 1;
                    if progress.bad_answers > self.policy.max_bad_answers {
                        let reason = format!(
                            "source gave {} bad answers (at most {} tolerated), the last: {e}",
                            progress.bad_answers, self.policy.max_bad_answers
                        );
                        return fail(pool, content_id, reason).await;
                    }
                    tracing::warn!(error = %e, bad_answers = progress.bad_answers, "bad answer from the source");
                    self.policy.poll_interval
                }
            };
            // 6. Heartbeat and wait for the next poll.
            pause(ctx, &progress, wait).await?;
        }
    }
}

/// Sleeps `wait` in chunks of at most [`SLEEP_CHUNK`], heartbeating `progress` before each,
/// and gives up as cancelled as soon as the attempt is cancelled (worker shutdown, heartbeat
/// timeout seen by the server, workflow cancelled).
async fn pause(ctx: &ActivityContext, progress: &PollProgress, wait: Duration) -> Result<(), ActivityError> {
    let mut left = wait;
    loop {
        ctx.record_heartbeat(progress.clone()).await?;
        if left.is_zero() {
            return Ok(());
        }
        let chunk = left.min(SLEEP_CHUNK);
        tokio::select! {
            () = ctx.cancelled() => return Err(ActivityError::cancelled()),
            () = tokio::time::sleep(chunk) => {}
        }
        left -= chunk;
    }
}

async fn fail(pool: &PgPool, content_id: ReportContentId, reason: String) -> Result<FetchOutcome, ActivityError> {
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
fn db_failure(e: sqlx::Error) -> ActivityError {
    ActivityError::from(anyhow::Error::new(e).context("tenant database error"))
}

/// An unknown tenant cannot become known by retrying; a connection failure can.
fn tenancy_failure(e: TenancyError) -> ActivityError {
    match e {
        TenancyError::UnknownTenant(_) => ActivityError::application(ApplicationFailure::non_retryable(e)),
        TenancyError::Connect { .. } => ActivityError::from(anyhow::Error::new(e)),
    }
}

// Keeps the heartbeat timeout and the sleep chunk consistent at compile time.
const _: () = assert!(SLEEP_CHUNK.as_secs() * 2 < POLL_SOURCE_HEARTBEAT_TIMEOUT.as_secs());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_after_each_transient_failure_up_to_a_minute() {
        // Arrange
        let mut backoff = Backoff::new(Duration::from_secs(10));

        // Act
        let waits: Vec<u64> = (0..5).map(|_| backoff.failed().as_secs()).collect();

        // Assert
        assert_eq!(waits, [10, 20, 40, 60, 60]);
    }

    #[test]
    fn an_answer_resets_the_backoff_to_the_poll_interval() {
        let mut backoff = Backoff::new(Duration::from_millis(200));
        backoff.failed();
        backoff.failed();
        assert_eq!(backoff.answered(), Duration::from_millis(200));
        assert_eq!(backoff.failed(), Duration::from_millis(200));
        assert_eq!(backoff.failed(), Duration::from_millis(400));
    }

    #[test]
    fn a_poll_interval_longer_than_the_backoff_cap_is_kept() {
        let mut backoff = Backoff::new(Duration::from_secs(90));
        assert_eq!(backoff.failed(), Duration::from_secs(90));
        assert_eq!(backoff.failed(), Duration::from_secs(90));
    }

    #[test]
    fn the_default_policy_is_valid() {
        FetchPolicy::default().validate().unwrap();
    }

    #[test]
    fn policies_out_of_bounds_are_refused() {
        let base = FetchPolicy::default();
        let day = Duration::from_secs(24 * 60 * 60);
        assert!(matches!(
            FetchPolicy {
                poll_interval: Duration::ZERO,
                ..base
            }
            .validate(),
            Err(FetchPolicyError::ZeroPollInterval)
        ));
        assert!(matches!(
            FetchPolicy { deadline: day, ..base }.validate(),
            Err(FetchPolicyError::DeadlineTooLong { .. })
        ));
        assert!(matches!(
            FetchPolicy {
                http_timeout: Duration::from_secs(25),
                ..base
            }
            .validate(),
            Err(FetchPolicyError::HttpTimeout { .. })
        ));
    }

    #[test]
    fn progress_round_trips_through_json_in_camel_case() {
        let progress = PollProgress {
            job_id: Some("j1".into()),
            bad_answers: 2,
        };
        let json = serde_json::to_string(&progress).unwrap();
        assert_eq!(json, r#"{"jobId":"j1","badAnswers":2}"#);
        assert_eq!(serde_json::from_str::<PollProgress>(&json).unwrap(), progress);
    }
}
