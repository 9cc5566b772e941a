//! `auth`: register and login latency under a closed loop of clients.

use std::time::Instant;

use serde_json::json;

use crate::stats::*;
use crate::world::{Options, World};

/// A login of `username` from client address `client` (through the harness's trusted proxy).
pub async fn login(http: &reqwest::Client, api: &str, username: &str, client: &str) -> reqwest::Response {
    http.post(format!("{api}/graphql"))
        .json(&json!({
            "query": "mutation($input: LoginInput!) { login(input: $input) { token } }",
            "variables": { "input": { "username": username, "password": "correct-horse-battery" } },
        }))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
}

/// register and login latency under a closed-loop load of `CONCURRENCY` clients, each request
/// from a client address of its own (the per-IP limits do not apply to a crowd).
pub async fn run() {
    const CONCURRENCY: usize = 8;
    const REGISTERS: usize = 200;
    const LOGINS: usize = 400;
    let world = World::start(Options::default()).await;
    let tenant = world.dbs.tenants[0].id;

    let register = |i: usize| {
        let world = &world;
        async move {
            let started = Instant::now();
            let body = world
                .graphql_request(
                    "mutation($input: RegisterInput!) { register(input: $input) { token } }",
                    json!({ "input": { "tenantId": tenant, "username": format!("bench-{i}"),
                                       "password": "correct-horse-battery", "taxId": "TAX-1" } }),
                    None,
                )
                .header("x-forwarded-for", world.client_address())
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap();
            assert!(body["data"]["register"]["token"].is_string(), "{body}");
            started.elapsed()
        }
    };
    let (elapsed, latencies) = closed_loop(REGISTERS, CONCURRENCY, register).await;
    report("register", &latencies, elapsed);

    let login = |i: usize| {
        let world = &world;
        async move {
            let started = Instant::now();
            let body = login(
                &world.http,
                &world.api,
                &format!("bench-{}", i % REGISTERS),
                &world.client_address(),
            )
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap();
            assert!(body["data"]["login"]["token"].is_string(), "{body}");
            started.elapsed()
        }
    };
    let (elapsed, latencies) = closed_loop(LOGINS, CONCURRENCY, login).await;
    report("login", &latencies, elapsed);
}
