//! The simulator's configuration (`SIMULATOR_CONFIG`), parsed from JSON and validated.
//!
//! ```json
//! {"seed": 42, "host": "127.0.0.1",
//!  "sources": {"source_1": {"port": 9101, "completeAfter": "3s", "errorRate": 0.1}}}
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The whole simulator: one HTTP server per source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Seed of the fault-injection RNG: the same seed and the same request sequence give the
    /// same faults. Defaults to 0.
    #[serde(default)]
    pub seed: u64,
    /// Address every source listens on. Defaults to `127.0.0.1`.
    #[serde(default = "default_host")]
    pub host: IpAddr,
    /// Behaviour per source name (`source_1`, ...); at least one.
    #[serde(deserialize_with = "deserialize_sources")]
    pub sources: BTreeMap<String, SourceBehaviour>,
}

/// How one simulated source behaves.
///
/// Each request draws at most one fault; the rates are the probabilities of each fault, so their
/// sum is at most 1 and the rest of the requests are answered normally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceBehaviour {
    /// Port to listen on; 0 (the default) picks a free port, see [`crate::Simulator::addresses`].
    #[serde(default)]
    pub port: u16,
    /// Time from a job's creation to its completion (`"2s"`, `"500ms"`). Defaults to 2 s.
    #[serde(
        default = "default_complete_after",
        serialize_with = "duration_str::serialize",
        deserialize_with = "duration_str::complete_after"
    )]
    pub complete_after: Duration,
    /// Delay added to every answer of `/jobs` endpoints. Defaults to 5 ms.
    #[serde(
        default = "default_latency",
        serialize_with = "duration_str::serialize",
        deserialize_with = "duration_str::latency"
    )]
    pub latency: Duration,
    /// Probability, 0..=1, of answering `500` (nothing is done).
    #[serde(default)]
    pub error_rate: f64,
    /// Probability, 0..=1, of holding the request for [`Self::hang_for`], then answering `504`
    /// (the request itself is carried out: only the answer is lost).
    #[serde(default)]
    pub timeout_rate: f64,
    /// Probability, 0..=1, of answering `200` with a body that is not valid JSON (the request
    /// itself is carried out: only the answer is lost).
    #[serde(default)]
    pub malformed_rate: f64,
    /// Probability, 0..=1, of answering `422` with a JSON error (nothing is done).
    #[serde(default)]
    pub reject_rate: f64,
    /// How long a request picked for a timeout is held. Defaults to 30 s: longer than any sane
    /// client timeout, so the client gives up first.
    #[serde(
        default = "default_hang_for",
        serialize_with = "duration_str::serialize",
        deserialize_with = "duration_str::hang_for"
    )]
    pub hang_for: Duration,
    /// Bytes of filler added to every completed document, as a `padding` string field: a source
    /// answering documents larger than the workers accept (`SOURCE_MAX_BODY`). Defaults to 0.
    #[serde(default)]
    pub document_padding: usize,
    /// When set, every `/jobs` request is answered `307 Temporary Redirect` to this base URL
    /// plus the request's path (`{redirectTo}/jobs/{id}`): a source that moved. Workers must
    /// not follow it. Defaults to none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
}

impl Default for SourceBehaviour {
    fn default() -> Self {
        Self {
            port: 0,
            complete_after: default_complete_after(),
            latency: default_latency(),
            error_rate: 0.0,
            timeout_rate: 0.0,
            malformed_rate: 0.0,
            reject_rate: 0.0,
            hang_for: default_hang_for(),
            document_padding: 0,
            redirect_to: None,
        }
    }
}

impl SourceBehaviour {
    /// The rates by their JSON field name, in the order faults are drawn.
    pub(crate) fn rates(&self) -> [(&'static str, f64); 4] {
        [
            ("rejectRate", self.reject_rate),
            ("errorRate", self.error_rate),
            ("timeoutRate", self.timeout_rate),
            ("malformedRate", self.malformed_rate),
        ]
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not the expected shape; serde's message names the field and position.
    #[error("SIMULATOR_CONFIG is invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// `sources` is empty.
    #[error("SIMULATOR_CONFIG has no sources: give at least one under `sources`")]
    NoSources,
    /// A rate outside 0..=1.
    #[error("source `{source_name}`: `{field}` is {value}, it must be within 0..=1")]
    RateOutOfRange {
        /// The source.
        source_name: String,
        /// The JSON field (`errorRate`, ...).
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The rates add up to more than 1.
    #[error(
        "source `{source_name}`: rejectRate + errorRate + timeoutRate + malformedRate is {sum}, it must be at most 1"
    )]
    RatesAboveOne {
        /// The source.
        source_name: String,
        /// The sum of its rates.
        sum: f64,
    },
    /// Two sources ask for the same (non-zero) port.
    #[error("sources `{first}` and `{second}` both ask for `port` {port}")]
    DuplicatePort {
        /// The port.
        port: u16,
        /// One source asking for it.
        first: String,
        /// Another source asking for it.
        second: String,
    },
}

impl SimulatorConfig {
    /// `source_1`, `source_2` and `source_3` on `base_port`, `base_port + 1` and
    /// `base_port + 2` (all on port 0 when `base_port` is 0), with default behaviour and seed 0.
    pub fn default_three(base_port: u16) -> Self {
        let sources = (0..3u16)
            .map(|i| {
                let port = if base_port == 0 { 0 } else { base_port.saturating_add(i) };
                (
                    format!("source_{}", i + 1),
                    SourceBehaviour {
                        port,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Self {
            seed: 0,
            host: default_host(),
            sources,
        }
    }

    /// Parses and validates a JSON configuration.
    ///
    /// # Errors
    /// [`ConfigError::Json`] for malformed JSON, unknown fields or bad durations; the other
    /// variants when [`Self::validate`] refuses it.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_str(json)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: at least one source, rates within 0..=1 summing to at most 1,
    /// no port asked for twice.
    ///
    /// # Errors
    /// The first problem found, naming the source and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError::NoSources);
        }
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        for (name, behaviour) in &self.sources {
            let rates = behaviour.rates();
            for (field, value) in rates {
                if !(0.0..=1.0).contains(&value) {
                    return Err(ConfigError::RateOutOfRange {
                        source_name: name.clone(),
                        field,
                        value,
                    });
                }
            }
            let sum: f64 = rates.iter().map(|(_, rate)| rate).sum();
            // Tolerance for decimal fractions such as 0.1 + 0.2 + 0.7 adding up to 1.0000000000000002.
            if sum > 1.0 + 1e-9 {
                return Err(ConfigError::RatesAboveOne {
                    source_name: name.clone(),
                    sum,
                });
            }
            if behaviour.port != 0
                && let Some(first) = ports.insert(behaviour.port, name)
            {
                return Err(ConfigError::DuplicatePort {
                    port: behaviour.port,
                    first: first.to_owned(),
                    second: name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn default_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn default_complete_after() -> Duration {
    Duration::from_secs(2)
}

fn default_latency() -> Duration {
    Duration::from_millis(5)
}

fn default_hang_for() -> Duration {
    Duration::from_secs(30)
}

/// Deserializes each source on its own, so that an error names the source: serde's own
/// messages say which field is unknown or mistyped, but not in which entry of a map.
fn deserialize_sources<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, SourceBehaviour>, D::Error> {
    BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?
        .into_iter()
        .map(|(name, value)| match SourceBehaviour::deserialize(value) {
            Ok(behaviour) => Ok((name, behaviour)),
            Err(e) => Err(serde::de::Error::custom(format_args!("source `{name}`: {e}"))),
        })
        .collect()
}

/// Durations as humantime strings (`"500ms"`, `"2s"`, `"1m 30s"`). One deserializer per field,
/// because a custom error cannot otherwise tell which field it is about.
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    pub(super) fn complete_after<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        parse(deserializer, "completeAfter")
    }

    pub(super) fn latency<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        parse(deserializer, "latency")
    }

    pub(super) fn hang_for<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        parse(deserializer, "hangFor")
    }

    fn parse<'de, D: Deserializer<'de>>(deserializer: D, field: &str) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "`{field}`: invalid duration {text:?} ({e}), expected e.g. \"500ms\" or \"2s\""
            ))
        })
    }
}
