//! `liquidity pubsub-setup`: the topics and subscriptions of the CDC path, created where missing.
//! The scripts (after every emulator start), the tests and a production release job call it; the
//! CDC worker calls the same code when `PUBSUB_AUTO_CREATE` is on.

use liquidity_cdc::pubsub;

use super::cdc_worker::PubSubArgs;

pub async fn run(args: PubSubArgs) -> anyhow::Result<()> {
    let settings = args.settings();
    pubsub::ensure_topology(&settings).await?;
    tracing::info!(
        project = %settings.project,
        topic = %settings.topic,
        subscription = %settings.subscription,
        dead_letter_topic = %settings.dead_letter_topic,
        "pub/sub topology ready"
    );
    Ok(())
}
