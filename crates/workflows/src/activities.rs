//! The `pollSource` activity, which hands its content to a poll loop, and the loop's policy and
//! decisions (pure functions, unit-tested without a source, a database or Temporal).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use liquidity_core::reports::ReportContent;
use liquidity_core::sources::{JobState, JobStatus};
use liquidity_core::tenancy::TenantRegistry;
use liquidity_core::trace_context;
use serde::{Deserialize, Serialize};
use temporalio_common::protos::TaskToken;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument as _;

use crate::poll_loop::PollLoop;
use crate::poll_loops::PollLoops;
use crate::settings::{DEFAULT_MAX_BODY, InvalidSetting, MAX_SOURCE_MAX_BODY, MIN_SOURCE_MAX_BODY};
use crate::source_client::{SourceClient, SourceError};
use crate::workflows::{FetchOutcome, FetchReportContentInput, POLL_SOURCE_START_TO_CLOSE};

/// Longest wait after transient source failures: the backoff doubles up to this.
pub const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(60);

/// Longest `http_timeout` accepted (`SOURCE_HTTP_TIMEOUT`). A pass heartbeats while it runs,
/// so this no longer has to fit in the heartbeat timeout; it keeps a pass short enough that a
/// worker shutdown (which cancels it) and the backoff stay predictable.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Time a pass may spend on top of its HTTP call: the row read and the row write, each of which
/// waits at most `TENANT_ACQUIRE_TIMEOUT` (5 s by default) for a connection. A pass longer than
/// `http_timeout` + this is stuck: the attempt fails and Temporal retries it (from the
/// heartbeat details), instead of heartbeats keeping a hung attempt alive for ever.
const PASS_DATABASE_ALLOWANCE: Duration = Duration::from_secs(15);

/// Longest `POLL_INTERVAL` accepted: a source checked less than hourly is misconfigured.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Largest `SOURCE_MAX_BAD_ANSWERS` accepted: beyond this the bound bounds nothing.
const MAX_BAD_ANSWERS: u32 = 1000;

/// How one content is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Wait between two checks of an in-progress job (`POLL_INTERVAL`). More than zero, at
    /// most 1 h, and less than `deadline`.
    pub poll_interval: Duration,
    /// A content still in progress this long after its `created_at` is marked failed
    /// (`SOURCE_DEADLINE`). At least 1 s and less than the activity's 24 h start-to-close timeout.
    pub deadline: Duration,
    /// Bad answers (malformed bodies, 4xx, 3xx, oversize bodies, lost jobs) tolerated before the
    /// content is marked failed (`SOURCE_MAX_BAD_ANSWERS`): the failure comes with answer
    /// number `max + 1`. 1..=1000: a lost job (the source restarted) counts as one, so 0 would
    /// fail every content in flight whenever a source restarts.
    pub max_bad_answers: u32,
    /// Bound of one HTTP call to a source, connect included (`SOURCE_HTTP_TIMEOUT`). More than
    /// zero and at most 20 s.
    pub http_timeout: Duration,
    /// Largest body read from a source, in bytes (`SOURCE_MAX_BODY`); a longer one is a bad
    /// answer. Within [`MIN_SOURCE_MAX_BODY`]..=[`MAX_SOURCE_MAX_BODY`], which keeps the CDC
    /// event of the stored row under Pub/Sub's 10 MB message limit.
    pub max_body: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(10),
            deadline: Duration::from_secs(60 * 60),
            max_bad_answers: 5,
            http_timeout: Duration::from_secs(10),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Why a [`FetchPolicy`] was refused: an [`InvalidSetting`] naming the variable.
pub type FetchPolicyError = InvalidSetting;

impl FetchPolicy {
    /// Checks the bounds documented on each field.
    ///
    /// # Errors
    /// The first [`InvalidSetting`] found, naming its environment variable.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if self.poll_interval.is_zero() || self.poll_interval > MAX_POLL_INTERVAL {
            return Err(InvalidSetting::new(
                "POLL_INTERVAL",
                human(self.poll_interval),
                format!("more than zero and at most {}", human(MAX_POLL_INTERVAL)),
            ));
        }
        if self.deadline < Duration::from_secs(1) || self.deadline >= POLL_SOURCE_START_TO_CLOSE {
            return Err(InvalidSetting::new(
                "SOURCE_DEADLINE",
                human(self.deadline),
                format!(
                    "at least 1s and less than {} (the activity's start-to-close timeout)",
                    human(POLL_SOURCE_START_TO_CLOSE)
                ),
            ));
        }
        if self.poll_interval >= self.deadline {
            return Err(InvalidSetting::new(
                "POLL_INTERVAL",
                human(self.poll_interval),
                format!("less than SOURCE_DEADLINE ({})", human(self.deadline)),
            ));
        }
        if !(1..=MAX_BAD_ANSWERS).contains(&self.max_bad_answers) {
            return Err(InvalidSetting::new(
                "SOURCE_MAX_BAD_ANSWERS",
                self.max_bad_answers,
                format!("within 1..={MAX_BAD_ANSWERS} (a source restart alone costs one)"),
            ));
        }
        if self.http_timeout.is_zero() || self.http_timeout > MAX_HTTP_TIMEOUT {
            return Err(InvalidSetting::new(
                "SOURCE_HTTP_TIMEOUT",
                human(self.http_timeout),
                format!("more than zero and at most {}", human(MAX_HTTP_TIMEOUT)),
            ));
        }
        if !(MIN_SOURCE_MAX_BODY..=MAX_SOURCE_MAX_BODY).contains(&self.max_body) {
            return Err(InvalidSetting::new(
                "SOURCE_MAX_BODY",
                self.max_body,
                format!(
                    "within {MIN_SOURCE_MAX_BODY}..={MAX_SOURCE_MAX_BODY} bytes (1KiB..=2MiB: the stored document must fit a Pub/Sub message)"
                ),
            ));
        }
        Ok(())
    }

    /// Longest a pass of the loop may take: its HTTP call plus [`PASS_DATABASE_ALLOWANCE`].
    pub fn pass_bound(&self) -> Duration {
        self.http_timeout + PASS_DATABASE_ALLOWANCE
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
/// invocation shares it through `self: Arc<Self>`, and so does every poll loop.
pub struct SourceActivities {
    tenants: Arc<TenantRegistry>,
    sources: SourceClient,
    policy: FetchPolicy,
    loops: Arc<PollLoops>,
}

impl SourceActivities {
    /// Bundles the dependencies; `policy` should have passed [`FetchPolicy::validate`].
    pub fn new(tenants: Arc<TenantRegistry>, sources: SourceClient, policy: FetchPolicy) -> Self {
        Self {
            tenants,
            sources,
            policy,
            loops: Arc::default(),
        }
    }

    pub(crate) fn tenants(&self) -> &TenantRegistry {
        &self.tenants
    }

    pub(crate) fn sources(&self) -> &SourceClient {
        &self.sources
    }

    pub(crate) fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    pub(crate) fn loops(&self) -> &Arc<PollLoops> {
        &self.loops
    }
}

#[activities]
impl SourceActivities {
    /// Polls the content's source until it completes, fails or the deadline passes, and
    /// records the result in the tenant database: hands the content to a [`PollLoop`] on a task
    /// of its own, which completes this attempt through the client (see [`crate::poll_loop`]).
    ///
    /// - Ends with [`FetchOutcome::Gone`] / [`FetchOutcome::AlreadyFinished`] without a change
    ///   when the row is missing / no longer in progress, so retries and duplicates are safe.
    /// - Database errors are retryable failures (Temporal retries with backoff, resuming from
    ///   the heartbeat details); an unknown tenant is a non-retryable failure.
    /// - On worker shutdown the attempt fails retryably and is resumed on another worker.
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
        // A child of the CDC worker's span that started the workflow: one trace per report. Not
        // of the SDK's span of this activity: the loop outlives it, and a child keeps its
        // parent's data (a few hundred bytes per polling content) until it closes.
        let span = tracing::info_span!(parent: None, "pollSource", %tenant_id, %content_id, source = %input.report_content.source);
        trace_context::follow(&span, input.trace_parent.as_ref());
        let progress: PollProgress = ctx
            .heartbeat_details()
            .deserialize()
            .unwrap_or_else(|e| {
                tracing::warn!(parent: &span, error = %e, "unreadable heartbeat details of a previous attempt; starting afresh");
                None
            })
            .unwrap_or_default();
        let slot = self.loops.slot(&ctx, &progress).instrument(span.clone()).await?;
        let poll_loop = PollLoop {
            activities: self.clone(),
            token: TaskToken::from(ctx.info().task_token.clone()),
            tenant_id,
            content_id,
            progress,
            slot,
        };
        self.loops.spawn(poll_loop.run().instrument(span));
        Err(ActivityError::WillCompleteAsync)
    }
}

/// What the content's row says before a pass calls the source. Decided by [`check_row`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RowCheck {
    /// The row is gone (its report was deleted).
    Gone,
    /// The row is completed or failed: a retry or a duplicate must not redo it.
    AlreadyFinished,
    /// The deadline, counted from the row's `created_at`, has passed: fail it with `reason`.
    DeadlinePassed {
        /// The reason stored in the row.
        reason: String,
    },
    /// Call the source; the deadline is `time_left` away.
    Poll {
        /// Until the deadline: no wait is longer.
        time_left: Duration,
    },
}

/// Decides from the row alone, so the deadline counts from the content's creation whatever
/// happened to earlier attempts (crashes, restarts, a workflow started late by the reconciler).
pub(crate) fn check_row(row: Option<&ReportContent>, now: DateTime<Utc>, policy: &FetchPolicy) -> RowCheck {
    let Some(content) = row else {
        return RowCheck::Gone;
    };
    if content.status.is_terminal() {
        return RowCheck::AlreadyFinished;
    }
    // A created_at in the future (clock skew between servers) counts as age zero.
    let age = now
        .signed_duration_since(content.created_at)
        .to_std()
        .unwrap_or_default();
    match policy.deadline.checked_sub(age) {
        Some(time_left) if !time_left.is_zero() => RowCheck::Poll { time_left },
        _ => RowCheck::DeadlinePassed {
            reason: format!(
                "deadline of {}s exceeded without the source completing",
                policy.deadline.as_secs_f64()
            ),
        },
    }
}

/// What to do with a source's answer. Decided by [`next_step`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    /// Store the document and mark the content completed.
    Complete {
        /// The document.
        data: serde_json::Value,
    },
    /// The job is still running: record the check (`last_run_at`), then wait.
    Touch {
        /// Until the next poll.
        wait: Duration,
    },
    /// No usable answer, but one tolerated: wait (transient: backing off).
    Wait {
        /// Until the next poll.
        wait: Duration,
    },
    /// Mark the content failed with `reason`.
    Fail {
        /// The reason stored in the row.
        reason: String,
    },
}

/// The poll loop's decision for one answer: pure, so every case is unit-tested without a
/// source, a database or Temporal. Updates `progress` (job id, bad answers) and `backoff`.
pub(crate) fn next_step(
    answer: Result<JobStatus, SourceError>,
    progress: &mut PollProgress,
    backoff: &mut Backoff,
    policy: &FetchPolicy,
) -> Step {
    match answer {
        Ok(JobStatus {
            status: JobState::Completed,
            data: Some(data),
            ..
        }) => Step::Complete { data },
        // In progress (a completed answer without data was classified as a bad answer).
        Ok(job) => {
            progress.job_id = Some(job.id);
            Step::Touch {
                wait: backoff.answered(),
            }
        }
        Err(SourceError::Transient(e)) => {
            let wait = backoff.failed();
            tracing::warn!(error = %e, retry_in = ?wait, "source unavailable");
            Step::Wait { wait }
        }
        Err(e @ SourceError::UnknownSource(_)) => Step::Fail { reason: e.to_string() },
        Err(e @ (SourceError::BadAnswer(_) | SourceError::JobLost { .. })) => {
            if matches!(e, SourceError::JobLost { .. }) {
                progress.job_id = None;
            }
            progress.bad_answers += 1;
            if progress.bad_answers > policy.max_bad_answers {
                return Step::Fail {
                    reason: format!(
                        "source gave {} bad answers (at most {} tolerated), the last: {e}",
                        progress.bad_answers, policy.max_bad_answers
                    ),
                };
            }
            tracing::warn!(error = %e, bad_answers = progress.bad_answers, "bad answer from the source");
            Step::Wait {
                wait: policy.poll_interval,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use liquidity_core::reports::ReportStatus;
    use liquidity_core::{ReportContentId, ReportId};

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
    fn zero_and_absurd_settings_are_refused_naming_their_variable() {
        // Arrange
        let base = FetchPolicy::default();
        let secs = Duration::from_secs;
        let cases = [
            (
                "POLL_INTERVAL",
                FetchPolicy {
                    poll_interval: Duration::ZERO,
                    ..base
                },
            ),
            (
                "POLL_INTERVAL",
                FetchPolicy {
                    poll_interval: secs(2 * 60 * 60),
                    ..base
                },
            ),
            (
                "POLL_INTERVAL",
                FetchPolicy {
                    poll_interval: secs(60),
                    deadline: secs(60),
                    ..base
                },
            ),
            (
                "SOURCE_DEADLINE",
                FetchPolicy {
                    deadline: Duration::ZERO,
                    ..base
                },
            ),
            (
                "SOURCE_DEADLINE",
                FetchPolicy {
                    deadline: secs(24 * 60 * 60),
                    ..base
                },
            ),
            (
                "SOURCE_MAX_BAD_ANSWERS",
                FetchPolicy {
                    max_bad_answers: 0,
                    ..base
                },
            ),
            (
                "SOURCE_MAX_BAD_ANSWERS",
                FetchPolicy {
                    max_bad_answers: 1001,
                    ..base
                },
            ),
            (
                "SOURCE_HTTP_TIMEOUT",
                FetchPolicy {
                    http_timeout: Duration::ZERO,
                    ..base
                },
            ),
            (
                "SOURCE_HTTP_TIMEOUT",
                FetchPolicy {
                    http_timeout: secs(21),
                    ..base
                },
            ),
            ("SOURCE_MAX_BODY", FetchPolicy { max_body: 0, ..base }),
            ("SOURCE_MAX_BODY", FetchPolicy { max_body: 1023, ..base }),
            (
                "SOURCE_MAX_BODY",
                FetchPolicy {
                    max_body: 2 * 1024 * 1024 + 1,
                    ..base
                },
            ),
        ];

        // Act
        let errors: Vec<_> = cases.iter().map(|(_, policy)| policy.validate()).collect();

        // Assert
        for ((variable, policy), error) in cases.iter().zip(errors) {
            let error = error.expect_err(&format!("{policy:?} must be refused"));
            assert_eq!(error.variable, *variable, "{policy:?}");
            assert!(error.to_string().starts_with(variable), "{error}");
        }
    }

    #[test]
    fn settings_at_their_bounds_are_accepted() {
        let base = FetchPolicy::default();
        for policy in [
            FetchPolicy {
                poll_interval: Duration::from_millis(1),
                deadline: Duration::from_secs(1),
                ..base
            },
            FetchPolicy {
                deadline: Duration::from_secs(24 * 60 * 60 - 1),
                ..base
            },
            FetchPolicy {
                max_bad_answers: 1,
                ..base
            },
            FetchPolicy {
                max_bad_answers: 1000,
                ..base
            },
            FetchPolicy {
                http_timeout: Duration::from_secs(20),
                ..base
            },
            FetchPolicy { max_body: 1024, ..base },
            FetchPolicy {
                max_body: 2 * 1024 * 1024,
                ..base
            },
        ] {
            policy.validate().unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        }
    }

    fn content(status: ReportStatus, age: Duration, now: DateTime<Utc>) -> ReportContent {
        let created_at = now - chrono::Duration::from_std(age).unwrap();
        ReportContent {
            id: ReportContentId::new_random(),
            report_id: ReportId::new_random(),
            source: "source_1".to_owned(),
            status,
            data: None,
            created_at,
            last_run_at: created_at,
        }
    }

    #[test]
    fn a_missing_row_is_gone_and_a_final_row_is_already_finished() {
        let now = Utc::now();
        let policy = FetchPolicy::default();
        assert_eq!(check_row(None, now, &policy), RowCheck::Gone);
        for status in [ReportStatus::Completed, ReportStatus::Failed] {
            let row = content(status, Duration::from_secs(2 * 60 * 60), now);
            assert_eq!(check_row(Some(&row), now, &policy), RowCheck::AlreadyFinished);
        }
    }

    #[test]
    fn the_deadline_counts_from_the_rows_creation_not_from_the_attempt() {
        // Arrange: a content created 59 min and 61 min ago, a deadline of 1 h
        let now = Utc::now();
        let policy = FetchPolicy::default();
        let young = content(ReportStatus::InProgress, Duration::from_secs(59 * 60), now);
        let old = content(ReportStatus::InProgress, Duration::from_secs(61 * 60), now);

        // Act
        let young_check = check_row(Some(&young), now, &policy);
        let old_check = check_row(Some(&old), now, &policy);

        // Assert
        assert_eq!(
            young_check,
            RowCheck::Poll {
                time_left: Duration::from_secs(60)
            }
        );
        assert_eq!(
            old_check,
            RowCheck::DeadlinePassed {
                reason: "deadline of 3600s exceeded without the source completing".to_owned()
            }
        );
    }

    #[test]
    fn a_row_created_in_the_future_has_its_whole_deadline_left() {
        let now = Utc::now();
        let mut row = content(ReportStatus::InProgress, Duration::ZERO, now);
        row.created_at = now + chrono::Duration::seconds(5);
        let policy = FetchPolicy::default();
        assert_eq!(
            check_row(Some(&row), now, &policy),
            RowCheck::Poll {
                time_left: policy.deadline
            }
        );
    }

    fn job(status: JobState, data: Option<serde_json::Value>) -> Result<JobStatus, SourceError> {
        Ok(JobStatus {
            id: "j1".to_owned(),
            status,
            data,
        })
    }

    fn bad_answer() -> Result<JobStatus, SourceError> {
        Err(SourceError::BadAnswer(crate::source_client::BadAnswer::TooLarge {
            limit: 1024,
        }))
    }

    fn transient() -> Result<JobStatus, SourceError> {
        Err(SourceError::Transient(crate::source_client::Transient::Status(
            reqwest::StatusCode::BAD_GATEWAY,
        )))
    }

    fn policy() -> FetchPolicy {
        FetchPolicy {
            poll_interval: Duration::from_secs(10),
            max_bad_answers: 2,
            ..FetchPolicy::default()
        }
    }

    #[test]
    fn a_completed_answer_with_data_is_stored() {
        let (mut progress, mut backoff) = (PollProgress::default(), Backoff::new(Duration::from_secs(10)));
        let step = next_step(
            job(JobState::Completed, Some(serde_json::json!({"a": 1}))),
            &mut progress,
            &mut backoff,
            &policy(),
        );
        assert_eq!(
            step,
            Step::Complete {
                data: serde_json::json!({"a": 1})
            }
        );
    }

    #[test]
    fn an_in_progress_answer_records_the_job_and_waits_the_poll_interval() {
        // Arrange: after two transient failures
        let mut progress = PollProgress::default();
        let mut backoff = Backoff::new(Duration::from_secs(10));
        backoff.failed();
        backoff.failed();

        // Act
        let step = next_step(job(JobState::InProgress, None), &mut progress, &mut backoff, &policy());

        // Assert
        assert_eq!(
            step,
            Step::Touch {
                wait: Duration::from_secs(10)
            }
        );
        assert_eq!(progress.job_id.as_deref(), Some("j1"));
        assert_eq!(backoff.failed(), Duration::from_secs(10), "the backoff was reset");
    }

    #[test]
    fn transient_failures_back_off_without_counting_as_bad_answers() {
        let (mut progress, mut backoff) = (PollProgress::default(), Backoff::new(Duration::from_secs(10)));
        let waits: Vec<Step> = (0..3)
            .map(|_| next_step(transient(), &mut progress, &mut backoff, &policy()))
            .collect();
        assert_eq!(
            waits,
            [10, 20, 40].map(|s| Step::Wait {
                wait: Duration::from_secs(s)
            })
        );
        assert_eq!(progress.bad_answers, 0);
    }

    #[test]
    fn bad_answers_are_tolerated_up_to_the_maximum_and_the_next_one_fails_with_its_reason() {
        // Arrange: two tolerated
        let (mut progress, mut backoff) = (PollProgress::default(), Backoff::new(Duration::from_secs(10)));

        // Act
        let steps: Vec<Step> = (0..3)
            .map(|_| next_step(bad_answer(), &mut progress, &mut backoff, &policy()))
            .collect();

        // Assert
        let wait = Step::Wait {
            wait: Duration::from_secs(10),
        };
        assert_eq!(steps[..2], [wait.clone(), wait]);
        let Step::Fail { reason } = &steps[2] else {
            panic!("{:?}", steps[2]);
        };
        assert!(reason.contains("3 bad answers (at most 2 tolerated)"), "{reason}");
        assert!(reason.contains("SOURCE_MAX_BODY"), "{reason}");
    }

    #[test]
    fn a_lost_job_is_forgotten_so_it_is_submitted_again_and_counts_as_a_bad_answer() {
        let mut progress = PollProgress {
            job_id: Some("j1".to_owned()),
            bad_answers: 0,
        };
        let mut backoff = Backoff::new(Duration::from_secs(10));
        let step = next_step(
            Err(SourceError::JobLost {
                job_id: "j1".to_owned(),
            }),
            &mut progress,
            &mut backoff,
            &policy(),
        );
        assert_eq!(
            step,
            Step::Wait {
                wait: Duration::from_secs(10)
            }
        );
        assert_eq!(
            progress,
            PollProgress {
                job_id: None,
                bad_answers: 1
            }
        );
    }

    #[test]
    fn an_unknown_source_fails_at_once() {
        let (mut progress, mut backoff) = (PollProgress::default(), Backoff::new(Duration::from_secs(10)));
        let step = next_step(
            Err(SourceError::UnknownSource("source_9".to_owned())),
            &mut progress,
            &mut backoff,
            &policy(),
        );
        assert!(matches!(step, Step::Fail { reason } if reason.contains("source_9")));
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
