//! Parsing and validation of `TENANTS_CONFIG`.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::db::{self, DatabaseUrlError};
use crate::ids::TenantId;

/// Pool size of a tenant whose entry sets no `maxConnections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// One tenant of the registry.
#[derive(Clone)]
pub struct TenantConfig {
    /// The tenant id carried by JWTs and CDC events.
    pub id: TenantId,
    /// Short human name, e.g. `t1`.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// How to reach the tenant's own database. Holds the password: never log it, use
    /// [`TenantConfig::database`] instead.
    pub connect_options: PgConnectOptions,
    /// Upper bound of the tenant's pool in this process.
    pub max_connections: u32,
}

impl TenantConfig {
    /// `host:port/database` of the tenant's database, safe to log.
    pub fn database(&self) -> String {
        db::describe(&self.connect_options)
    }

    /// The tenant database's address and login taken apart, for a connector configured field
    /// by field (Debezium's `database.*` settings, rendered by `liquidity cdc-config`).
    pub fn endpoint(&self) -> DatabaseEndpoint {
        let options = &self.connect_options;
        DatabaseEndpoint {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            database: options.get_database().unwrap_or_default().to_owned(),
            user: options.get_username().to_owned(),
            password: db::password(options),
            ssl_mode: match options.get_ssl_mode() {
                PgSslMode::Disable => "disable",
                PgSslMode::Allow => "allow",
                PgSslMode::Prefer => "prefer",
                PgSslMode::Require => "require",
                PgSslMode::VerifyCa => "verify-ca",
                PgSslMode::VerifyFull => "verify-full",
            },
        }
    }
}

/// Where a tenant database is and how to log in, field by field. Holds the password: never
/// log it (no `Debug`).
pub struct DatabaseEndpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Login role.
    pub user: String,
    /// Its password; empty when the URL has none.
    pub password: String,
    /// libpq's `sslmode` spelling (`disable` ... `verify-full`), which Debezium takes too.
    pub ssl_mode: &'static str,
}

impl fmt::Debug for TenantConfig {
    // Hand-written so that the connect options (and their password) never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("database", &self.database())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Why `TENANTS_CONFIG` was refused.
#[derive(Debug, thiserror::Error)]
pub enum TenantsConfigError {
    /// Not a JSON array of tenant objects.
    #[error("TENANTS_CONFIG is not a JSON array of tenants: {0}")]
    Json(#[from] serde_json::Error),
    /// An empty array: no tenant could ever log in.
    #[error("TENANTS_CONFIG lists no tenant")]
    Empty,
    /// An `id` that is not a UUID.
    #[error("TENANTS_CONFIG entry {index}: id {id:?} is not a UUID")]
    InvalidId {
        /// Position in the array.
        index: usize,
        /// The offending value.
        id: String,
    },
    /// Two entries with the same id.
    #[error("TENANTS_CONFIG entry {index}: duplicate tenant id {id}")]
    DuplicateId {
        /// Position of the second occurrence.
        index: usize,
        /// The repeated id.
        id: TenantId,
    },
    /// Two entries pointing at the same database: tenants would see each other's data.
    #[error("TENANTS_CONFIG entry {index}: database {database} is already used by another tenant")]
    SharedDatabase {
        /// Position of the second occurrence.
        index: usize,
        /// `host:port/database`.
        database: String,
    },
    /// A blank name.
    #[error("TENANTS_CONFIG entry {index}: name must not be empty")]
    EmptyName {
        /// Position in the array.
        index: usize,
    },
    /// A missing or unusable `databaseUrl`.
    #[error("TENANTS_CONFIG entry {index} ({name}): databaseUrl {reason}")]
    DatabaseUrl {
        /// Position in the array.
        index: usize,
        /// The tenant's name.
        name: String,
        /// Why; never includes the URL.
        reason: DatabaseUrlReason,
    },
    /// `maxConnections` of zero.
    #[error("TENANTS_CONFIG entry {index}: maxConnections must be at least 1")]
    ZeroConnections {
        /// Position in the array.
        index: usize,
    },
}

/// What is wrong with a `databaseUrl`.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlReason {
    /// Absent or empty.
    #[error("is missing")]
    Missing,
    /// Present but unusable.
    #[error("is invalid: {0}")]
    Invalid(#[from] DatabaseUrlError),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTenant {
    id: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    max_connections: Option<u32>,
}

/// Parses and validates the JSON tenant registry.
///
/// # Errors
/// [`TenantsConfigError`] naming the first bad entry: invalid JSON, non-UUID or duplicate ids,
/// missing or invalid database URLs, two tenants on one database.
pub fn parse_tenants_config(json: &str) -> Result<Vec<TenantConfig>, TenantsConfigError> {
    let raw: Vec<RawTenant> = serde_json::from_str(json)?;
    if raw.is_empty() {
        return Err(TenantsConfigError::Empty);
    }
    let mut ids = HashSet::new();
    let mut databases = HashSet::new();
    let mut tenants = Vec::with_capacity(raw.len());
    for (index, entry) in raw.into_iter().enumerate() {
        let id: TenantId = entry.id.parse().map_err(|_| TenantsConfigError::InvalidId {
            index,
            id: entry.id.clone(),
        })?;
        if !ids.insert(id) {
            return Err(TenantsConfigError::DuplicateId { index, id });
        }
        let name = entry.name.trim().to_owned();
        if name.is_empty() {
            return Err(TenantsConfigError::EmptyName { index });
        }
        let url_error = |reason| TenantsConfigError::DatabaseUrl {
            index,
            name: name.clone(),
            reason,
        };
        let url = entry
            .database_url
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| url_error(DatabaseUrlReason::Missing))?;
        let connect_options = db::parse_database_url(&url).map_err(|e| url_error(e.into()))?;
        let database = db::describe(&connect_options);
        if !databases.insert(database.clone()) {
            return Err(TenantsConfigError::SharedDatabase { index, database });
        }
        let max_connections = entry.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(TenantsConfigError::ZeroConnections { index });
        }
        tenants.push(TenantConfig {
            id,
            name,
            description: entry.description,
            connect_options,
            max_connections,
        });
    }
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "00000000-0000-4000-8000-000000000001";
    const T2: &str = "00000000-0000-4000-8000-000000000002";

    fn entry(id: &str, db: &str) -> String {
        format!(r#"{{"id":"{id}","name":"n-{db}","databaseUrl":"postgres://u:secret@127.0.0.1:5432/{db}"}}"#)
    }

    #[test]
    fn a_valid_registry_parses_with_defaults() {
        // Arrange
        let json = format!("[{},{}]", entry(T1, "lqdty_t1"), entry(T2, "lqdty_t2"));

        // Act
        let tenants = parse_tenants_config(&json).unwrap();

        // Assert
        assert_eq!(tenants.len(), 2);
        assert_eq!(tenants[0].id.to_string(), T1);
        assert_eq!(tenants[0].max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(tenants[1].database(), "127.0.0.1:5432/lqdty_t2");
    }

    #[test]
    fn invalid_json_is_refused() {
        assert!(matches!(
            parse_tenants_config("{not json"),
            Err(TenantsConfigError::Json(_))
        ));
    }

    #[test]
    fn an_empty_registry_is_refused() {
        assert!(matches!(parse_tenants_config("[]"), Err(TenantsConfigError::Empty)));
    }

    #[test]
    fn a_non_uuid_id_is_refused() {
        let err = parse_tenants_config(&format!("[{}]", entry("t1", "a"))).unwrap_err();
        assert!(matches!(err, TenantsConfigError::InvalidId { index: 0, .. }), "{err}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let err = parse_tenants_config(&format!("[{},{}]", entry(T1, "a"), entry(T1, "b"))).unwrap_err();
        assert!(matches!(err, TenantsConfigError::DuplicateId { index: 1, .. }), "{err}");
    }

    #[test]
    fn two_tenants_on_one_database_are_refused() {
        let err = parse_tenants_config(&format!("[{},{}]", entry(T1, "a"), entry(T2, "a"))).unwrap_err();
        assert!(
            matches!(err, TenantsConfigError::SharedDatabase { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_missing_database_url_is_refused() {
        let json = format!(r#"[{{"id":"{T1}","name":"t1"}}]"#);
        let err = parse_tenants_config(&json).unwrap_err();
        assert!(
            matches!(
                err,
                TenantsConfigError::DatabaseUrl {
                    reason: DatabaseUrlReason::Missing,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn errors_and_debug_output_never_show_the_password() {
        // Arrange: a URL with a password but a wrong scheme, and a valid one
        let bad = format!(r#"[{{"id":"{T1}","name":"t1","databaseUrl":"mysql://u:hunter2@h/db"}}]"#);
        let good = format!("[{}]", entry(T1, "lqdty_t1"));

        // Act
        let err = parse_tenants_config(&bad).unwrap_err().to_string();
        let debug = format!("{:?}", parse_tenants_config(&good).unwrap());

        // Assert
        assert!(err.contains("scheme"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn the_endpoint_takes_the_url_apart_with_its_password_decoded() {
        // Arrange
        let json = format!(
            r#"[{{"id":"{T1}","name":"t1","databaseUrl":"postgres://u:p%40ss@db.example:6432/lqdty_t1?sslmode=require"}}]"#
        );

        // Act
        let endpoint = parse_tenants_config(&json).unwrap()[0].endpoint();

        // Assert
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port, endpoint.database.as_str()),
            ("db.example", 6432, "lqdty_t1")
        );
        assert_eq!((endpoint.user.as_str(), endpoint.password.as_str()), ("u", "p@ss"));
        assert_eq!(endpoint.ssl_mode, "require");
    }

    #[test]
    fn unknown_fields_are_refused_so_typos_do_not_pass_silently() {
        let json = format!(r#"[{{"id":"{T1}","name":"t1","databaseURL":"postgres://h/db"}}]"#);
        assert!(matches!(parse_tenants_config(&json), Err(TenantsConfigError::Json(_))));
    }
}
