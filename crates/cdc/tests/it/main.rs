//! The CDC handlers, reconciler and consumer against real PostgreSQL, the real Temporal dev
//! server and the real Pub/Sub emulator of the test stack. No workflow worker polls the test
//! task queues, so started workflows stay running and can be inspected.

mod consumer;
mod handler;
mod helpers;
mod reconciler;
