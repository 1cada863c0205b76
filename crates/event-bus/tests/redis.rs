//! The Redis backend against real Redis servers: two bus instances in two processes, and a private
//! `redis-server` that is stopped and restarted under a live bus.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rtcplane_event_bus::{Backend, Bus, BusConfig, TypeFilter};
use rtcplane_storage::testing::{PrivateRedis, redis_url};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "RTCPLANE_BUS_TEST_CHILD_CHANNEL";

fn redis_bus(node: &str, url: &str, channel: &str, shutdown: &CancellationToken) -> Bus {
    Bus::start(
        BusConfig {
            node: node.into(),
            capacity: 1024,
            backend: Backend::Redis {
                url: url.into(),
                channel: channel.into(),
                timeout: Duration::from_millis(500),
                ping_interval: Duration::from_millis(200),
            },
        },
        shutdown.clone(),
    )
    .expect("bus starts")
}

async fn wait_connected(bus: &Bus, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while !bus.health().connected {
        if tokio::time::Instant::now() > deadline {
            bail!("bus not connected to Redis: {:?}", bus.health());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Not a test of its own: the body of the child process of `two_processes_exchange_events`, which runs this
/// test binary again with only this test selected and the channel in the environment.
#[tokio::test]
async fn child_process_entry() -> anyhow::Result<()> {
    let Ok(channel) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let shutdown = CancellationToken::new();
    let bus = redis_bus("child", &redis_url(), &channel, &shutdown);
    let mut sub = bus.subscribe(TypeFilter::parse("test.ping")?);
    wait_connected(&bus, Duration::from_secs(10)).await?;
    let mut out = std::io::stdout();
    writeln!(out, "READY")?;
    out.flush()?;
    let ping = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .context("no ping from the parent")?
        .context("bus closed")?;
    bus.publisher("test")
        .publish("test.pong", ping.subject.clone(), json!({"from": "child"}))?;
    // Let the publisher task hand the pong to Redis before the process exits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn two_processes_exchange_events() -> anyhow::Result<()> {
    let channel = format!("rtcplane:test:{}", uuid_like());
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &channel)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the child process")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("READY")
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(());
            }
        }
    });

    let shutdown = CancellationToken::new();
    let bus = redis_bus("parent", &redis_url(), &channel, &shutdown);
    let mut everything = bus.subscribe(TypeFilter::all());
    wait_connected(&bus, Duration::from_secs(10)).await?;
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .context("child never became ready")??;

    bus.publisher("test")
        .publish("test.ping", Some("42".into()), json!({"from": "parent"}))?;

    // Locally: our own ping exactly once (not echoed back from Redis), then the child's pong.
    let first = tokio::time::timeout(Duration::from_secs(10), everything.recv())
        .await?
        .context("closed")?;
    assert_eq!(first.ty, "test.ping");
    assert_eq!(first.node, "parent");
    let second = tokio::time::timeout(Duration::from_secs(10), everything.recv())
        .await
        .context("no pong from the child process")?
        .context("closed")?;
    assert_eq!(second.ty, "test.pong");
    assert_eq!(second.node, "child");
    assert_eq!(second.source, "/rtcplane/child/test");
    assert_eq!(second.subject.as_deref(), Some("42"));
    assert_eq!(everything.take_lost(), 0);

    let status = wait_child(&mut child, Duration::from_secs(10))?;
    assert!(status.success(), "child failed: {status}");
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn survives_redis_restart_and_resubscribes() -> anyhow::Result<()> {
    let port = free_port()?;
    let mut server = PrivateRedis::start_on(port)?;
    let url = format!("redis://127.0.0.1:{port}");
    let channel = "rtcplane:test:restart";
    let shutdown = CancellationToken::new();
    let a = redis_bus("a", &url, channel, &shutdown);
    let b = redis_bus("b", &url, channel, &shutdown);
    let mut on_b = b.subscribe(TypeFilter::all());
    wait_connected(&a, Duration::from_secs(10)).await?;
    wait_connected(&b, Duration::from_secs(10)).await?;

    a.publisher("test").publish("test.before", None, json!(1))?;
    let got = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
        .await?
        .context("closed")?;
    assert_eq!(got.ty, "test.before");

    server.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.health().connected || b.health().connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "link never noticed Redis was gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.health().error.is_some());
    // Local delivery keeps working while Redis is down.
    let mut on_a = a.subscribe(TypeFilter::all());
    a.publisher("test").publish("test.during", None, json!(2))?;
    assert_eq!(on_a.recv().await.context("closed")?.ty, "test.during");

    let _server = PrivateRedis::start_on(port)?;
    wait_connected(&a, Duration::from_secs(20)).await?;
    wait_connected(&b, Duration::from_secs(20)).await?;
    // The subscription came back by itself: a fresh event crosses again (retry briefly, since the link may
    // report up a moment before the resubscription lands).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        a.publisher("test").publish("test.after", None, json!(3))?;
        match tokio::time::timeout(Duration::from_millis(300), on_b.recv()).await {
            Ok(Some(e)) if e.ty == "test.after" => break,
            // A publish attempted while Redis was down may be delivered late, once the manager reconnects.
            Ok(Some(e)) if e.ty == "test.during" => continue,
            Ok(Some(e)) => bail!("unexpected event {}", e.ty),
            Ok(None) => bail!("bus closed"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => bail!("events did not resume after Redis came back"),
        }
    }
    shutdown.cancel();
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn wait_child(child: &mut Child, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("child process did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
