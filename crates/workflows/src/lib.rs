//! The Temporal side of Liquidity: the `fetchReportContent` workflow, which fetches one report
//! content from its source server and records the result in the tenant's database.
//!
//! # Polling design: one heartbeating activity per content, run as a detached poll loop
//!
//! The workflow runs one long activity, `pollSource`, which does the whole poll loop (submit
//! the job, check it every `POLL_INTERVAL`, store the document or the failure reason) and
//! heartbeats while it waits and while each pass runs.
//!
//! Why not a poll loop in the workflow (activity + 10 s timer)? Each poll would then cost
//! about 10 history events. The dev server manages about 30 workflows/s (about 35 ms of server
//! CPU per workflow), so such a loop caps the reports in flight at a few hundred per server,
//! and long fetches need continue-as-new. A heartbeating activity costs about 11 history events
//! per content whatever the fetch takes, because heartbeats are not history events (sent once
//! per 0.8 x the heartbeat timeout). History stays bounded. When a worker crashes, the 120 s
//! heartbeat timeout detects it, and the activity resumes from its heartbeat details
//! ([`PollProgress`]) on another worker. A worker that shuts down cleanly hands its loops over
//! after [`worker::SHUTDOWN_GRACE`], so they resume elsewhere about a second later.
//!
//! The activity itself returns at once: it starts its content's loop on a task of its own
//! ([`poll_loop`]) and tells the SDK the attempt completes asynchronously. The loop heartbeats,
//! completes and fails the attempt through the client, by its task token. So the SDK keeps
//! nothing per polling content (it kept ~11.5 KiB per running activity), and a polling content
//! costs this process about a kibibyte; [`poll_loops`] bounds the loops of a worker
//! (`WORKER_MAX_ACTIVITIES`) and hands them over at shutdown.
//!
//! Retries are safe. The activity re-reads the content row before every action, and only an
//! `in_progress` row ever changes. `POST /jobs` is idempotent on the content id.
//!
//! The answers of a source are classified by [`classify_answer`]:
//! - 2xx with a valid job status: in progress, or completed.
//! - 5xx, 408, 429, connection errors and timeouts: transient. The loop backs off, doubling up
//!   to 60 s.
//! - Other 4xx, 3xx (redirects are not followed), malformed bodies and bodies above
//!   `SOURCE_MAX_BODY`: bad answers. They are counted, and above `max_bad_answers` the content
//!   is failed.
//! - 404 on a job: the job is lost. It is submitted again, and this counts as a bad answer.
//!
//! # Layout
//! - [`workflows`]: the workflow (deterministic code only), its input and outcome.
//! - [`activities`]: [`SourceActivities`] and its `pollSource` activity, [`FetchPolicy`], the
//!   loop's decisions.
//! - [`poll_loop`]: the poll loop of one content, reporting to Temporal by its task token.
//! - [`poll_loops`]: a worker's loops: their slots, their client, their hand-over.
//! - [`metrics`]: poll loops and slots, poll lag, source answers by class, contents finished.
//! - [`settings`]: [`InvalidSetting`] (a refused setting, named) and `SOURCE_MAX_BODY`'s parser.
//! - [`source_client`]: `SOURCES_CONFIG`, the HTTP client of the sources, answer classification.
//! - [`starter`]: [`WorkflowStarter`], idempotent workflow starts for CDC and the reconciler.
//! - [`temporal`]: [`TemporalSettings`], [`connect`], [`connect_waiting`] (waits for Temporal)
//!   and [`TemporalProbe`] (readiness).
//! - [`worker`]: [`run_worker`], the worker with graceful shutdown.

pub mod activities;
pub mod backlog;
pub mod metrics;
pub mod poll_loop;
pub mod poll_loops;
pub mod settings;
pub mod source_client;
pub mod starter;
pub mod temporal;
pub mod worker;
pub mod workflows;

pub use activities::{FetchPolicy, FetchPolicyError, PollProgress, SourceActivities};
pub use settings::{InvalidSetting, parse_byte_size};
pub use source_client::{SourceClient, SourceError, SourcesConfig, SourcesConfigError, classify_answer};
pub use starter::{StartError, StartOutcome, WorkflowStarter, workflow_id};
pub use temporal::{ConnectError, ProbeError, TemporalProbe, TemporalSettings, connect, connect_waiting};
/// The URL type of [`TemporalSettings::address`], re-exported so callers need no `url` dependency.
pub use url::Url;
pub use worker::run_worker;
pub use workflows::{FetchOutcome, FetchReportContentInput, FetchReportContentWorkflow};
