//! End-to-end tests: every hop on the real component, every role its own process.
//!
//! A [`world::World`] is fresh databases for three tenants on the test stack's PostgreSQL, a
//! Pub/Sub emulator of its own (so a test may restart it), the Debezium relay, the source
//! simulator, and the `liquidity` binary as API, CDC worker and workflow worker, on a task queue
//! of its own of the test stack's Temporal. nextest runs these tests one at a time.

mod faults;
mod live;
mod operations;
mod pipeline;
mod relay;
mod traces;
mod world;
