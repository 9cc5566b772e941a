//! The HTTP servers, one per source: binding, routes, the job store and fault injection.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use liquidity_core::ids::ReportContentId;
use liquidity_core::sources::{JobRequest, JobState, JobStatus};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{ConfigError, SimulatorConfig, SourceBehaviour};
use crate::documents::document;
use crate::fault::{Fault, FaultPicker};
use crate::stats::{SimulatorStats, SourceStats};

/// Why the simulator cannot start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The configuration does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A source's address cannot be bound (port taken, host not local...).
    #[error("source `{source_name}`: cannot listen on {addr}")]
    Bind {
        /// The source.
        source_name: String,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        error: std::io::Error,
    },
    /// A source's server failed while serving.
    #[error("source `{source_name}`: server failed")]
    Serve {
        /// The source.
        source_name: String,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A source's server task panicked.
    #[error("a source server task panicked")]
    Task(#[source] JoinError),
}

/// The simulator, bound and not yet serving: build it with [`bind`], read its
/// [`addresses`](Self::addresses), then [`run_until_stopped`](Self::run_until_stopped).
#[derive(Debug)]
pub struct Simulator {
    servers: Vec<(Arc<Source>, TcpListener)>,
    addresses: BTreeMap<String, SocketAddr>,
    stats: SimulatorStats,
    /// Flipped to `true` on shutdown: stops the servers and releases held (timeout) requests.
    stop: watch::Sender<bool>,
}

/// Validates `config` and binds one listener per source on `config.host`.
///
/// # Errors
/// [`SimulatorError::Config`] when the configuration does not validate, [`SimulatorError::Bind`]
/// when a port cannot be bound.
pub async fn bind(config: &SimulatorConfig) -> Result<Simulator, SimulatorError> {
    config.validate()?;
    let (stop, _) = watch::channel(false);
    let mut stats = SimulatorStats::default();
    let mut servers = Vec::with_capacity(config.sources.len());
    let mut addresses = BTreeMap::new();
    for (name, behaviour) in &config.sources {
        let addr = SocketAddr::new(config.host, behaviour.port);
        let bind_error = |error| SimulatorError::Bind {
            source_name: name.clone(),
            addr,
            error,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        addresses.insert(name.clone(), listener.local_addr().map_err(bind_error)?);
        let source = Source {
            name: name.clone(),
            behaviour: behaviour.clone(),
            faults: FaultPicker::new(config.seed, name, behaviour),
            jobs: Mutex::default(),
            stats: stats.insert(name),
            stop: stop.subscribe(),
        };
        servers.push((Arc::new(source), listener));
    }
    Ok(Simulator {
        servers,
        addresses,
        stats,
        stop,
    })
}

impl Simulator {
    /// The bound address of each source, by source name (with the real port where 0 was asked).
    pub fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.addresses.clone()
    }

    /// The `SOURCES_CONFIG` the workflow workers take: `{"source_1":"http://127.0.0.1:9101",...}`.
    /// A source bound on an unspecified host (`0.0.0.0`, `::`) is given as loopback, which
    /// a client can connect to.
    pub fn sources_config_json(&self) -> String {
        let urls: BTreeMap<&str, String> = self
            .addresses
            .iter()
            .map(|(name, addr)| {
                let mut addr = *addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                (name.as_str(), format!("http://{addr}"))
            })
            .collect();
        serde_json::to_string(&urls).expect("a map of strings serializes")
    }

    /// A handle on the per-source counters; it outlives [`Self::run_until_stopped`].
    pub fn stats(&self) -> SimulatorStats {
        self.stats.clone()
    }

    /// Serves every source concurrently until `shutdown` resolves, then stops accepting, answers
    /// held (timeout) requests at once and waits for in-flight requests to finish.
    ///
    /// When one server fails the others are shut down as well, and the first failure returned.
    ///
    /// # Errors
    /// [`SimulatorError::Serve`] when a server fails, [`SimulatorError::Task`] when one panics.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SimulatorError> {
        let Self { servers, stop, .. } = self;
        let stop = Arc::new(stop);
        let forward = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                shutdown.await;
                stop.send_replace(true);
            }
        });
        let mut tasks = JoinSet::new();
        for (source, listener) in servers {
            let mut stopped = stop.subscribe();
            let name = source.name.clone();
            tasks.spawn(async move {
                let result = axum::serve(listener, router(source))
                    .with_graceful_shutdown(async move {
                        // An error means the sender is gone, which only happens once we return.
                        let _ = stopped.wait_for(|&stop| stop).await;
                    })
                    .await;
                (name, result)
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let error = match joined {
                Ok((_, Ok(()))) => continue,
                Ok((source_name, Err(error))) => SimulatorError::Serve { source_name, error },
                Err(join_error) => SimulatorError::Task(join_error),
            };
            tracing::error!(error.cause_chain = ?error, error.message = %error, "source server failed: stopping all");
            stop.send_replace(true);
            first_error.get_or_insert(error);
        }
        forward.abort();
        first_error.map_or(Ok(()), Err)
    }
}

/// One simulated source: its behaviour and its jobs.
#[derive(Debug)]
struct Source {
    name: String,
    behaviour: SourceBehaviour,
    faults: FaultPicker,
    jobs: Mutex<Jobs>,
    stats: Arc<SourceStats>,
    stop: watch::Receiver<bool>,
}

/// The jobs of one source, in memory only: a restart forgets them (`GET` then answers `404`,
/// which the caller handles by posting again).
#[derive(Debug, Default)]
struct Jobs {
    by_id: HashMap<String, Job>,
    by_content: HashMap<ReportContentId, String>,
}

#[derive(Debug)]
struct Job {
    id: String,
    request: JobRequest,
    /// When it completes, on the monotonic clock.
    completes_at: Instant,
    /// The same, on the wall clock: the document's `generatedAt`.
    generated_at: DateTime<Utc>,
    /// The document, generated by the first look after completion and kept, so every later
    /// answer is identical.
    data: Option<Value>,
}

fn router(source: Arc<Source>) -> Router {
    Router::new()
        .route("/jobs", post(create_job))
        .route("/jobs/{id}", get(get_job))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(source)
}

#[tracing::instrument(skip_all, fields(source = %source.name))]
async fn create_job(State(source): State<Arc<Source>>, body: Result<Json<JobRequest>, JsonRejection>) -> Response {
    source.stats.post();
    if let Some(redirect) = source.redirect("/jobs") {
        return redirect;
    }
    let fault = source.begin("POST /jobs").await;
    if let Some(refusal) = refusal(fault) {
        return refusal;
    }
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return error_response(rejection.status(), "bad_request", &rejection.body_text()),
    };
    let status = source.create_or_find(request);
    source.answer(fault, StatusCode::OK, json!(status)).await
}

#[tracing::instrument(skip_all, fields(source = %source.name, job_id = %id))]
async fn get_job(State(source): State<Arc<Source>>, Path(id): Path<String>) -> Response {
    source.stats.get();
    if let Some(redirect) = source.redirect(&format!("/jobs/{id}")) {
        return redirect;
    }
    let fault = source.begin("GET /jobs/{id}").await;
    if let Some(refusal) = refusal(fault) {
        return refusal;
    }
    match source.poll(&id) {
        Some(status) => {
            tracing::debug!(status = ?status.status, "job polled");
            source.answer(fault, StatusCode::OK, json!(status)).await
        }
        None => {
            tracing::debug!("unknown job polled");
            let body = json!({ "error": "not_found", "message": format!("no job {id}") });
            source.answer(fault, StatusCode::NOT_FOUND, body).await
        }
    }
}

/// The answer of a fault that refuses the request outright, if it is one.
fn refusal(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Reject => Some(error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            "the source refused the request (simulated)",
        )),
        Fault::Error => Some(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the source failed (simulated)",
        )),
        Fault::None | Fault::Timeout | Fault::Malformed => None,
    }
}

fn error_response(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}

impl Source {
    /// A `307` to `redirectTo` + `path`, when the source is configured to have moved.
    fn redirect(&self, path: &str) -> Option<Response> {
        let base = self.behaviour.redirect_to.as_deref()?;
        let location = format!("{}{path}", base.trim_end_matches('/'));
        tracing::debug!(%location, "redirecting");
        Some((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response())
    }

    /// Draws the request's fault, counts and logs it, and waits the configured latency.
    async fn begin(&self, endpoint: &'static str) -> Fault {
        let fault = self.faults.next();
        if fault != Fault::None {
            self.stats.fault(fault);
            tracing::warn!(endpoint, ?fault, "injecting fault");
        }
        tokio::time::sleep(self.behaviour.latency).await;
        fault
    }

    /// The answer to a request that was carried out, spoiled by `fault` if it is a timeout or a
    /// malformed body.
    async fn answer(&self, fault: Fault, status: StatusCode, body: Value) -> Response {
        match fault {
            Fault::Timeout => {
                let mut stopped = self.stop.clone();
                tokio::select! {
                    () = tokio::time::sleep(self.behaviour.hang_for) => {}
                    // Shutting down: answer now rather than hold the graceful shutdown for hangFor.
                    _ = stopped.wait_for(|&stop| stop) => {}
                }
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the source did not answer in time (simulated)",
                )
            }
            Fault::Malformed => {
                // Half of a JSON object never parses: its braces do not balance.
                let mut bytes = serde_json::to_vec(&body).expect("a JSON value serializes");
                bytes.truncate(bytes.len() / 2);
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from(bytes),
                )
                    .into_response()
            }
            Fault::None | Fault::Reject | Fault::Error => (status, Json(body)).into_response(),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves the maps consistent (each update is one insert),
        // so a poisoned lock is still usable.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The job of `request.content_id`, created if new (the idempotency of `POST /jobs`).
    fn create_or_find(&self, request: JobRequest) -> JobStatus {
        let mut jobs = self.jobs();
        let Jobs { by_id, by_content } = &mut *jobs;
        if let Some(job) = by_content.get(&request.content_id).and_then(|id| by_id.get_mut(id)) {
            tracing::debug!(job_id = %job.id, content_id = %request.content_id, "job already known");
            return self.status(job);
        }
        let id = Uuid::new_v4().to_string();
        let complete_after = self.behaviour.complete_after;
        let job = Job {
            id: id.clone(),
            completes_at: Instant::now() + complete_after,
            generated_at: Utc::now() + chrono::Duration::from_std(complete_after).unwrap_or(chrono::Duration::MAX),
            request,
            data: None,
        };
        tracing::info!(
            job_id = %id,
            tenant_id = %job.request.tenant_id,
            report_id = %job.request.report_id,
            content_id = %job.request.content_id,
            complete_after = %humantime::format_duration(complete_after),
            "job created"
        );
        self.stats.job_created();
        by_content.insert(job.request.content_id, id.clone());
        let job = by_id.entry(id).or_insert(job);
        self.status(job)
    }

    /// The job `id`, if known.
    fn poll(&self, id: &str) -> Option<JobStatus> {
        let mut jobs = self.jobs();
        let job = jobs.by_id.get_mut(id)?;
        Some(self.status(job))
    }

    /// Where `job` stands now; generates its document the first time it is seen completed.
    fn status(&self, job: &mut Job) -> JobStatus {
        if job.data.is_none() && Instant::now() >= job.completes_at {
            let mut data = document(&self.name, &job.request, job.generated_at);
            if self.behaviour.document_padding > 0
                && let Some(fields) = data.as_object_mut()
            {
                fields.insert("padding".to_owned(), "x".repeat(self.behaviour.document_padding).into());
            }
            job.data = Some(data);
            self.stats.job_completed();
            tracing::info!(job_id = %job.id, content_id = %job.request.content_id, "job completed");
        }
        JobStatus {
            id: job.id.clone(),
            status: if job.data.is_some() {
                JobState::Completed
            } else {
                JobState::InProgress
            },
            data: job.data.clone(),
        }
    }
}
