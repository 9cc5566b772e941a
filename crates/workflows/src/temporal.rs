//! Where Temporal is and how to reach it.

use temporalio_client::errors::ClientConnectError;
use temporalio_client::{Client, ClientOptions, ConnectionOptions};
use url::Url;

/// Temporal connection settings shared by the workflow worker and the processes that start
/// workflows (CDC worker, reconciler).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemporalSettings {
    /// gRPC address of the Temporal frontend (`TEMPORAL_ADDRESS`).
    pub address: Url,
    /// Namespace of the workflows (`TEMPORAL_NAMESPACE`).
    pub namespace: String,
    /// Task queue the worker polls and the starters target (`TEMPORAL_TASK_QUEUE`).
    pub task_queue: String,
}

impl Default for TemporalSettings {
    fn default() -> Self {
        Self {
            address: Url::parse("http://127.0.0.1:7233").expect("a valid literal URL"),
            namespace: "default".to_owned(),
            task_queue: "liquidity-reports".to_owned(),
        }
    }
}

/// Temporal could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Temporal at {address} (namespace {namespace})")]
pub struct ConnectError {
    /// The address tried.
    pub address: Url,
    /// The namespace asked for.
    pub namespace: String,
    /// The client's error.
    #[source]
    pub source: ClientConnectError,
}

/// Connects a client to the settings' namespace; it reconnects by itself afterwards.
///
/// # Errors
/// [`ConnectError`] when the server cannot be reached now.
pub async fn connect(settings: &TemporalSettings) -> Result<Client, ConnectError> {
    let connection = ConnectionOptions::new(settings.address.clone()).build();
    let options = ClientOptions::new(settings.namespace.clone()).build();
    Client::connect(connection, options)
        .await
        .map_err(|source| ConnectError {
            address: settings.address.clone(),
            namespace: settings.namespace.clone(),
            source,
        })
}
