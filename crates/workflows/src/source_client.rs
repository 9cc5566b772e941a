//! HTTP client of the external source servers ([`liquidity_core::sources`] protocol), and the
//! classification of their answers into what the poll loop does next.

use std::collections::BTreeMap;
use std::time::Duration;

use liquidity_core::reports::REPORT_SOURCES;
use liquidity_core::sources::{JobRequest, JobState, JobStatus};
use reqwest::StatusCode;
use url::Url;

/// Base URL of every source server, by source name (`SOURCES_CONFIG`).
///
/// Invariant: every name of [`REPORT_SOURCES`] has an `http(s)` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcesConfig {
    urls: BTreeMap<String, Url>,
}

/// Why `SOURCES_CONFIG` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourcesConfigError {
    /// Not a JSON object of strings.
    #[error("SOURCES_CONFIG is not a JSON object of source name -> base URL: {0}")]
    Json(#[from] serde_json::Error),
    /// A value that does not parse as a URL.
    #[error("SOURCES_CONFIG: the URL of source {source_name:?} is invalid: {error}")]
    InvalidUrl {
        /// The source.
        source_name: String,
        /// The parse error.
        #[source]
        error: url::ParseError,
    },
    /// A URL that is not `http` or `https`.
    #[error("SOURCES_CONFIG: the URL of source {source_name:?} must be http or https, not {scheme:?}")]
    UnsupportedScheme {
        /// The source.
        source_name: String,
        /// The scheme found.
        scheme: String,
    },
    /// A source every report needs but that has no URL.
    #[error("SOURCES_CONFIG has no URL for source {0:?} (every report fetches {REPORT_SOURCES:?})")]
    MissingSource(String),
}

impl SourcesConfig {
    /// Parses and validates `SOURCES_CONFIG`, e.g. `{"source_1":"http://127.0.0.1:9101",...}`.
    /// Names beyond [`REPORT_SOURCES`] are accepted (a source may be added before reports use it).
    ///
    /// # Errors
    /// [`SourcesConfigError`] naming the first problem.
    pub fn parse(json: &str) -> Result<Self, SourcesConfigError> {
        let raw: BTreeMap<String, String> = serde_json::from_str(json)?;
        let mut urls = BTreeMap::new();
        for (name, raw_url) in raw {
            let url = Url::parse(raw_url.trim()).map_err(|error| SourcesConfigError::InvalidUrl {
                source_name: name.clone(),
                error,
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(SourcesConfigError::UnsupportedScheme {
                    source_name: name,
                    scheme: url.scheme().to_owned(),
                });
            }
            urls.insert(name, url);
        }
        if let Some(missing) = REPORT_SOURCES.iter().find(|name| !urls.contains_key(**name)) {
            return Err(SourcesConfigError::MissingSource((*missing).to_owned()));
        }
        Ok(Self { urls })
    }

    /// The base URL of a source, if configured.
    pub fn url(&self, source: &str) -> Option<&Url> {
        self.urls.get(source)
    }
}

/// Which endpoint was called: the classification of a 404 depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceCall<'a> {
    /// `POST /jobs`.
    Submit,
    /// `GET /jobs/{job_id}`.
    Status {
        /// The job asked about.
        job_id: &'a str,
    },
}

/// Why a call to a source gave no usable [`JobStatus`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Worth asking again after a backoff: the source is down, overloaded or slow.
    #[error("source unavailable: {0}")]
    Transient(#[from] Transient),
    /// The source answered something we cannot use; asking again rarely helps, so these are
    /// counted and bounded.
    #[error("source answered {0}")]
    BadAnswer(#[from] BadAnswer),
    /// `404` on `GET /jobs/{id}`: the source forgot the job (restarted, expired). Submitting
    /// again is safe because `POST /jobs` is idempotent on the content id.
    #[error("source does not know job {job_id:?} (404)")]
    JobLost {
        /// The job it does not know.
        job_id: String,
    },
    /// No URL is configured for the content's source: permanent.
    #[error("no URL is configured for source {0:?}")]
    UnknownSource(String),
}

/// A transient failure.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    /// `5xx`, `408 Request Timeout` or `429 Too Many Requests`.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// Connection refused or reset, timeout, body cut short.
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
}

/// An unusable answer.
#[derive(Debug, thiserror::Error)]
pub enum BadAnswer {
    /// A status other than success that retrying does not fix (`4xx`, and `1xx` which a
    /// finished HTTP exchange never carries).
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// A `3xx`. Redirects are not followed: a source that moved is reconfigured in
    /// `SOURCES_CONFIG`, never chased, so an answer cannot send the worker's requests (and the
    /// tenant ids in them) to another host.
    #[error(
        "HTTP {status}, a redirect to {location:?}, which is not followed (fix SOURCES_CONFIG if the source moved)"
    )]
    Redirect {
        /// The `3xx` status.
        status: StatusCode,
        /// Its `Location` header, when present and readable.
        location: Option<String>,
    },
    /// A body longer than `SOURCE_MAX_BODY`; reading stopped at the limit.
    #[error("a body of more than {limit} bytes (SOURCE_MAX_BODY)")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A success whose body is not a `JobStatus` JSON document.
    #[error("malformed body: {0}")]
    MalformedBody(#[source] serde_json::Error),
    /// A `completed` job without `data`.
    #[error("job {job_id:?} completed without data")]
    CompletedWithoutData {
        /// The job.
        job_id: String,
    },
}

/// Classifies one HTTP answer of a source. Pure, so every class is unit-tested.
///
/// - `2xx` with a valid [`JobStatus`] (and `data` when completed): the status.
/// - `5xx`, `408`, `429`: [`SourceError::Transient`].
/// - `404` on [`SourceCall::Status`]: [`SourceError::JobLost`].
/// - `3xx`: [`BadAnswer::Redirect`] (without its location: [`SourceClient`] adds it).
/// - any other status, and malformed bodies: [`SourceError::BadAnswer`].
///
/// # Errors
/// The [`SourceError`] class of the answer.
pub fn classify_answer(call: SourceCall<'_>, status: StatusCode, body: &[u8]) -> Result<JobStatus, SourceError> {
    if status.is_success() {
        let job: JobStatus = serde_json::from_slice(body).map_err(BadAnswer::MalformedBody)?;
        if job.status == JobState::Completed && job.data.is_none() {
            return Err(BadAnswer::CompletedWithoutData { job_id: job.id }.into());
        }
        return Ok(job);
    }
    match (call, status) {
        (SourceCall::Status { job_id }, StatusCode::NOT_FOUND) => Err(SourceError::JobLost {
            job_id: job_id.to_owned(),
        }),
        (_, StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS) => Err(Transient::Status(status).into()),
        (_, status) if status.is_server_error() => Err(Transient::Status(status).into()),
        (_, status) if status.is_redirection() => Err(BadAnswer::Redirect { status, location: None }.into()),
        (_, status) => Err(BadAnswer::Status(status).into()),
    }
}

/// Calls the source servers of [`SourcesConfig`] with a per-request timeout, a bounded body and
/// no redirects.
#[derive(Clone, Debug)]
pub struct SourceClient {
    http: reqwest::Client,
    config: SourcesConfig,
    max_body: usize,
}

impl SourceClient {
    /// A client whose every request (connect + answer) is bounded by `timeout`, that reads at
    /// most `max_body` bytes of a body (`SOURCE_MAX_BODY`, see
    /// [`crate::activities::FetchPolicy::max_body`]) and follows no redirect.
    ///
    /// reqwest is built without a TLS crypto provider (see Cargo.toml); when the process has
    /// none yet, ring's is installed as the default, as the CLI does at startup, because building
    /// the client would otherwise panic.
    ///
    /// # Errors
    /// reqwest's builder error (e.g. the system's TLS roots cannot be loaded).
    pub fn new(config: SourcesConfig, timeout: Duration, max_body: usize) -> Result<Self, reqwest::Error> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing an install race to another thread is fine: some provider is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, config, max_body })
    }

    /// `POST /jobs`: starts the job of a content, or returns the one the source already has
    /// for this content id.
    ///
    /// # Errors
    /// The [`SourceError`] class of the failure.
    #[tracing::instrument(skip_all, fields(source = source, content_id = %request.content_id))]
    pub async fn submit(&self, source: &str, request: &JobRequest) -> Result<JobStatus, SourceError> {
        let url = self.endpoint(source, &["jobs"])?;
        let answer = self.http.post(url).json(request).send().await;
        self.read(SourceCall::Submit, answer).await
    }

    /// `GET /jobs/{job_id}`: where the job stands.
    ///
    /// # Errors
    /// The [`SourceError`] class of the failure.
    #[tracing::instrument(skip_all, fields(source = source, job_id = job_id))]
    pub async fn status(&self, source: &str, job_id: &str) -> Result<JobStatus, SourceError> {
        let url = self.endpoint(source, &["jobs", job_id])?;
        let answer = self.http.get(url).send().await;
        self.read(SourceCall::Status { job_id }, answer).await
    }

    fn endpoint(&self, source: &str, segments: &[&str]) -> Result<Url, SourceError> {
        let mut url = self
            .config
            .url(source)
            .ok_or_else(|| SourceError::UnknownSource(source.to_owned()))?
            .clone();
        // Percent-encodes the job id, so a hostile id cannot change the path.
        url.path_segments_mut()
            .map_err(|()| SourceError::UnknownSource(source.to_owned()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Classifies an answer, reading its body only when it is a success, chunk by chunk, and
    /// giving up as soon as it passes `max_body`: a huge or endless body never sits in memory
    /// (and never reaches the tenant database or the CDC events of its row).
    async fn read(
        &self,
        call: SourceCall<'_>,
        answer: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<JobStatus, SourceError> {
        let mut response = answer.map_err(Transient::Transport)?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            return Err(BadAnswer::Redirect { status, location }.into());
        }
        if !status.is_success() {
            // Only the status of a failure matters: its body (an error page) is not read.
            return classify_answer(call, status, &[]);
        }
        let too_large = || SourceError::from(BadAnswer::TooLarge { limit: self.max_body });
        if response
            .content_length()
            .is_some_and(|length| length > self.max_body as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Transient::Transport)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        classify_answer(call, status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: SourceCall<'static> = SourceCall::Status { job_id: "j1" };

    fn classify(call: SourceCall<'_>, status: u16, body: &str) -> Result<JobStatus, SourceError> {
        classify_answer(call, StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn a_valid_in_progress_answer_is_the_job_status() {
        let job = classify(JOB, 200, r#"{"id":"j1","status":"in_progress"}"#).unwrap();
        assert_eq!(job.id, "j1");
        assert_eq!(job.status, JobState::InProgress);
    }

    #[test]
    fn a_completed_answer_carries_its_data() {
        let job = classify(
            SourceCall::Submit,
            201,
            r#"{"id":"j1","status":"completed","data":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(job.status, JobState::Completed);
        assert_eq!(job.data, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn server_errors_timeouts_and_throttling_are_transient() {
        for status in [500, 502, 503, 504, 408, 429] {
            for call in [SourceCall::Submit, JOB] {
                let err = classify(call, status, "").unwrap_err();
                assert!(
                    matches!(err, SourceError::Transient(Transient::Status(s)) if s.as_u16() == status),
                    "{status}: {err}"
                );
            }
        }
    }

    #[test]
    fn client_errors_are_bad_answers() {
        for status in [400, 401, 403, 409, 422] {
            let err = classify(JOB, status, "").unwrap_err();
            assert!(
                matches!(err, SourceError::BadAnswer(BadAnswer::Status(s)) if s.as_u16() == status),
                "{status}: {err}"
            );
        }
    }

    #[test]
    fn redirects_are_bad_answers_that_say_they_were_not_followed() {
        for status in [301, 302, 303, 307, 308] {
            let err = classify(JOB, status, "").unwrap_err();
            assert!(
                matches!(err, SourceError::BadAnswer(BadAnswer::Redirect { status: s, .. }) if s.as_u16() == status),
                "{status}: {err}"
            );
            assert!(err.to_string().contains("not followed"), "{err}");
        }
    }

    #[test]
    fn a_404_on_status_means_the_job_is_lost_but_on_submit_it_is_a_bad_answer() {
        assert!(matches!(
            classify(JOB, 404, "").unwrap_err(),
            SourceError::JobLost { job_id } if job_id == "j1"
        ));
        assert!(matches!(
            classify(SourceCall::Submit, 404, "").unwrap_err(),
            SourceError::BadAnswer(BadAnswer::Status(StatusCode::NOT_FOUND))
        ));
    }

    #[test]
    fn bodies_that_are_not_a_job_status_are_malformed() {
        for body in [
            "not json",
            "[]",
            r#"{"id":"j1"}"#,
            r#"{"id":"j1","status":"weird"}"#,
            "",
        ] {
            let err = classify(JOB, 200, body).unwrap_err();
            assert!(
                matches!(err, SourceError::BadAnswer(BadAnswer::MalformedBody(_))),
                "{body}: {err}"
            );
            assert!(err.to_string().contains("malformed body"), "{err}");
        }
    }

    #[test]
    fn a_completed_job_without_data_is_a_bad_answer() {
        for body in [
            r#"{"id":"j1","status":"completed"}"#,
            r#"{"id":"j1","status":"completed","data":null}"#,
        ] {
            assert!(matches!(
                classify(JOB, 200, body).unwrap_err(),
                SourceError::BadAnswer(BadAnswer::CompletedWithoutData { .. })
            ));
        }
    }

    #[test]
    fn a_valid_sources_config_parses() {
        let config = SourcesConfig::parse(
            r#"{"source_1":"http://127.0.0.1:9101","source_2":"https://s2.example/api/","source_3":"http://h:1"}"#,
        )
        .unwrap();
        assert_eq!(config.url("source_1").unwrap().as_str(), "http://127.0.0.1:9101/");
        assert!(config.url("source_4").is_none());
    }

    #[test]
    fn a_sources_config_missing_a_report_source_is_refused() {
        let err = SourcesConfig::parse(r#"{"source_1":"http://a","source_3":"http://c"}"#).unwrap_err();
        assert!(
            matches!(&err, SourcesConfigError::MissingSource(name) if name == "source_2"),
            "{err}"
        );
        assert!(err.to_string().contains("source_2"), "{err}");
    }

    #[test]
    fn a_sources_config_with_a_bad_url_or_scheme_or_shape_is_refused() {
        let bad_url = SourcesConfig::parse(r#"{"source_1":"not a url","source_2":"http://b","source_3":"http://c"}"#);
        assert!(
            matches!(bad_url, Err(SourcesConfigError::InvalidUrl { ref source_name, .. }) if source_name == "source_1")
        );
        let ftp = SourcesConfig::parse(r#"{"source_1":"ftp://a","source_2":"http://b","source_3":"http://c"}"#);
        assert!(matches!(ftp, Err(SourcesConfigError::UnsupportedScheme { ref scheme, .. }) if scheme == "ftp"));
        assert!(matches!(
            SourcesConfig::parse(r#"["http://a"]"#),
            Err(SourcesConfigError::Json(_))
        ));
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_the_job_id() {
        let config =
            SourcesConfig::parse(r#"{"source_1":"http://h:1/api/","source_2":"http://h:2","source_3":"http://h:3"}"#)
                .unwrap();
        let client = SourceClient::new(config, Duration::from_secs(1), 1024).unwrap();
        assert_eq!(
            client.endpoint("source_1", &["jobs", "a/b?c"]).unwrap().as_str(),
            "http://h:1/api/jobs/a%2Fb%3Fc"
        );
        assert_eq!(
            client.endpoint("source_2", &["jobs"]).unwrap().as_str(),
            "http://h:2/jobs"
        );
        assert!(matches!(
            client.endpoint("source_9", &["jobs"]),
            Err(SourceError::UnknownSource(_))
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // Arrange: a port that was just free, so nothing listens there
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = SourcesConfig::parse(&format!(
            r#"{{"source_1":"http://127.0.0.1:{port}","source_2":"http://b","source_3":"http://c"}}"#
        ))
        .unwrap();
        let client = SourceClient::new(config, Duration::from_secs(2), 1024).unwrap();

        // Act
        let err = client.status("source_1", "j1").await.unwrap_err();

        // Assert
        assert!(matches!(err, SourceError::Transient(Transient::Transport(_))), "{err}");
    }
}
