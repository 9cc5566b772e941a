//! `sqlx::migrate!` embeds the migrations at compile time but cannot tell cargo about a new
//! file in their directories on stable Rust: without this, adding a migration leaves a stale
//! binary that never applies it (what `sqlx migrate build-script` generates).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
