//! `liquidity cdc-config`: what Debezium needs per tenant, rendered from `TENANTS_CONFIG`.
//!
//! `liquidity` is the only parser of `TENANTS_CONFIG`; Debezium's hosts take what this renders:
//! - `--format relay`: one JSON document on stdout for the local relay (`cdc/relay/relay.py`):
//!   Pub/Sub's coordinates and, per tenant, its id, name and Debezium source settings.
//! - `--format debezium-server --out-dir DIR`: `DIR/<tenant name>/application.properties`, one
//!   Debezium Server instance per tenant database.
//!
//! Both take their source settings from [`source_settings`], so the relay and Debezium Server
//! capture the same columns and emit the same messages.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use liquidity_core::tenancy::{DatabaseEndpoint, TenantConfig, parse_tenants_config};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value, json};

use crate::args::{CdcConfigArgs, CdcConfigFormat};

/// Created by the tenant migration (`report_contents` and `cdc_heartbeat`); Debezium never
/// creates publications (`publication.autocreate.mode=disabled`).
pub const PUBLICATION: &str = "dbz_report_contents";

/// The upsert of Debezium's heartbeat: see [`source_settings`].
const HEARTBEAT_QUERY: &str =
    "INSERT INTO public.cdc_heartbeat (id, ts) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts";

/// Debezium Server's configuration, with `@@NAME@@` placeholders.
const DEBEZIUM_SERVER_TEMPLATE: &str = include_str!("cdc_config/debezium-server.properties");

/// One Debezium source setting and why it has its value (a comment in the rendered properties).
struct Setting {
    key: &'static str,
    value: String,
    why: &'static str,
}

/// How the connector logs in: as the replication role (`CDC_DATABASE_USER`) or, unset, as the
/// user of each `databaseUrl`; and which password the rendered configuration holds.
struct Login<'a> {
    role: Option<&'a str>,
    password: Password<'a>,
}

enum Password<'a> {
    /// `CDC_DATABASE_PASSWORD`, the role's.
    Role(&'a str),
    /// The password of each `databaseUrl`.
    Url,
    /// `${TENANT_DB_PASSWORD}`, read from each Debezium Server instance's environment, so
    /// that the rendered files hold no secret.
    Reference,
}

impl Login<'_> {
    /// The user and password for this endpoint.
    fn credentials(&self, endpoint: &DatabaseEndpoint) -> (String, String) {
        let user = self.role.map_or_else(|| endpoint.user.clone(), str::to_owned);
        let password = match self.password {
            Password::Role(password) => password.to_owned(),
            Password::Url => endpoint.password.clone(),
            Password::Reference => "${TENANT_DB_PASSWORD}".to_owned(),
        };
        (user, password)
    }
}

/// Slot names are cluster-wide and limited to `[a-z0-9_]`: one per tenant database.
fn slot_name(database: &str) -> String {
    let suffix: String = database
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    format!("dbz_{suffix}")
}

/// The PostgreSQL connector's settings for one tenant, shared by the relay and Debezium Server.
fn source_settings(tenant: &TenantConfig, login: &Login<'_>) -> Vec<Setting> {
    let endpoint = tenant.endpoint();
    let (user, password) = login.credentials(&endpoint);
    let setting = |key, value: &str, why| Setting {
        key,
        value: value.to_owned(),
        why,
    };
    vec![
        setting(
            "connector.class",
            "io.debezium.connector.postgresql.PostgresConnector",
            "",
        ),
        setting("database.hostname", &endpoint.host, ""),
        setting("database.port", &endpoint.port.to_string(), ""),
        setting(
            "database.user",
            &user,
            "the replication role (CDC_DATABASE_USER), never the database's owner",
        ),
        setting("database.password", &password, ""),
        setting("database.dbname", &endpoint.database, ""),
        setting("database.sslmode", endpoint.ssl_mode, ""),
        setting(
            "topic.prefix",
            &tenant.id.to_string(),
            "becomes source.name of every event: consumers read the tenant id from it",
        ),
        setting("plugin.name", "pgoutput", ""),
        setting(
            "slot.name",
            &slot_name(&endpoint.database),
            "slot names are cluster-wide: one per tenant database",
        ),
        setting("publication.name", PUBLICATION, "created by the tenant migration"),
        setting("publication.autocreate.mode", "disabled", ""),
        setting("table.include.list", "public.report_contents", ""),
        setting(
            "column.exclude.list",
            "public.report_contents.last_run_at",
            "a poll only moves last_run_at: without that column, and with skip.messages.without.change, \
             such an update is no event at all (REPLICA IDENTITY FULL lets Debezium compare before and after)",
        ),
        setting("skip.messages.without.change", "true", ""),
        setting(
            "snapshot.mode",
            "when_needed",
            "snapshot on first start, and again when the stored offset is gone from the slot (a dropped \
             slot) instead of refusing to start; snapshot reads of final contents finish their reports",
        ),
        setting("tombstones.on.delete", "false", ""),
        setting(
            "poll.interval.ms",
            "50",
            "latency: Debezium's default 500 ms puts ~500 ms on every event (docs/stack-notes.md)",
        ),
        setting(
            "max.batch.size",
            "2048",
            "a burst is published in batches this large (one Pub/Sub request per 1000 messages)",
        ),
        setting("max.queue.size", "8192", ""),
        setting(
            "heartbeat.interval.ms",
            "10000",
            "all slots share the cluster's WAL; an idle tenant's slot only advances through a change in \
             its own database: write one every 10 s (cdc_heartbeat is in the publication, not in the \
             include list: docs/stack-notes.md, \"Idle tenants pin WAL\")",
        ),
        setting("heartbeat.action.query", HEARTBEAT_QUERY, ""),
        setting(
            "offset.flush.interval.ms",
            "0",
            "commit offsets after every batch (the default 60 s is a minute of replay after a crash)",
        ),
    ]
}

/// The relay's configuration: Pub/Sub and, per tenant, the source settings with the password.
fn relay_config(args: &CdcConfigArgs, tenants: &[TenantConfig], login: &Login<'_>) -> Value {
    let tenants: Vec<Value> = tenants
        .iter()
        .map(|tenant| {
            let debezium: Map<String, Value> = source_settings(tenant, login)
                .into_iter()
                .map(|s| (s.key.to_owned(), Value::String(s.value)))
                .collect();
            json!({ "id": tenant.id, "name": tenant.name, "debezium": debezium })
        })
        .collect();
    json!({
        "pubsub": {
            "emulatorHost": args.pubsub.pubsub_emulator_host,
            "project": args.pubsub.pubsub_project,
            "topic": args.pubsub.pubsub_topic,
            "deadLetterTopic": args.pubsub.pubsub_dlq_topic,
        },
        "tenants": tenants,
    })
}

/// One tenant's Debezium Server `application.properties`.
fn debezium_server_properties(args: &CdcConfigArgs, tenant: &TenantConfig, login: &Login<'_>) -> String {
    let endpoint = tenant.endpoint();
    let mut source = String::new();
    for setting in source_settings(tenant, login) {
        if !setting.why.is_empty() {
            let _ = writeln!(source, "# {}", setting.why);
        }
        let _ = writeln!(source, "debezium.source.{}={}", setting.key, setting.value);
    }
    let address = match &args.pubsub.pubsub_emulator_host {
        Some(host) => format!("debezium.sink.pubsub.address={host}"),
        None => "#debezium.sink.pubsub.address=127.0.0.1:8085".to_owned(),
    };
    let (user, password) = login.credentials(&endpoint);
    let (offsets_url, offsets_password) = match &args.cdc_offsets_jdbc_url {
        // a separate offsets database always takes its password from the instance's environment
        Some(url) => (url.clone(), "${CDC_OFFSETS_PASSWORD}".to_owned()),
        None => (
            format!(
                "jdbc:postgresql://{}:{}/{}?sslmode={}",
                endpoint.host, endpoint.port, endpoint.database, endpoint.ssl_mode
            ),
            password,
        ),
    };
    let offsets_user = args.cdc_offsets_user.clone().unwrap_or(user);
    let offsets_table = format!(
        "dbz_offsets_{}",
        slot_name(&endpoint.database).trim_start_matches("dbz_")
    );
    let values = [
        ("TENANT_NAME", tenant.name.clone()),
        ("TENANT_ID", tenant.id.to_string()),
        ("PUBSUB_PROJECT", args.pubsub.pubsub_project.clone()),
        ("PUBSUB_TOPIC", args.pubsub.pubsub_topic.clone()),
        ("PUBSUB_ADDRESS", address),
        ("SOURCE", source.trim_end().to_owned()),
        ("OFFSETS_JDBC_URL", offsets_url),
        ("OFFSETS_USER", offsets_user),
        ("OFFSETS_PASSWORD", offsets_password),
        ("OFFSETS_TABLE", offsets_table),
    ];
    values
        .iter()
        .fold(DEBEZIUM_SERVER_TEMPLATE.to_owned(), |text, (name, value)| {
            text.replace(&format!("@@{name}@@"), value)
        })
}

/// A tenant name becomes a directory name: keep it to a safe alphabet.
fn safe_directory_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // mode 0600: with inline secrets the file holds a password
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

pub fn run(args: CdcConfigArgs) -> anyhow::Result<()> {
    let tenants = parse_tenants_config(&args.tenants_config)?;
    let role = args.cdc_database_user.as_deref();
    let role_password = args.cdc_database_password.as_ref().map(|p| p.expose_secret());
    let written = match (role, role_password) {
        (Some(_), Some(password)) => Ok(Password::Role(password)),
        (None, None) => Ok(Password::Url),
        (Some(_), None) => Err("CDC_DATABASE_USER needs CDC_DATABASE_PASSWORD"),
        (None, Some(_)) => anyhow::bail!("CDC_DATABASE_PASSWORD is set without CDC_DATABASE_USER"),
    };
    match args.format {
        CdcConfigFormat::Relay => {
            // the relay connects itself: it needs the passwords
            let password = written.map_err(|e| anyhow::anyhow!("{e}: the relay connects with it"))?;
            let login = Login { role, password };
            println!("{}", relay_config(&args, &tenants, &login));
        }
        CdcConfigFormat::DebeziumServer => {
            let out_dir = args.out_dir.as_deref().context("--out-dir is required")?;
            let mut seen = std::collections::HashSet::new();
            for tenant in &tenants {
                anyhow::ensure!(
                    safe_directory_name(&tenant.name) && seen.insert(tenant.name.as_str()),
                    "tenant name {:?} must be unique and a safe directory name ([A-Za-z0-9_.-])",
                    tenant.name
                );
            }
            let password = if args.inline_secrets {
                written.map_err(|e| anyhow::anyhow!("{e} with --inline-secrets"))?
            } else {
                Password::Reference
            };
            let login = Login { role, password };
            for tenant in &tenants {
                let dir = out_dir.join(&tenant.name);
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join("application.properties");
                write_private(&path, &debezium_server_properties(&args, tenant, &login))?;
                println!("{} (tenant {} {})", path.display(), tenant.name, tenant.id);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::Cli;

    const TENANTS: &str = r#"[{"id":"00000000-0000-4000-8000-000000000001","name":"t1",
        "databaseUrl":"postgres://lqdty_t1:owner-secret@db.example:5433/Lqdty-T1?sslmode=require"}]"#;

    fn args(extra: &[&str]) -> CdcConfigArgs {
        let base = ["liquidity", "cdc-config", "--tenants-config", TENANTS];
        match Cli::parse_from(base.iter().chain(extra)).command {
            crate::args::Command::CdcConfig(args) => args,
            _ => unreachable!(),
        }
    }

    fn render_relay(extra: &[&str]) -> Value {
        let args = args(extra);
        let tenants = parse_tenants_config(&args.tenants_config).unwrap();
        let login = Login {
            role: args.cdc_database_user.as_deref(),
            password: args
                .cdc_database_password
                .as_ref()
                .map_or(Password::Url, |p| Password::Role(p.expose_secret())),
        };
        relay_config(&args, &tenants, &login)
    }

    #[test]
    fn the_relay_gets_the_replication_role_and_every_source_setting() {
        // Act
        let config = render_relay(&[
            "--format",
            "relay",
            "--cdc-database-user",
            "lqdty_cdc",
            "--cdc-database-password",
            "cdc-secret",
        ]);

        // Assert
        let tenant = &config["tenants"][0];
        let debezium = &tenant["debezium"];
        assert_eq!(tenant["id"], "00000000-0000-4000-8000-000000000001");
        assert_eq!(debezium["topic.prefix"], tenant["id"]);
        assert_eq!(
            (&debezium["database.user"], &debezium["database.password"]),
            (&json!("lqdty_cdc"), &json!("cdc-secret"))
        );
        assert_eq!(debezium["database.hostname"], "db.example");
        assert_eq!(debezium["database.port"], "5433");
        assert_eq!(debezium["database.sslmode"], "require");
        assert_eq!(debezium["slot.name"], "dbz_lqdty_t1");
        assert_eq!(debezium["column.exclude.list"], "public.report_contents.last_run_at");
        assert_eq!(debezium["skip.messages.without.change"], "true");
        assert_eq!(config["pubsub"]["topic"], "tenant-cdc");
        assert_eq!(config["pubsub"]["deadLetterTopic"], "tenant-cdc-dlq");
    }

    #[test]
    fn without_a_replication_role_the_relay_logs_in_as_the_url_says() {
        let config = render_relay(&["--format", "relay"]);
        let debezium = &config["tenants"][0]["debezium"];
        assert_eq!(
            (&debezium["database.user"], &debezium["database.password"]),
            (&json!("lqdty_t1"), &json!("owner-secret"))
        );
    }

    #[test]
    fn debezium_server_files_share_the_relays_source_settings_and_hold_no_secret() {
        // Arrange
        let args = args(&[
            "--format",
            "debezium-server",
            "--out-dir",
            "/nowhere",
            "--cdc-database-user",
            "lqdty_cdc",
            "--cdc-database-password",
            "cdc-secret",
        ]);
        let tenants = parse_tenants_config(&args.tenants_config).unwrap();
        let login = Login {
            role: Some("lqdty_cdc"),
            password: Password::Reference,
        };

        // Act
        let properties = debezium_server_properties(&args, &tenants[0], &login);

        // Assert: every source setting of the relay is there, under debezium.source.
        let relay = render_relay(&["--format", "relay"]);
        for (key, value) in relay["tenants"][0]["debezium"].as_object().unwrap() {
            let line = match key.as_str() {
                "database.user" => "debezium.source.database.user=lqdty_cdc".to_owned(),
                "database.password" => "debezium.source.database.password=${TENANT_DB_PASSWORD}".to_owned(),
                _ => format!("debezium.source.{key}={}", value.as_str().unwrap()),
            };
            assert!(properties.lines().any(|l| l == line), "missing {line}");
        }
        assert!(!properties.contains("@@"), "a placeholder is left: {properties}");
        for password in ["cdc-secret", "owner-secret"] {
            assert!(!properties.contains(password), "a password leaked: {properties}");
        }
        assert!(properties.contains("debezium.sink.pubsub.project.id=lqdty-local"));
        assert!(properties.contains("debezium.transforms.route.replacement=tenant-cdc"));
        assert!(properties.contains(
            "debezium.source.offset.storage.jdbc.connection.url=jdbc:postgresql://db.example:5433/Lqdty-T1?sslmode=require"
        ));
        assert!(properties.contains("debezium.source.offset.storage.jdbc.table.name=dbz_offsets_lqdty_t1"));
    }

    #[test]
    fn an_emulator_host_becomes_the_sinks_address() {
        let args = args(&[
            "--format",
            "debezium-server",
            "--out-dir",
            "/x",
            "--pubsub-emulator-host",
            "pubsub:8085",
        ]);
        let tenants = parse_tenants_config(&args.tenants_config).unwrap();
        let login = Login {
            role: None,
            password: Password::Reference,
        };
        let properties = debezium_server_properties(&args, &tenants[0], &login);
        assert!(
            properties
                .lines()
                .any(|l| l == "debezium.sink.pubsub.address=pubsub:8085")
        );
    }

    #[test]
    fn tenant_names_that_are_not_safe_directory_names_are_refused() {
        assert!(safe_directory_name("t1-eu.prod_2"));
        for bad in ["", "..", ".hidden", "a/b", "t 1"] {
            assert!(!safe_directory_name(bad), "{bad:?}");
        }
    }
}
