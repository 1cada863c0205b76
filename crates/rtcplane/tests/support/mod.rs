//! Test fixtures: the real `rtcplane` binary in a temp dir, an SSE reader, a TCP proxy that can cut a link,
//! a private `redis-server`, and a look at a process's sockets. Every child process is owned by a value that
//! kills it on drop, so a failing test leaves nothing running.

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_rtcplane");

/// The shared fixtures directory: `../shared/fixtures` (the team's read-only fixtures), or `$RTCPLANE_FIXTURES`.
pub fn fixtures() -> PathBuf {
    if let Some(dir) = std::env::var_os("RTCPLANE_FIXTURES") {
        return PathBuf::from(dir);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for candidate in [
        repo.join("../shared/fixtures"),
        PathBuf::from("/work/shared/fixtures"),
    ] {
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!("the shared fixtures are not found: set RTCPLANE_FIXTURES to the fixtures directory");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP client for tests. reqwest is built with rustls and no bundled crypto provider (the binary installs
/// ring, the workspace's one), so the test process installs it too before the first client.
pub fn client() -> reqwest::Client {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}

/// `GET url` with [`client`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}

#[allow(unused_imports)] // used by some of the test crates that include this module
pub use rtcplane_storage::testing::{PrivateRedis, redis_url};

/// Runs `rtcplane <args>` to completion in `dir` with extra environment.
pub fn run(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rtcplane")
}

/// A running `rtcplane serve`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub public: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

pub struct ServerBuilder {
    toml: String,
    env: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

impl ServerBuilder {
    /// Extra config file content (the listeners are always set to free ports through the environment).
    pub fn config(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn storage(self, url: &str) -> Self {
        self.env("RTCPLANE__STORAGE__URL", url)
    }

    /// Starts it and waits for `/healthz`.
    pub async fn start(self) -> anyhow::Result<Server> {
        let mut server = self.spawn()?;
        server.wait_healthy(Duration::from_secs(30)).await?;
        Ok(server)
    }

    /// Starts it without waiting.
    pub fn spawn(self) -> anyhow::Result<Server> {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir()?,
        };
        // A test may set a listener itself; otherwise each gets a free port.
        let given = |key: &str| {
            self.env
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse().ok())
        };
        let admin: SocketAddr = match given("RTCPLANE__HTTP__ADMIN_LISTEN") {
            Some(a) => a,
            None => format!("127.0.0.1:{}", free_port()).parse()?,
        };
        let public: SocketAddr = match given("RTCPLANE__HTTP__PUBLIC_LISTEN") {
            Some(a) => a,
            None => format!("127.0.0.1:{}", free_port()).parse()?,
        };
        let log = dir.path().join("rtcplane.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env("RTCPLANE__HTTP__ADMIN_LISTEN", admin.to_string())
            .env("RTCPLANE__HTTP__PUBLIC_LISTEN", public.to_string())
            .env("RTCPLANE__STORAGE__HEARTBEAT_INTERVAL", "1s")
            .env("RTCPLANE__LOG__LEVEL", "info,rtcplane=debug")
            // TURN would bind 0.0.0.0:3478 in every test process; tests that relay enable it on free ports.
            .env("RTCPLANE__TURN__ENABLED", "false")
            // The SIP agent would bind 0.0.0.0:5060; with no accounts it only needs a port of its own.
            .env("RTCPLANE__SIP_AGENT__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        if !self.toml.is_empty() {
            let file = dir.path().join("rtcplane.toml");
            std::fs::write(&file, &self.toml)?;
            cmd.arg("--config").arg(&file);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning rtcplane serve")?;
        Ok(Server {
            dir,
            admin,
            public,
            child: Some(child),
            log,
        })
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            toml: String::new(),
            env: Vec::new(),
            dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let url = self.admin_url("/healthz");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "rtcplane exited with {status} before it was healthy:\n{}",
                    self.log()
                );
            }
            if let Ok(r) = get(&url).await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("rtcplane not healthy within {within:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/readyz` until `done(status, body)` holds; returns that body, or fails after `within` naming
    /// what was awaited (`what`) and the last answer.
    async fn poll_readyz(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = get(self.admin_url("/readyz")).await?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await?;
            if done(status, &body) {
                return Ok(body);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("/readyz never {what}: last {status} {body}\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `/readyz` until its status code is `want`; returns that body.
    pub async fn wait_ready_status(
        &self,
        want: u16,
        within: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.poll_readyz(within, &format!("answered {want}"), |status, _| {
            status == want
        })
        .await
    }

    /// Polls `/readyz` until it answers 503 with at least `names` down; returns that body.
    pub async fn wait_down(
        &self,
        names: &[&str],
        within: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.poll_readyz(
            within,
            &format!("reported {names:?} down"),
            |status, body| {
                let down: Vec<&str> = body["down"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                status == 503 && names.iter().all(|n| down.contains(n))
            },
        )
        .await
    }

    /// Sends SIGTERM and waits for the exit (at most `within`).
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("not running");
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "rtcplane did not exit within {within:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads SSE messages (`event`, `data`) from a URL.
pub struct SseReader {
    rx: tokio::sync::mpsc::Receiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl SseReader {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::from_response(get(url).await?)
    }

    /// Reads an already opened response (for requests with headers such as `Last-Event-ID`).
    pub fn from_response(resp: reqwest::Response) -> anyhow::Result<Self> {
        let url = resp.url().to_string();
        if !resp.status().is_success() {
            bail!("SSE {url}: {}", resp.status());
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !ct.starts_with("text/event-stream") {
            bail!("SSE {url}: content-type {ct}");
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut body = resp.bytes_stream();
        let task = tokio::spawn(async move {
            let mut buf = String::new();
            let (mut event, mut data) = (String::new(), String::new());
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(nl) = buf.find('\n') {
                    let line = buf[..nl].trim_end_matches('\r').to_owned();
                    buf.drain(..=nl);
                    if line.is_empty() {
                        if (!event.is_empty() || !data.is_empty())
                            && tx
                                .send((std::mem::take(&mut event), std::mem::take(&mut data)))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
            }
        });
        Ok(Self { rx, task })
    }

    /// The next message whose event name is `event`, skipping others.
    pub async fn next_of(
        &mut self,
        event: &str,
        within: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (name, data) = tokio::time::timeout(left, self.rx.recv())
                .await
                .with_context(|| format!("no `{event}` event within {within:?}"))?
                .context("event stream ended")?;
            if name == event {
                return Ok(serde_json::from_str(&data)?);
            }
        }
    }

    /// True when the server closed the stream within `within`.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP forwarder that can be cut (existing connections closed, new ones refused) and restored, to take a
/// real server away from rtcplane and give it back.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let (gen_tx, _) = tokio::sync::watch::channel(0_u64);
        let generation = Arc::new(gen_tx);
        let (up2, gen2) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            port,
            up,
            generation,
            task,
        })
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A process's listening TCP ports and bound UDP ports, from /proc (Linux).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sockets {
    pub tcp_listen: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
}

pub fn sockets_of(pid: u32) -> anyhow::Result<Sockets> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Ok(target) = std::fs::read_link(fd?.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut out = Sockets::default();
    for (file, tcp) in [
        ("tcp", true),
        ("tcp6", true),
        ("udp", false),
        ("udp6", false),
    ] {
        let mut text = String::new();
        std::fs::File::open(format!("/proc/{pid}/net/{file}"))?.read_to_string(&mut text)?;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || !inodes.contains(cols[9]) {
                continue;
            }
            let port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .unwrap_or(0);
            if tcp {
                // 0A = LISTEN
                if cols[3] == "0A" {
                    out.tcp_listen.insert(port);
                }
            } else {
                out.udp.insert(port);
            }
        }
    }
    Ok(out)
}
