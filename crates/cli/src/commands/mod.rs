//! One module per subcommand.

pub mod api;
pub mod cdc_config;
pub mod cdc_worker;
pub mod migrate;
pub mod provision;
pub mod pubsub_setup;
pub mod schema;
pub mod sources;
pub mod tenants;
pub mod workflow_worker;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT (ctrl-c) or SIGTERM, for graceful shutdown.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                cancel.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
        }
        cancel.cancel();
    });
    token
}
