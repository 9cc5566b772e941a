//! `liquidity sources`: the simulator of the external source servers, for the dev stack.

use anyhow::Context as _;
use liquidity_sources::SimulatorConfig;

/// `liquidity sources`.
#[derive(clap::Args)]
pub struct SourcesArgs {
    /// Simulator configuration as JSON text: `{"seed":42,"host":"127.0.0.1","sources":{"source_1":
    /// {"port":9101,"completeAfter":"2s","latency":"5ms","errorRate":0,"timeoutRate":0,"hangFor":"30s",
    /// "malformedRate":0,"rejectRate":0},...}}`. Without it: source_1..3 on --base-port.. with defaults.
    #[arg(long, env = "SIMULATOR_CONFIG")]
    pub config: Option<String>,
    /// First port of source_1..3 (then +1, +2) when no --config is given; 0 picks free ports.
    #[arg(long, env = "SIMULATOR_BASE_PORT", default_value_t = 9101)]
    pub base_port: u16,
}

/// Binds every source, logs their addresses and the matching `SOURCES_CONFIG`, and serves until
/// SIGINT or SIGTERM. Prints nothing to stdout.
pub async fn run(args: SourcesArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(json) => SimulatorConfig::from_json(json)?,
        None => SimulatorConfig::default_three(args.base_port),
    };
    let simulator = liquidity_sources::bind(&config)
        .await
        .context("cannot start the source simulator")?;
    for (source, addr) in simulator.addresses() {
        tracing::info!(source, %addr, "source simulator listening");
    }
    tracing::info!(sources_config = %simulator.sources_config_json(), seed = config.seed, "SOURCES_CONFIG for the workers");
    let shutdown = super::shutdown_token();
    simulator
        .run_until_stopped(shutdown.cancelled_owned())
        .await
        .context("source simulator failed")?;
    tracing::info!("source simulator stopped");
    Ok(())
}
