use std::time::Duration;

use serde_json::json;

use crate::world::{Options, World};

fn slow_sources() -> Options {
    // Slow enough that the faults below hit while workflows are polling.
    let slow = json!({ "completeAfter": "8s" });
    Options {
        simulator: json!({ "source_1": slow, "source_2": slow, "source_3": slow }),
        ..Options::default()
    }
}

#[tokio::test]
async fn killing_the_cdc_and_workflow_workers_mid_flight_still_completes_every_report() {
    // Arrange: reports in flight
    let mut world = World::start(slow_sources()).await;
    let token = world.user(0).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(world.start_report(&token).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let the workflows start polling

    // Act: kill -9 both workers, start more reports while they are down, then restart them
    world.kill("cdc-worker");
    world.kill("workflow-worker");
    for _ in 0..2 {
        ids.push(world.start_report(&token).await);
    }
    world.restart("cdc-worker").await;
    world.restart("workflow-worker").await;

    // Assert
    for id in &ids {
        assert_eq!(
            world.wait_final(&token, id, Duration::from_secs(150)).await,
            "completed",
            "report {id}"
        );
    }
}

#[tokio::test]
async fn restarting_the_pubsub_emulator_mid_flight_still_completes_every_report() {
    // Arrange: reports in flight
    let mut world = World::start(slow_sources()).await;
    let token = world.user(2).await;
    let mut ids = vec![world.start_report(&token).await, world.start_report(&token).await];
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Act: the emulator dies (forgetting topics, subscriptions and undelivered messages), reports
    // are started while it is down, and it comes back empty
    world.kill("pubsub");
    ids.push(world.start_report(&token).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.restart("pubsub").await;

    // Assert: the reconciler recovers what the lost messages would have done
    for id in &ids {
        assert_eq!(
            world.wait_final(&token, id, Duration::from_secs(150)).await,
            "completed",
            "report {id}"
        );
    }
}
