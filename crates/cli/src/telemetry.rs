//! Logging: an `EnvFilter` from `LOG_LEVEL`, human text or JSON lines from `LOG_FORMAT`.

use tracing_subscriber::EnvFilter;

use crate::args::{LogArgs, LogFormat};

/// Installs the global subscriber. Logs go to stderr; stdout stays free for command output
/// (`liquidity schema`, `liquidity tenants`).
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!(
            "LOG_LEVEL {:?} is not a valid filter ({e}); using \"info\"",
            args.log_level
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}
