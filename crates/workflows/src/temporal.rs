//! Where Temporal is and how to reach it.

use std::time::Duration;

use temporalio_client::errors::ClientConnectError;
use temporalio_client::{Client, ClientOptions, ConnectionOptions};
use tokio_util::sync::CancellationToken;
use url::Url;

/// Bound of one connection attempt: a host that accepts TCP but never answers must not hold
/// the caller for the OS's TCP timeout (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// First wait of [`connect_waiting`] after a failed attempt; it doubles up to
/// [`MAX_CONNECT_BACKOFF`].
pub const FIRST_CONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// Longest wait of [`connect_waiting`] between two attempts.
pub const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(30);

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
    let connection = ConnectionOptions::new(settings.address.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    let options = ClientOptions::new(settings.namespace.clone()).build();
    Client::connect(connection, options)
        .await
        .map_err(|source| ConnectError {
            address: settings.address.clone(),
            namespace: settings.namespace.clone(),
            source,
        })
}

/// Connects like [`connect`], but while Temporal is unreachable keeps trying, logging each
/// failure with the wait before the next attempt (from [`FIRST_CONNECT_BACKOFF`], doubling up
/// to [`MAX_CONNECT_BACKOFF`]). So a process started before Temporal (a cluster booting, a
/// rolling restart of the server) waits for it instead of exiting.
///
/// Returns `None` when `shutdown` is cancelled first (SIGTERM while waiting).
pub async fn connect_waiting(settings: &TemporalSettings, shutdown: &CancellationToken) -> Option<Client> {
    let mut backoff = FIRST_CONNECT_BACKOFF;
    let mut attempt: u32 = 1;
    loop {
        let result = tokio::select! {
            result = connect(settings) => result,
            () = shutdown.cancelled() => return None,
        };
        match result {
            Ok(client) => {
                if attempt > 1 {
                    tracing::info!(address = %settings.address, attempt, "connected to Temporal");
                }
                return Some(client);
            }
            Err(e) => {
                tracing::warn!(
                    error.cause_chain = ?e,
                    error.message = %e,
                    attempt,
                    retry_in = ?backoff,
                    "waiting for Temporal: unreachable"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return None,
        }
        backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
        attempt = attempt.saturating_add(1);
    }
}

/// Temporal's part of a process's readiness, on a connection of its own: it answers before the
/// role's own client exists (a worker still waiting for Temporal is alive but not ready), and
/// says what the frontend says now, not what a connection remembers.
pub struct TemporalProbe {
    settings: TemporalSettings,
    client: tokio::sync::OnceCell<Client>,
}

/// Why a [`TemporalProbe`] check failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection could be made yet.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The health check failed: the server is down, or answered an error.
    #[error("Temporal's health check failed")]
    Health(#[source] temporalio_client::tonic::Status),
}

impl TemporalProbe {
    /// A probe of the settings' server; connects on its first check.
    pub fn new(settings: TemporalSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// One gRPC health check of the frontend (connecting first if no connection was made yet;
    /// the connection then reconnects by itself after an outage).
    ///
    /// # Errors
    /// [`ProbeError`].
    pub async fn check(&self) -> Result<(), ProbeError> {
        use temporalio_client::tonic::IntoRequest as _;
        use temporalio_common::protos::grpc::health::v1::HealthCheckRequest;
        let client = self.client.get_or_try_init(|| connect(&self.settings)).await?;
        client
            .connection()
            .health_service()
            .check(HealthCheckRequest::default().into_request())
            .await
            .map(drop)
            .map_err(ProbeError::Health)
    }
}
