//! The CDC worker: turns Debezium change events of `report_contents` into work.
//!
//! Debezium stays dumb: it publishes every committed change to the Pub/Sub topic
//! `tenant-cdc`. This crate decides what a change means:
//! - an INSERT (`op` `c`, or a snapshot read `r`) of an in-progress content starts that
//!   content's Temporal workflow, idempotently;
//! - an UPDATE whose status went from `in_progress` to final finishes the report once all of
//!   its contents are final, in one race-free statement.
//!
//! Delivery is at least once, so every effect is idempotent. A message is acked only after its
//! effect is durable; a transient failure leaves it unacked (redelivered after a backoff); a
//! message that can never succeed (unknown tenant or table, malformed) goes to the dead-letter
//! topic and never touches a database. The [`reconciler`] re-derives lost work from the
//! databases, because the Pub/Sub emulator forgets messages on restart and CDC can be reset.
//!
//! # Layout
//! - [`envelope`]: decoding of Debezium's JSON envelope (with or without schemas).
//! - [`handler`]: `handle_message` / `handle_change`, the single-step core, and the two effects
//!   shared with the reconciler.
//! - [`consumer`]: the Pub/Sub streaming-pull loop, with bounded concurrency, acks, backoff,
//!   dead letters and graceful drain.
//! - [`metrics`]: events by tenant, op and outcome, commit → handled lag, reconciler repairs.
//! - [`pubsub`]: Pub/Sub client construction (emulator or Google), topic/subscription set-up.
//! - [`reconciler`]: the periodic repair pass.

pub mod consumer;
pub mod envelope;
pub mod handler;
pub mod metrics;
pub mod pubsub;
pub mod reconciler;

pub use handler::{CdcDeps, CdcError, Outcome, handle_change, handle_message};
