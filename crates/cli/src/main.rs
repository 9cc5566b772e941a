//! `liquidity`: one binary, one subcommand per process role. It parses arguments and calls
//! library code; nothing else lives here.

mod args;
mod commands;
mod telemetry;

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::args::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let role = matches.subcommand_name().unwrap_or("liquidity");
    let telemetry = match telemetry::init(&cli.log, role) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // rustls finds no default crypto provider: we build every TLS stack on `ring` only, to
    // avoid compiling aws-lc as well (see Cargo.toml).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Api(args) => commands::api::run(args).await,
        Command::Provision(args) => commands::provision::run(args).await,
        Command::Migrate(args) => commands::migrate::run(args).await,
        Command::Tenants(args) => commands::tenants::run(args).await,
        Command::Schema => commands::schema::run(),
        Command::CdcWorker(args) => commands::cdc_worker::run(args).await,
        Command::WorkflowWorker(args) => commands::workflow_worker::run(args).await,
        Command::Sources(args) => commands::sources::run(args).await,
        Command::CdcConfig(args) => commands::cdc_config::run(args),
        Command::PubsubSetup(args) => commands::pubsub_setup::run(args).await,
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "liquidity failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // The flush waits for the exporter, whose connection is served by this runtime.
    tokio::task::block_in_place(|| telemetry.shutdown());
    code
}
