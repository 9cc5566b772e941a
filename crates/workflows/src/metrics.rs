//! What the workflow worker counts, for `/metrics`.
//!
//! - `lqdty_workflow_poll_loops_active`: poll loops running in this process (each holds one of
//!   its slots), and `lqdty_workflow_activity_slots` the slots it has (`WORKER_MAX_ACTIVITIES`):
//!   active = slots means new contents wait for a slot.
//! - `lqdty_workflow_contents_waiting_for_a_loop`: `pollSource` activities this process took
//!   from Temporal that wait for one of its loop slots (at most
//!   [`crate::poll_loops::HANDOFF_SLOTS`]); any above zero is a content not polled.
//! - `lqdty_workflow_activity_backlog` and `lqdty_workflow_activity_backlog_age_seconds`: the
//!   `pollSource` tasks Temporal holds for the task queue because no worker has a free slot, and
//!   the age of the oldest (see [`crate::backlog`]). Above zero for more than a few seconds means
//!   contents that are not polled at all.
//! - `lqdty_workflow_poll_lag_seconds`: how much later than planned each poll pass starts
//!   (planned: the end of the previous pass plus its wait). Milliseconds when healthy; seconds
//!   mean the worker is starved (CPU, runtime, tenant connections).
//! - `lqdty_workflow_source_answers_total{source, class}`: every answer of a source, by class:
//!   `completed`, `in_progress`, `transient_status` (5xx, 408, 429), `transient_transport`
//!   (refused, reset, timeout), `bad_status` (4xx), `bad_redirect`, `bad_too_large`,
//!   `bad_malformed`, `bad_completed_without_data`, `job_lost`, `unknown_source`.
//! - `lqdty_workflow_contents_finished_total{status}`: `pollSource` attempts that ended a
//!   content: `completed`, `failed`, or `already_finished`/`gone` (a retry or a duplicate found
//!   nothing to do).
//!
//! `source` is a source of `SOURCES_CONFIG` (`unknown` for a content naming another), so the
//! label set is bounded by configuration.

use std::time::Duration;

use liquidity_core::sources::{JobState, JobStatus};

use crate::backlog::ActivityBacklog;
use crate::source_client::{BadAnswer, SourceError, Transient};
use crate::workflows::FetchOutcome;

/// `lqdty_workflow_poll_loops_active`.
pub const POLL_LOOPS_ACTIVE: &str = "lqdty_workflow_poll_loops_active";
/// `lqdty_workflow_activity_slots`.
pub const ACTIVITY_SLOTS: &str = "lqdty_workflow_activity_slots";
/// `lqdty_workflow_contents_waiting_for_a_loop`.
pub const WAITING_FOR_A_LOOP: &str = "lqdty_workflow_contents_waiting_for_a_loop";
/// `lqdty_workflow_activity_backlog`.
pub const ACTIVITY_BACKLOG: &str = "lqdty_workflow_activity_backlog";
/// `lqdty_workflow_activity_backlog_age_seconds`.
pub const ACTIVITY_BACKLOG_AGE: &str = "lqdty_workflow_activity_backlog_age_seconds";
/// `lqdty_workflow_poll_lag_seconds`.
pub const POLL_LAG: &str = "lqdty_workflow_poll_lag_seconds";
/// `lqdty_workflow_source_answers_total`.
pub const SOURCE_ANSWERS: &str = "lqdty_workflow_source_answers_total";
/// `lqdty_workflow_contents_finished_total`.
pub const CONTENTS_FINISHED: &str = "lqdty_workflow_contents_finished_total";

/// Counts one in a gauge while it lives: a running poll loop, or a content waiting for one.
pub struct Counted(&'static str);

impl Counted {
    /// A poll loop starts (`lqdty_workflow_poll_loops_active`).
    pub fn poll_loop() -> Self {
        Self::start(POLL_LOOPS_ACTIVE)
    }

    /// A content starts waiting for a loop slot (`lqdty_workflow_contents_waiting_for_a_loop`).
    pub fn waiting_for_a_loop() -> Self {
        Self::start(WAITING_FOR_A_LOOP)
    }

    fn start(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1);
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1);
    }
}

/// Publishes this worker's activity slots.
pub fn activity_slots(slots: usize) {
    metrics::gauge!(ACTIVITY_SLOTS).set(slots as f64);
}

/// Publishes the task queue's activity backlog, as the server last reported it.
pub fn activity_backlog(backlog: ActivityBacklog) {
    metrics::gauge!(ACTIVITY_BACKLOG).set(backlog.tasks as f64);
    metrics::gauge!(ACTIVITY_BACKLOG_AGE).set(backlog.oldest.as_secs_f64());
}

/// A pass started `lag` after it was planned.
pub fn poll_lag(lag: Duration) {
    metrics::histogram!(POLL_LAG).record(lag);
}

/// The `class` label of a source's answer.
pub fn answer_class(answer: &Result<JobStatus, SourceError>) -> &'static str {
    match answer {
        Ok(JobStatus {
            status: JobState::Completed,
            ..
        }) => "completed",
        Ok(_) => "in_progress",
        Err(SourceError::Transient(Transient::Status(_))) => "transient_status",
        Err(SourceError::Transient(Transient::Transport(_))) => "transient_transport",
        Err(SourceError::BadAnswer(BadAnswer::Status(_))) => "bad_status",
        Err(SourceError::BadAnswer(BadAnswer::Redirect { .. })) => "bad_redirect",
        Err(SourceError::BadAnswer(BadAnswer::TooLarge { .. })) => "bad_too_large",
        Err(SourceError::BadAnswer(BadAnswer::MalformedBody(_))) => "bad_malformed",
        Err(SourceError::BadAnswer(BadAnswer::CompletedWithoutData { .. })) => "bad_completed_without_data",
        Err(SourceError::JobLost { .. }) => "job_lost",
        Err(SourceError::UnknownSource(_)) => "unknown_source",
    }
}

/// Counts an answer of `source`.
pub fn source_answer(source: &str, answer: &Result<JobStatus, SourceError>) {
    let source = match answer {
        // The one answer given without the source being configured: not a label value.
        Err(SourceError::UnknownSource(_)) => "unknown".to_owned(),
        _ => source.to_owned(),
    };
    metrics::counter!(SOURCE_ANSWERS, "source" => source, "class" => answer_class(answer)).increment(1);
}

/// Counts how a `pollSource` attempt ended a content.
pub fn finished(outcome: &FetchOutcome) {
    let status = match outcome {
        FetchOutcome::Completed => "completed",
        FetchOutcome::Failed { .. } => "failed",
        FetchOutcome::AlreadyFinished => "already_finished",
        FetchOutcome::Gone => "gone",
    };
    metrics::counter!(CONTENTS_FINISHED, "status" => status).increment(1);
}
