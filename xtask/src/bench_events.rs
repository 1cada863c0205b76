//! `cargo xtask bench events`: events end to end — published on the admin API, stored in the event log and
//! the webhook outbox, delivered signed to a local HTTP receiver — on SQLite and PostgreSQL.
//!
//! Per round and backend: a throughput phase (N events published as fast as 8 keep-alive connections can,
//! timed from the first publish to the last delivery) and a latency phase (events paced at a fixed rate, the
//! receiver timing publish → delivery from a timestamp the event carries). The ceiling is the same receiver
//! fed directly by the same 8 connections, without rtcplane. Also the server's CPU seconds per 1000 events
//! and peak RSS. Rounds alternate the order of the backends; the table shows medians.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

const THROUGHPUT_EVENTS: u64 = 4000;
const PUBLISHERS: u64 = 8;
const PACED_RATE: u64 = 100;
const PACED_SECONDS: u64 = 4;
const ADMIN_PORT: u16 = 23_490;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    eps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_per_1k: f64,
    rss_mb: f64,
    retries: f64,
}

/// The receiver: counts deliveries and keeps publish→delivery latencies.
struct Receiver {
    port: u16,
    count: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Receiver {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let count = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, l, s) = (count.clone(), latencies.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (c, l) = (c.clone(), l.clone());
                std::thread::spawn(move || serve_conn(conn, &c, &l));
            }
        });
        Ok(Self {
            port,
            count,
            latencies,
            stop,
        })
    }

    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        if let Ok(mut l) = self.latencies.lock() {
            l.clear();
        }
    }

    fn wait_for(&self, n: u64, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        while self.count.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                bail!(
                    "the receiver got {} of {n} events within {within:?}",
                    self.count.load(Ordering::SeqCst)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Instant::now())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Minimal HTTP/1.1 keep-alive server loop: read a request with a Content-Length body, answer 200.
fn serve_conn(conn: TcpStream, count: &AtomicU64, latencies: &Mutex<Vec<u64>>) {
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(conn);
    loop {
        let Some(body) = read_request(&mut reader) else {
            return;
        };
        if let Some(t) = field_u64(&body, "\"t\":") {
            let lat = now_ns().saturating_sub(t);
            if let Ok(mut l) = latencies.lock() {
                l.push(lat);
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            if first {
                continue;
            }
            break;
        }
        first = false;
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

fn field_u64(body: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One keep-alive client connection that POSTs JSON and reads the answer.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Client {
    pub(crate) fn connect(port: u16) -> anyhow::Result<Self> {
        let conn = TcpStream::connect(("127.0.0.1", port))?;
        conn.set_nodelay(true)?;
        Ok(Self {
            writer: conn.try_clone()?,
            reader: BufReader::new(conn),
            host: format!("127.0.0.1:{port}"),
        })
    }

    pub(crate) fn post(&mut self, path: &str, body: &str) -> anyhow::Result<u16> {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut sink = vec![0; length];
        self.reader.read_exact(&mut sink)?;
        Ok(status)
    }
}

fn event_body(i: u64) -> String {
    format!(
        r#"{{"type":"custom.bench","subject":"s{}","data":{{"t":{},"i":{i},"pad":"0123456789abcdef0123456789abcdef"}}}}"#,
        i % 256,
        now_ns()
    )
}

/// Publishes `n` events from `PUBLISHERS` connections to `port` at `path`, as fast as possible.
fn blast(port: u16, path: &'static str, n: u64) -> anyhow::Result<()> {
    let handles: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut c = Client::connect(port)?;
                let mut i = p;
                while i < n {
                    let status = c.post(path, &event_body(i))?;
                    if !(200..300).contains(&status) {
                        bail!("POST {path}: HTTP {status}");
                    }
                    i += PUBLISHERS;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("publisher panicked"))??;
    }
    Ok(())
}

/// The median of a set of round results.
pub(crate) fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1e6
}

pub(crate) fn events(root: &Path, rounds: u32) -> anyhow::Result<()> {
    crate::services::ensure()?;
    crate::step(
        root,
        "build rtcplane (release)",
        "cargo",
        &["build", "--release", "--locked", "-p", "rtcplane"],
    )?;
    let bin = root.join("target/release/rtcplane");
    let receiver = Receiver::start()?;
    let backends = ["sqlite", "postgres"];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); backends.len()];
    let mut ceiling = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..backends.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        // The ceiling: the receiver fed directly.
        receiver.reset();
        let start = Instant::now();
        blast(receiver.port, "/hook", THROUGHPUT_EVENTS)?;
        let end = receiver.wait_for(THROUGHPUT_EVENTS, Duration::from_secs(60))?;
        let eps = THROUGHPUT_EVENTS as f64 / end.duration_since(start).as_secs_f64();
        eprintln!("    round {round} direct       {eps:>8.0} ev/s");
        ceiling.push(eps);
        for i in order {
            let s = run(&bin, backends[i], &receiver)?;
            eprintln!(
                "    round {round} {:<12} {:>8.0} ev/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>6.3} s/1k ev  rss {:>6.1} MB  retries {}",
                backends[i], s.eps, s.p50_ms, s.p99_ms, s.cpu_per_1k, s.rss_mb, s.retries
            );
            samples[i].push(s);
        }
    }
    let ceiling = med(ceiling);
    let mut out = format!(
        "\nevents end to end: publish (POST /api/v1/events, {PUBLISHERS} connections) -> stored log + outbox -> signed webhook -> local receiver\n\
         medians of {rounds} rounds; throughput over {THROUGHPUT_EVENTS} events; latency at {PACED_RATE} ev/s for {PACED_SECONDS} s\n\n\
         | path | events/s | vs direct | p50 latency | p99 latency | server CPU per 1000 events | peak RSS |\n|---|---|---|---|---|---|---|\n\
         | direct to receiver (ceiling) | {ceiling:.0} | 1.00 | | | | |\n"
    );
    for (i, b) in backends.iter().enumerate() {
        let s = &samples[i];
        let eps = med(s.iter().map(|x| x.eps).collect());
        out.push_str(&format!(
            "| rtcplane on {b} | {eps:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.3} s | {:.1} MB |\n",
            eps / ceiling,
            med(s.iter().map(|x| x.p50_ms).collect()),
            med(s.iter().map(|x| x.p99_ms).collect()),
            med(s.iter().map(|x| x.cpu_per_1k).collect()),
            med(s.iter().map(|x| x.rss_mb).collect()),
        ));
    }
    eprintln!("{out}");
    Ok(())
}

fn run(bin: &Path, backend: &str, receiver: &Receiver) -> anyhow::Result<Sample> {
    let dir = std::env::temp_dir().join(format!("rtcplane-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = format!("rtcplane_bench_{}", std::process::id());
    let url = match backend {
        "sqlite" => format!("sqlite:{}", dir.join("bench.db").display()),
        _ => {
            psql(&format!("DROP DATABASE IF EXISTS {db}"))?;
            psql(&format!("CREATE DATABASE {db}"))?;
            format!("postgres://postgres@127.0.0.1:5432/{db}")
        }
    };
    let config = dir.join("rtcplane.toml");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nmax_in_flight = 16\n\n[[webhooks.endpoints]]\nid = \"bench\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"{SECRET}\"\nevents = [\"custom.*\"]\n",
            receiver.port
        ),
    )?;
    let mut server = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env("RTCPLANE__LOG__LEVEL", "warn")
        .env(
            "RTCPLANE__HTTP__ADMIN_LISTEN",
            format!("127.0.0.1:{ADMIN_PORT}"),
        )
        .env("RTCPLANE__HTTP__PUBLIC_LISTEN", "127.0.0.1:0")
        .env("RTCPLANE__STORAGE__URL", &url)
        .env("RTCPLANE__TURN__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start rtcplane")?;
    let result = measure(&mut server, receiver);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if backend == "postgres" {
        let _ = psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
    result
}

fn measure(server: &mut Child, receiver: &Receiver) -> anyhow::Result<Sample> {
    let pid = server.id();
    wait_ready(server)?;
    // Warm up (connections, prepared statements), then measure from a clean count.
    receiver.reset();
    blast(ADMIN_PORT, "/api/v1/events", 200)?;
    std::thread::sleep(Duration::from_millis(100));
    receiver.wait_for(200, Duration::from_secs(30))?;
    receiver.reset();
    let cpu0 = crate::bench::cpu_seconds(pid)?;

    let start = Instant::now();
    blast(ADMIN_PORT, "/api/v1/events", THROUGHPUT_EVENTS)?;
    let end = receiver.wait_for(THROUGHPUT_EVENTS, Duration::from_secs(120))?;
    let eps = THROUGHPUT_EVENTS as f64 / end.duration_since(start).as_secs_f64();
    let cpu = crate::bench::cpu_seconds(pid)? - cpu0;

    receiver.reset();
    let mut c = Client::connect(ADMIN_PORT)?;
    let n = PACED_RATE * PACED_SECONDS;
    let gap = Duration::from_nanos(1_000_000_000 / PACED_RATE);
    let t0 = Instant::now();
    for i in 0..n {
        let due = t0 + gap * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        c.post("/api/v1/events", &event_body(i))?;
    }
    receiver.wait_for(n, Duration::from_secs(60))?;
    let mut lat = receiver
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    lat.sort_unstable();
    let metrics = crate::http_get(ADMIN_PORT, "/metrics")?;
    let retries = metrics
        .lines()
        .find(|l| l.starts_with("rtcplane_webhook_deliveries_total{result=\"retry\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Sample {
        retries,
        eps,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        cpu_per_1k: cpu / THROUGHPUT_EVENTS as f64 * 1000.0,
        rss_mb: crate::bench::peak_rss_mb(pid)?,
    })
}

fn wait_ready(server: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.try_wait()? {
            bail!("rtcplane exited with {status} before it was ready");
        }
        if crate::http_get(ADMIN_PORT, "/readyz").is_ok_and(|text| text.starts_with("HTTP/1.1 200"))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("rtcplane was not ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn psql(sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-qc",
            sql,
        ])
        .output()
        .context("psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
