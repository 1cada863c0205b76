//! `cargo xtask bench turn`: rtcplane's TURN relay against coturn's `turnserver`, same machine, same run.
//!
//! Both servers get the same long-term user, the same loopback peer (`turnutils_peer`) and the same load
//! (`turnutils_uclient`: tens of clients, a fixed message count and size), one after the other, alternating
//! over several rounds. Per round we read from the client its sent/received counts, loss, transmit time and
//! mean RTT, and from /proc the server's CPU seconds (utime + stime) and peak RSS (VmHWM). The table shows
//! medians and the rtcplane/coturn ratios; packets per CPU-second is the figure DESIGN.md targets. Two
//! comparisons: both servers at their defaults, and both on one relay thread.
//!
//! Two more figures put the ratios in proportion on a noisy machine: the range of the per-round ratios
//! (each round runs both servers back to back), and for echo loads the echo peer's own CPU seconds. The
//! peer receives and sends each echoed datagram once, so twice its CPU is roughly what the kernel alone
//! charges a relay for the same traffic (a relay receives and sends every datagram twice): no TURN server
//! can go below that floor, and the closer both servers are to it, the less room a ratio has to move.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const USER: &str = "bench";
const PASS: &str = "benchpass";
const REALM: &str = "bench.rtcplane";
/// Seconds one client run may take (`timeout`'s argument); the heaviest load takes about 10.
const UCLIENT_TIMEOUT: &str = "120";

#[derive(Clone, Copy, Debug)]
struct Load {
    /// Client to client through the relay (`-y`) instead of client to an echo peer.
    c2c: bool,
    clients: u32,
    messages: u32,
    size: u32,
    interval_ms: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Round {
    relayed: f64,
    seconds: f64,
    lost_pct: f64,
    rtt_ms: f64,
    cpu_s: f64,
    rss_mb: f64,
    /// CPU seconds of the echo peer during the load (0 for client-to-client loads).
    peer_cpu_s: f64,
}

impl Round {
    fn pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.relayed / self.seconds
        } else {
            0.0
        }
    }
    fn per_cpu(&self) -> f64 {
        if self.cpu_s > 0.0 {
            self.relayed / self.cpu_s
        } else {
            f64::INFINITY
        }
    }
}

pub(crate) fn turn(root: &Path, rounds: u32) -> anyhow::Result<()> {
    crate::services::ensure_tools()?;
    crate::step(
        root,
        "build rtcplane (release)",
        "cargo",
        &["build", "--release", "--locked", "-p", "rtcplane"],
    )?;
    let rtcplane = root.join("target/release/rtcplane");
    let light = |c2c| Load {
        c2c,
        clients: 20,
        messages: 1000,
        size: 120,
        interval_ms: 5,
    };
    // The same shapes at a rate where per-packet cost dominates (and batched receives have batches to take):
    // 50 clients, one message each every 2 ms.
    let heavy = |c2c| Load {
        c2c,
        clients: 50,
        messages: 2000,
        size: 120,
        interval_ms: 2,
    };
    let loads = [light(false), light(true), heavy(false), heavy(true)];
    let peer_port = 23_480;
    let mut peer = spawn(
        "turnutils_peer",
        &["-p", &peer_port.to_string(), "-L", "127.0.0.1"],
    )?;
    std::thread::sleep(Duration::from_millis(300));

    // Both servers at their defaults (several threads each), and both on one relay thread
    // (coturn `--relay-threads 0`, rtcplane `worker_threads = 1`).
    let variants: [(&str, Option<usize>); 4] = [
        ("coturn", None),
        ("rtcplane", None),
        ("coturn-1t", Some(0)),
        ("rtcplane-1t", Some(1)),
    ];
    let mut results: Vec<Vec<Vec<Round>>> = vec![vec![Vec::new(); variants.len()]; loads.len()];
    let result = (|| -> anyhow::Result<()> {
        for (li, &load) in loads.iter().enumerate() {
            for round in 0..rounds {
                // Alternate the order, so drift on a noisy machine hits every variant alike.
                let mut order: Vec<usize> = (0..variants.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    let (name, threads) = variants[i];
                    let run = || {
                        if name.starts_with("coturn") {
                            run_coturn(load, peer_port, peer.id(), threads)
                        } else {
                            run_rtcplane(&rtcplane, load, peer_port, peer.id(), threads)
                        }
                    };
                    // turnutils_uclient gives up on any error, and one of its own is random: it binds two
                    // random channel numbers per client (0x4000-0x7FFF), and when they collide the second bind
                    // is a conflict (400, from coturn too). One more try; a second failure ends the run.
                    let r = match run() {
                        Ok(r) => r,
                        Err(e) => {
                            eprintln!("    round {round} {name:<12} failed ({e:#}); once more");
                            run()?
                        }
                    };
                    eprintln!(
                        "    round {round} {name:<12} {:>9.0} pkt/s  loss {:>5.2}%  rtt {:>6.3} ms  cpu {:>6.3} s  rss {:>6.1} MB",
                        r.pps(),
                        r.lost_pct,
                        r.rtt_ms,
                        r.cpu_s,
                        r.rss_mb
                    );
                    results[li][i].push(r);
                }
            }
        }
        Ok(())
    })();
    let _ = peer.kill();
    let _ = peer.wait();
    result?;

    let mut out = String::new();
    for (li, &load) in loads.iter().enumerate() {
        let r = &results[li];
        for (label, c, o) in [
            ("defaults (multi-threaded)", &r[0], &r[1]),
            ("one relay thread each", &r[2], &r[3]),
        ] {
            table(&mut out, label, load, rounds, c, o);
        }
    }
    use std::io::Write as _;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

fn table(out: &mut String, label: &str, load: Load, rounds: u32, cs: &[Round], os: &[Round]) {
    let (c, o) = (median(cs), median(os));
    out.push_str(&format!(
        "\nturn relay, {}, {label}: {} clients x {} messages x {} bytes every {} ms, UDP, median of {rounds} alternating rounds\n",
        if load.c2c { "client to client (-y)" } else { "client to echo peer" },
        load.clients,
        load.messages,
        load.size,
        load.interval_ms
    ));
    out.push_str(&format!(
        "{:<22}{:>14}{:>14}{:>10}\n",
        "", "coturn", "rtcplane", "ratio"
    ));
    let row = |name: &str, a: f64, b: f64, out: &mut String| {
        let ratio = if a != 0.0 {
            format!("{:.2}", b / a)
        } else {
            "-".into()
        };
        out.push_str(&format!("{name:<22}{a:>14.3}{b:>14.3}{ratio:>10}\n"));
    };
    row("packets relayed/s", c.pps(), o.pps(), out);
    row("loss %", c.lost_pct, o.lost_pct, out);
    row("mean RTT ms", c.rtt_ms, o.rtt_ms, out);
    row("server CPU s", c.cpu_s, o.cpu_s, out);
    row("peak RSS MB", c.rss_mb, o.rss_mb, out);
    row("packets per CPU-s", c.per_cpu(), o.per_cpu(), out);
    // Per-round ratios: how far the noise reaches.
    let mut ratios: Vec<f64> = cs
        .iter()
        .zip(os)
        .filter(|(c, _)| c.per_cpu() > 0.0)
        .map(|(c, o)| o.per_cpu() / c.per_cpu())
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    if let (Some(lo), Some(hi)) = (ratios.first(), ratios.last()) {
        out.push_str(&format!(
            "{:<22}{:>38}\n",
            "  ratio, per round",
            format!("{lo:.2} to {hi:.2}")
        ));
    }
    if !load.c2c {
        row("echo peer CPU s", c.peer_cpu_s, o.peer_cpu_s, out);
        out.push_str(&format!(
            "{:<22}{:>14.3}{:>14.3}\n",
            "  server / 2x peer",
            c.cpu_s / (2.0 * c.peer_cpu_s).max(f64::MIN_POSITIVE),
            o.cpu_s / (2.0 * o.peer_cpu_s).max(f64::MIN_POSITIVE)
        ));
    }
}

fn median(rounds: &[Round]) -> Round {
    let pick = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Round {
        relayed: pick(|r| r.relayed),
        seconds: pick(|r| r.seconds),
        lost_pct: pick(|r| r.lost_pct),
        rtt_ms: pick(|r| r.rtt_ms),
        cpu_s: pick(|r| r.cpu_s),
        rss_mb: pick(|r| r.rss_mb),
        peer_cpu_s: pick(|r| r.peer_cpu_s),
    }
}

fn spawn(program: &str, args: &[&str]) -> anyhow::Result<Child> {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {program}"))
}

fn run_coturn(
    load: Load,
    peer_port: u16,
    peer_pid: u32,
    relay_threads: Option<usize>,
) -> anyhow::Result<Round> {
    let port = 23_478;
    let user = format!("{USER}:{PASS}");
    let threads = relay_threads.map(|t| t.to_string());
    let mut args: Vec<&str> = vec![
        "-n",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--lt-cred-mech",
        "--allow-loopback-peers",
        "--listening-ip",
        "127.0.0.1",
        "--listening-port",
        "23478",
        "--relay-ip",
        "127.0.0.1",
        "--min-port",
        "40000",
        "--max-port",
        "45000",
        "--user",
        &user,
        "--realm",
        REALM,
        "--no-stdout-log",
        "--log-file",
        "/dev/null",
        "--pidfile",
        "/tmp/rtcplane-bench-turnserver.pid",
    ];
    if let Some(t) = &threads {
        args.extend(["--relay-threads", t.as_str()]);
    }
    port_free(port)?;
    let server = spawn("turnserver", &args)?;
    measure(server, port, load, peer_port, peer_pid)
}

fn run_rtcplane(
    bin: &Path,
    load: Load,
    peer_port: u16,
    peer_pid: u32,
    worker_threads: Option<usize>,
) -> anyhow::Result<Round> {
    let port = 23_479;
    let dir = std::env::temp_dir().join(format!("rtcplane-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    port_free(port)?;
    let server = Command::new(bin)
        .arg("serve")
        .current_dir(&dir)
        .env("RTCPLANE__LOG__LEVEL", "warn")
        .env(
            "RTCPLANE__WORKER_THREADS",
            worker_threads.unwrap_or(0).to_string(),
        )
        .env_remove("TOKIO_WORKER_THREADS")
        .env("RTCPLANE__HTTP__ADMIN_LISTEN", "127.0.0.1:0")
        .env("RTCPLANE__HTTP__PUBLIC_LISTEN", "127.0.0.1:0")
        .env("RTCPLANE__STORAGE__URL", "sqlite::memory:")
        .env("RTCPLANE__TURN__LISTEN_UDP", format!("127.0.0.1:{port}"))
        .env("RTCPLANE__TURN__LISTEN_TCP", "")
        .env("RTCPLANE__TURN__RELAY_IP", "127.0.0.1")
        .env("RTCPLANE__TURN__MIN_PORT", "45001")
        .env("RTCPLANE__TURN__MAX_PORT", "50000")
        .env("RTCPLANE__TURN__REALM", REALM)
        .env("RTCPLANE__TURN__STATIC_USERS", format!("{USER}:{PASS}"))
        .env("RTCPLANE__TURN__ALLOW_LOOPBACK_PEERS", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start rtcplane")?;
    let r = measure(server, port, load, peer_port, peer_pid);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Waits for the server, runs the client load, reads the server's (and the echo peer's) CPU and the
/// server's memory, stops it.
fn measure(
    mut server: Child,
    port: u16,
    load: Load,
    peer_port: u16,
    peer_pid: u32,
) -> anyhow::Result<Round> {
    let pid = server.id();
    let result = (|| -> anyhow::Result<Round> {
        wait_udp_stun(port)?;
        // Whoever answered must be the server we started (a stray one on the port would be measured).
        alive(&mut server)?;
        let cpu_before = cpu_seconds(pid)?;
        let peer_before = cpu_seconds(peer_pid)?;
        let started = Instant::now();
        // Bounded in time: a client that never hears back would otherwise wait forever.
        let mut cmd = Command::new("timeout");
        cmd.args([UCLIENT_TIMEOUT, "turnutils_uclient"]);
        if load.c2c {
            cmd.arg("-y");
        }
        let out = cmd
            .args([
                "-n",
                &load.messages.to_string(),
                "-m",
                &load.clients.to_string(),
                "-l",
                &load.size.to_string(),
                "-z",
                &load.interval_ms.to_string(),
                "-c",
                "-e",
                "127.0.0.1",
                "-r",
                &peer_port.to_string(),
                "-p",
                &port.to_string(),
                "-u",
                USER,
                "-w",
                PASS,
                "127.0.0.1",
            ])
            .output()
            .context("turnutils_uclient")?;
        if out.status.code() == Some(124) {
            bail!("turnutils_uclient did not finish within {UCLIENT_TIMEOUT} s");
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid)? - cpu_before;
        let peer_cpu = cpu_seconds(peer_pid)? - peer_before;
        alive(&mut server)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let last = |key: &str| -> Option<f64> {
            text.lines()
                .rev()
                .filter(|l| !l.contains("msz="))
                .find_map(|l| {
                    let rest = &l[l.find(key)? + key.len()..];
                    rest.trim_start()
                        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .next()?
                        .parse()
                        .ok()
                })
        };
        let sent = last("tot_send_msgs=").with_context(|| {
            format!(
                "turnutils_uclient printed no totals; its last line: {:?}",
                text.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
            )
        })?;
        let received = last("tot_recv_msgs=").unwrap_or(0.0);
        if sent == 0.0 {
            bail!("no traffic: {text}");
        }
        Ok(Round {
            // Each echoed message crosses the relay twice (client→peer, peer→client).
            relayed: sent + received,
            seconds: last("Total transmit time is")
                .filter(|s| *s > 0.0)
                .unwrap_or(wall),
            lost_pct: (sent - received).max(0.0) / sent * 100.0,
            rtt_ms: last("Average round trip delay").unwrap_or(0.0),
            cpu_s: cpu,
            rss_mb: peak_rss_mb(pid)?,
            peer_cpu_s: if load.c2c { 0.0 } else { peer_cpu },
        })
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Fails if something else holds the server's UDP port: it, not the server under test, would answer.
fn port_free(port: u16) -> anyhow::Result<()> {
    std::net::UdpSocket::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| {
            format!("UDP port 127.0.0.1:{port} is taken by another process; stop it first")
        })
}

/// Fails if the server has exited: its figures would be a dead process's (or, had another server answered on
/// its port, that one's traffic with this one's CPU).
fn alive(server: &mut Child) -> anyhow::Result<()> {
    match server.try_wait()? {
        None => Ok(()),
        Some(status) => {
            bail!("the server exited ({status}); is its port taken by another process?")
        }
    }
}

fn wait_udp_stun(port: u16) -> anyhow::Result<()> {
    // A STUN Binding request; any answer means the server is up.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[7; 12]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0_u8; 512];
    while Instant::now() < deadline {
        let _ = sock.send_to(&req, ("127.0.0.1", port));
        if sock.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    bail!("no TURN server answered on 127.0.0.1:{port}")
}

pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis).
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok(ticks / 100.0)
}

pub(crate) fn peak_rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(kb / 1024.0)
}
