//! Readiness under faults: a worker whose dependency is down stays alive, answers `/readyz` with
//! 503 naming that dependency, and is ready again once it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use liquidity_test_support::wait_until;
use serde_json::Value;

use super::stack;
use crate::operations::readyz;
use crate::world::{Options, World};

/// Waits until `role`'s `/readyz` answers `status`, and returns its body.
async fn wait_ready_status(world: &World, role: &str, status: u16) -> Value {
    let what = format!("{role} /readyz to answer {status}");
    wait_until(Duration::from_secs(90), &what, || async {
        readyz(world, role).await.0 == status
    })
    .await;
    readyz(world, role).await.1
}

async fn healthz(world: &World, role: &str) -> u16 {
    world
        .http
        .get(world.ops_url(role, "/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn readiness_names_the_dependency_that_is_down_and_recovers_with_it() {
    // Arrange
    let mut world = World::start(Options::default()).await;
    wait_ready_status(&world, "cdc-worker", 200).await;
    wait_ready_status(&world, "workflow-worker", 200).await;

    // Act: the world's Pub/Sub emulator dies
    world.kill("pubsub");
    let pubsub_down = wait_ready_status(&world, "cdc-worker", 503).await;
    let cdc_alive = healthz(&world, "cdc-worker").await;
    world.restart("pubsub").await;
    // Ready again once the CDC worker has re-created its subscription on the fresh emulator.
    wait_ready_status(&world, "cdc-worker", 200).await;

    // Act: Temporal is killed and restarted by the supervisor, while both workers are probed
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(&str, Value)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let world = Arc::new(world);
    let prober = tokio::spawn({
        let (world, seen, done) = (world.clone(), seen.clone(), done.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                for role in ["cdc-worker", "workflow-worker"] {
                    let (status, body) = readyz(&world, role).await;
                    if status == 503 {
                        seen.lock().unwrap().push((role, body));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    tokio::task::spawn_blocking(|| stack(&["kill", "temporal"]))
        .await
        .unwrap();
    wait_ready_status(&world, "cdc-worker", 200).await;
    wait_ready_status(&world, "workflow-worker", 200).await;
    done.store(true, Ordering::Relaxed);
    prober.await.unwrap();

    // Assert
    assert_eq!(pubsub_down["failing"], serde_json::json!(["pubsub"]), "{pubsub_down}");
    assert_eq!(pubsub_down["checks"]["temporal"], "ok", "{pubsub_down}");
    assert_eq!(cdc_alive, 200, "a worker whose dependency is down is still alive");
    let seen = seen.lock().unwrap();
    for role in ["cdc-worker", "workflow-worker"] {
        let temporal_down = seen
            .iter()
            .find(|(r, body)| *r == role && body["failing"] == serde_json::json!(["temporal"]));
        assert!(temporal_down.is_some(), "{role} never said temporal was down: {seen:?}");
    }
}
