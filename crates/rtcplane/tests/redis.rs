//! Redis: the bus across two rtcplane processes, and Redis lost and found while serving.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::{PrivateRedis, Server, SseReader, redis_url};

fn unique_channel() -> String {
    format!(
        "rtcplane:test:{}:{}",
        std::process::id(),
        support::free_port()
    )
}

#[tokio::test]
async fn bus_carries_events_between_two_processes() -> anyhow::Result<()> {
    let channel = unique_channel();
    let node = |name: &str| {
        Server::builder()
            .env("RTCPLANE__NODE_ID", name)
            .env("RTCPLANE__REDIS__URL", redis_url())
            .env("RTCPLANE__BUS__BACKEND", "redis")
            .env("RTCPLANE__BUS__CHANNEL", channel.clone())
            .env("RTCPLANE__BUS__PING_INTERVAL", "200ms")
    };
    let a = node("node-a").start().await?;
    let ready = a.wait_ready_status(200, Duration::from_secs(10)).await?;
    assert_eq!(ready["checks"]["bus"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["redis"]["ok"], true, "{ready}");
    let mut events = SseReader::connect(&a.admin_url("/api/v1/events?types=cluster.*")).await?;

    let mut b = node("node-b").start().await?;
    let started = events
        .next_of("cluster.node.started", Duration::from_secs(10))
        .await?;
    assert_eq!(started["node"], "node-b", "{started}");
    assert_eq!(started["source"], "/rtcplane/node-b/cluster");
    assert_eq!(started["data"]["admin_listen"], b.admin.to_string());

    b.terminate(Duration::from_secs(10)).await?;
    let stopped = events
        .next_of("cluster.node.stopped", Duration::from_secs(10))
        .await?;
    assert_eq!(stopped["node"], "node-b", "{stopped}");
    Ok(())
}

#[tokio::test]
async fn redis_lost_while_serving_turns_readyz_503_and_recovers() -> anyhow::Result<()> {
    let port = support::free_port();
    let redis = PrivateRedis::start_on(port)?;
    let mut server = Server::builder()
        .env("RTCPLANE__REDIS__URL", redis.url())
        .env("RTCPLANE__BUS__BACKEND", "redis")
        .env("RTCPLANE__BUS__PING_INTERVAL", "200ms")
        .env("RTCPLANE__REDIS__TIMEOUT", "300ms")
        .start()
        .await?;
    server
        .wait_ready_status(200, Duration::from_secs(10))
        .await?;

    drop(redis);
    let down = server
        .wait_down(&["redis", "bus"], Duration::from_secs(15))
        .await?;
    assert_eq!(down["status"], "unavailable");
    assert_eq!(down["checks"]["storage"]["ok"], true, "{down}");
    assert!(server.alive());
    assert_eq!(
        support::get(server.admin_url("/healthz")).await?.status(),
        200
    );

    let _redis = PrivateRedis::start_on(port)?;
    server
        .wait_ready_status(200, Duration::from_secs(30))
        .await?;
    assert!(server.alive());
    Ok(())
}
