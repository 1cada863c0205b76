//! `cargo xtask bench hooks`: SRS `on_publish` decisions per second and p99 latency through rtcplane's hook
//! gateway, for a static rule, a token check and a database stream-key lookup, side by side in one run with
//! a bare axum handler that always answers `0` (the ceiling: what any HTTP hook server on this machine can
//! do). The goal (issue 7) is at least half the ceiling's rate for the static rule and the token check.
//!
//! Each variant gets the same closed-loop load: `CONNECTIONS` keep-alive connections posting the same SRS
//! payload for `SECONDS` seconds. Rounds alternate the order; the table shows medians.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::bench_events::{Client, med, percentile};

const CONNECTIONS: usize = 8;
const SECONDS: u64 = 4;
const RTCPLANE_PORT: u16 = 23_495;
const CEILING_PORT: u16 = 23_496;
const TOKEN_KEY: &str = "bench-token-key-0123456789";
const STREAM_KEY: &str = "bench-stream-key-0123456789";

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The ceiling server: `POST /hooks/srs` answers `0`, nothing else (run by `cargo xtask __ceiling PORT`).
pub(crate) fn ceiling_server(port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/hooks/srs",
            axum::routing::post(|_body: axum::body::Bytes| async { "0" }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

fn body(app: &str, stream: &str, param: &str) -> String {
    format!(
        r#"{{"server_id":"vid-bench","service_id":"bench","action":"on_publish","client_id":"c1","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"{app}","tcUrl":"rtmp://127.0.0.1:1935/{app}","stream":"{stream}","param":"{param}","stream_url":"/{app}/{stream}","stream_id":"vid-1"}}"#
    )
}

/// Closed-loop load on `port` for `SECONDS`; every answer must be HTTP 200 with body `0`.
fn load(port: u16, payload: &str) -> anyhow::Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let stop = stop.clone();
            let payload = payload.to_owned();
            std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
                let mut c = Client::connect(port)?;
                let mut lat = Vec::with_capacity(100_000);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let status = c.post("/hooks/srs", &payload)?;
                    lat.push(t.elapsed().as_nanos() as u64);
                    if status != 200 {
                        bail!("HTTP {status}");
                    }
                }
                Ok(lat)
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(SECONDS));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??,
        );
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Sample {
        rps: all.len() as f64 / secs,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    })
}

/// Checks that `payload` is allowed (body `0`) before measuring it: a bench of denials would be meaningless.
fn check_allowed(port: u16, payload: &str) -> anyhow::Result<()> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    use std::io::{Read, Write};
    write!(
        s,
        "POST /hooks/srs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.1 200") || !text.ends_with("\r\n\r\n0") {
        bail!("the bench request is not allowed: {text}");
    }
    Ok(())
}

fn wait_port(port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("server exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn hooks(root: &Path, rounds: u32) -> anyhow::Result<()> {
    crate::step(
        root,
        "build rtcplane (release)",
        "cargo",
        &["build", "--release", "--locked", "-p", "rtcplane"],
    )?;
    let bin = root.join("target/release/rtcplane");
    let dir = std::env::temp_dir().join(format!("rtcplane-bench-hooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("rtcplane.toml");
    std::fs::write(
        &config,
        format!(
            "[[hooks.rules]]\nname = \"static\"\napps = [\"static\"]\nthen = \"allow\"\n\n\
             [[hooks.rules]]\nname = \"token\"\napps = [\"secure\"]\nthen = \"token\"\ntoken_keys = [\"{TOKEN_KEY}\"]\n\n\
             [[hooks.rules]]\nname = \"key\"\napps = [\"keyed\"]\nthen = \"stream_key\"\n"
        ),
    )?;
    let status = Command::new(&bin)
        .args([
            "hooks", "key", "add", "--app", "keyed", "--stream", "public", "--key", STREAM_KEY,
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("rtcplane hooks key add failed");
    }
    let expires = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 24 * 3600;
    let token = {
        let out = Command::new(&bin)
            .args([
                "hooks", "token", "--app", "secure", "--stream", "cam", "--ttl", "24h", "--config",
            ])
            .arg(&config)
            .current_dir(&dir)
            .output()?;
        String::from_utf8(out.stdout)?.trim().to_owned()
    };
    let _ = expires;
    let variants: [(&str, u16, String); 4] = [
        (
            "bare axum handler (ceiling)",
            CEILING_PORT,
            body("static", "cam", ""),
        ),
        ("static rule", RTCPLANE_PORT, body("static", "cam", "")),
        (
            "token check",
            RTCPLANE_PORT,
            body("secure", "cam", &format!("?{token}")),
        ),
        (
            "stream key in the database",
            RTCPLANE_PORT,
            body("keyed", STREAM_KEY, ""),
        ),
    ];
    let mut ceiling = Command::new(std::env::current_exe()?)
        .args(["__ceiling", &CEILING_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("ceiling server")?;
    let mut server = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env("RTCPLANE__LOG__LEVEL", "warn")
        .env(
            "RTCPLANE__HTTP__PUBLIC_LISTEN",
            format!("127.0.0.1:{RTCPLANE_PORT}"),
        )
        .env("RTCPLANE__HTTP__ADMIN_LISTEN", "127.0.0.1:0")
        .env("RTCPLANE__TURN__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("rtcplane")?;
    let result = (|| -> anyhow::Result<Vec<Vec<Sample>>> {
        wait_port(CEILING_PORT, &mut ceiling)?;
        wait_port(RTCPLANE_PORT, &mut server)?;
        let mut samples = vec![Vec::new(); variants.len()];
        for (_, port, payload) in &variants {
            check_allowed(*port, payload)?;
            load(*port, payload)?; // warm-up
        }
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (name, port, payload) = &variants[i];
                let s = load(*port, payload)?;
                eprintln!(
                    "    round {round} {name:<28} {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms",
                    s.rps, s.p50_ms, s.p99_ms
                );
                samples[i].push(s);
            }
        }
        Ok(samples)
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let samples = result?;
    let ceiling_rps = med(samples[0].iter().map(|s| s.rps).collect());
    let mut out = format!(
        "\nSRS on_publish decisions: {CONNECTIONS} keep-alive connections, closed loop, {SECONDS} s per variant, medians of {rounds} rounds\n\n\
         | variant | decisions/s | vs ceiling | p50 | p99 |\n|---|---|---|---|---|\n"
    );
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let rps = med(samples[i].iter().map(|s| s.rps).collect());
        out.push_str(&format!(
            "| {name} | {rps:.0} | {:.2} | {:.3} ms | {:.3} ms |\n",
            rps / ceiling_rps,
            med(samples[i].iter().map(|s| s.p50_ms).collect()),
            med(samples[i].iter().map(|s| s.p99_ms).collect()),
        ));
    }
    eprintln!("{out}");
    Ok(())
}
