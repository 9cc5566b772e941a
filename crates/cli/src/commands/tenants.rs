//! `liquidity tenants`: the registry as a table, with a reachability check per database.

use std::time::Duration;

use crate::args::TenancyArgs;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(args: TenancyArgs) -> anyhow::Result<()> {
    let registry = args.registry()?;
    println!("{:<36}  {:<12}  {:<32}  REACHABLE", "ID", "NAME", "DATABASE");
    let mut unreachable = 0;
    for tenant in registry.tenants() {
        let probe = async {
            let pool = registry.pool(tenant.id).await.map_err(anyhow::Error::from)?;
            sqlx::query("SELECT 1").execute(pool).await?;
            anyhow::Ok(())
        };
        let reachable = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(())) => "yes".to_owned(),
            Ok(Err(e)) => format!("no ({})", e.root_cause()),
            Err(_) => format!("no (timeout after {PROBE_TIMEOUT:?})"),
        };
        if !reachable.starts_with("yes") {
            unreachable += 1;
        }
        println!(
            "{:<36}  {:<12}  {:<32}  {reachable}",
            tenant.id,
            tenant.name,
            tenant.database()
        );
    }
    registry.close().await;
    anyhow::ensure!(unreachable == 0, "{unreachable} tenant database(s) unreachable");
    Ok(())
}
