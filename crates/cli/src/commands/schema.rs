//! `liquidity schema`: the SDL on stdout.

pub fn run() -> anyhow::Result<()> {
    print!("{}", liquidity_api::schema_sdl());
    Ok(())
}
