//! Integration tests against the real test stack: PostgreSQL, the Temporal dev server, an
//! in-process worker on a task queue of its own, and a real HTTP source whose behaviour each
//! test chooses. Run them with `scripts/test.sh` (or `LQDTY_STACK=test scripts/stack.sh up`).

mod fetch;
mod healing;
mod helpers;
mod simulator;
mod source;
mod starter;
