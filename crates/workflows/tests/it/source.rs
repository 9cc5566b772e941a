//! A controllable source server over real HTTP (port 0), speaking the sources protocol.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use liquidity_core::sources::{JobRequest, JobState, JobStatus};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// How the source answers.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// `POST /jobs` answers in progress; the `polls`-th `GET /jobs/{id}` answers completed.
    CompleteAfter { polls: u32 },
    /// The first `failures` requests get `500`, then like [`Behaviour::CompleteAfter`].
    FailThenComplete { failures: u32, polls: u32 },
    /// `200` with a body that is not JSON, always.
    Garbage,
    /// In progress forever.
    Never,
    /// In progress until [`FakeSource::complete`] is called.
    OnSignal,
}

/// What the source has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Every request, failed ones included.
    pub requests: u32,
    /// `POST /jobs` answered with a job.
    pub submits: u32,
    /// `GET /jobs/{id}` answered with a job.
    pub status_checks: u32,
}

struct SourceState {
    behaviour: Behaviour,
    seen: Mutex<Seen>,
    complete: AtomicBool,
}

/// A running fake source; stops when dropped.
pub struct FakeSource {
    pub addr: SocketAddr,
    state: Arc<SourceState>,
    stop: CancellationToken,
}

/// The document the fake source returns for a job.
pub fn document(job_id: &str) -> Value {
    json!({ "job": job_id, "rows": [{ "isin": "US0378331005", "amount": 12.5 }] })
}

impl FakeSource {
    pub async fn start(behaviour: Behaviour) -> Self {
        let state = Arc::new(SourceState {
            behaviour,
            seen: Mutex::new(Seen::default()),
            complete: AtomicBool::new(false),
        });
        let router = Router::new()
            .route("/jobs", post(submit))
            .route("/jobs/{id}", get(status))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
                .unwrap();
        });
        Self { addr, state, stop }
    }

    /// `SOURCES_CONFIG` pointing every report source at this server.
    pub fn sources_config(&self) -> String {
        let url = format!("http://{}", self.addr);
        json!({ "source_1": url, "source_2": url, "source_3": url }).to_string()
    }

    /// From now on, an [`Behaviour::OnSignal`] source answers completed.
    pub fn complete(&self) {
        self.state.complete.store(true, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Seen {
        *self.state.seen.lock().unwrap()
    }
}

impl Drop for FakeSource {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

enum Reply {
    Job(JobStatus),
    Error,
    Garbage,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Self::Job(job) => Json(job).into_response(),
            Self::Error => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            Self::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        }
    }
}

fn job_id(request: &JobRequest) -> String {
    format!("job-{}", request.content_id)
}

/// Counts the request and decides whether it fails before reaching the job logic.
fn intercept(state: &SourceState) -> Option<Reply> {
    let mut seen = state.seen.lock().unwrap();
    seen.requests += 1;
    match state.behaviour {
        Behaviour::Garbage => Some(Reply::Garbage),
        Behaviour::FailThenComplete { failures, .. } if seen.requests <= failures => Some(Reply::Error),
        _ => None,
    }
}

async fn submit(State(state): State<Arc<SourceState>>, Json(request): Json<JobRequest>) -> Reply {
    if let Some(reply) = intercept(&state) {
        return reply;
    }
    state.seen.lock().unwrap().submits += 1;
    Reply::Job(JobStatus {
        id: job_id(&request),
        status: JobState::InProgress,
        data: None,
    })
}

async fn status(State(state): State<Arc<SourceState>>, Path(id): Path<String>) -> Reply {
    if let Some(reply) = intercept(&state) {
        return reply;
    }
    let checks = {
        let mut seen = state.seen.lock().unwrap();
        seen.status_checks += 1;
        seen.status_checks
    };
    let completed = match state.behaviour {
        Behaviour::CompleteAfter { polls } | Behaviour::FailThenComplete { polls, .. } => checks >= polls,
        Behaviour::OnSignal => state.complete.load(Ordering::SeqCst),
        Behaviour::Garbage | Behaviour::Never => false,
    };
    if completed {
        let data = document(&id);
        Reply::Job(JobStatus {
            id,
            status: JobState::Completed,
            data: Some(data),
        })
    } else {
        Reply::Job(JobStatus {
            id,
            status: JobState::InProgress,
            data: None,
        })
    }
}
