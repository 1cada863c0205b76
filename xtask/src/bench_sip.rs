//! `cargo xtask bench sip [rounds]`: 20,000 accounts (`load0`..`load19999`) registered at the Kamailio fixture
//! by rtcplane's SIP agent and, in the same round, by SIPp with the fixture's own scenario at the same rate.
//!
//! For rtcplane: time from start until all 20,000 are ACTIVE (from its own API), CPU seconds and peak RSS of
//! the process (status writes to SQLite included), REGISTERs the registrar received (2 per account when
//! nothing is retransmitted), REGISTERs received in the 10 s after a restart (all bindings still valid: the
//! goal is 0), and the per-second REGISTER profile of the first refresh cycle (max second / mean second).
//! For SIPp: wall time, CPU and peak RSS (`/usr/bin/time`), REGISTERs received.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench_events::med;

const ACCOUNTS: usize = 20_000;
const RATE: u32 = 2_000;
const EXPIRES: u32 = 60;
const ADMIN_PORT: u16 = 19_391;
const CTL: &str = "unix:/tmp/kamailio-fixture/kamailio_ctl";

#[derive(Clone, Copy, Debug)]
struct Agent {
    secs: f64,
    cpu: f64,
    rss_mb: f64,
    registers: u64,
    retransmissions: f64,
    after_restart: u64,
    profile_max: u64,
    profile_mean: f64,
}

#[derive(Clone, Copy, Debug)]
struct Sipp {
    secs: f64,
    cpu: f64,
    rss_mb: f64,
    registers: u64,
    ok: bool,
}

fn fixtures() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RTCPLANE_FIXTURES") {
        return Ok(PathBuf::from(dir));
    }
    let root = crate::workspace_root();
    for candidate in [
        root.join("../shared/fixtures"),
        PathBuf::from("/work/shared/fixtures"),
    ] {
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    bail!("the shared fixtures are not found: set RTCPLANE_FIXTURES")
}

fn registers_received() -> anyhow::Result<u64> {
    let out = Command::new("kamcmd")
        .args(["-s", CTL, "stats.get_statistics", "all"])
        .output()
        .context("kamcmd")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("core:rcv_requests_register = "))
        .and_then(|n| n.trim().parse().ok())
        .context("core:rcv_requests_register from kamcmd")
}

fn http_get(path: &str) -> anyhow::Result<String> {
    crate::http_get(ADMIN_PORT, path)
}

fn active_total() -> Option<u64> {
    let text = http_get("/api/v1/sip/registrations?status=active&limit=0").ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let i = body.find("\"total\":")? + 8;
    body[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn metric(name_and_labels: &str) -> f64 {
    http_get("/metrics")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with(name_and_labels))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

fn sqlite(db: &Path, sql: &str) -> anyhow::Result<()> {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("sqlite3 (apt-get install sqlite3)")?;
    child
        .stdin
        .take()
        .context("sqlite3 stdin")?
        .write_all(sql.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("sqlite3 failed");
    }
    Ok(())
}

fn spawn_agent(bin: &Path, dir: &Path, url: &str, sip_port: u16) -> anyhow::Result<Child> {
    let child = Command::new(bin)
        .arg("serve")
        .current_dir(dir)
        .env("RTCPLANE__LOG__LEVEL", "warn")
        .env(
            "RTCPLANE__HTTP__ADMIN_LISTEN",
            format!("127.0.0.1:{ADMIN_PORT}"),
        )
        .env("RTCPLANE__HTTP__PUBLIC_LISTEN", "127.0.0.1:0")
        .env("RTCPLANE__STORAGE__URL", url)
        .env("RTCPLANE__TURN__ENABLED", "false")
        .env(
            "RTCPLANE__SIP_AGENT__LISTEN",
            format!("127.0.0.1:{sip_port}"),
        )
        .env("RTCPLANE__SIP_AGENT__OUTBOUND_PROXY", "sip:127.0.0.1:5070")
        .env("RTCPLANE__SIP_AGENT__EXPIRES", EXPIRES.to_string())
        .env("RTCPLANE__SIP_AGENT__RATELIMIT_RATE", RATE.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rtcplane.log"))?)
        .spawn()
        .context("cannot start rtcplane")?;
    Ok(child)
}

fn wait_admin(server: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while active_total().is_none() {
        if let Some(status) = server.try_wait()? {
            bail!("rtcplane exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("rtcplane's admin API did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn terminate(server: &mut Child) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("rtcplane did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_agent(bin: &Path, dir: &Path) -> anyhow::Result<Agent> {
    let db = dir.join("sip.db");
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite:{}", db.display());
    let out = Command::new(bin)
        .arg("migrate")
        .current_dir(dir)
        .env("RTCPLANE__STORAGE__URL", &url)
        .output()?;
    if !out.status.success() {
        bail!("migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut sql = String::from("BEGIN;\n");
    for i in 0..ACCOUNTS {
        sql.push_str(&format!(
            "INSERT INTO subscribers (subscriber_id, user, pass, realm, contact) VALUES ({}, 'load{i}', 'loadpw', 'example.org', '');\n",
            i + 1
        ));
    }
    sql.push_str("COMMIT;\n");
    sqlite(&db, &sql)?;

    let sip_port = free_udp_port()?;
    let c0 = registers_received()?;
    let started = Instant::now();
    let mut server = spawn_agent(bin, dir, &url, sip_port)?;
    let pid = server.id();
    wait_admin(&mut server)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while active_total() != Some(ACCOUNTS as u64) {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!(
                "not all {ACCOUNTS} accounts ACTIVE within 120 s: {:?}",
                active_total()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = crate::bench::cpu_seconds(pid)?;
    let registers = registers_received()? - c0;
    let retransmissions = metric("rtcplane_sip_requests_sent_total{kind=\"retransmission\"}");
    let rss_registering = crate::bench::peak_rss_mb(pid)?;

    // Restart: every binding is valid for about a minute more; nothing may be sent.
    std::thread::sleep(Duration::from_millis(200));
    terminate(&mut server)?;
    let c2 = registers_received()?;
    let mut server = spawn_agent(bin, dir, &url, sip_port)?;
    let pid2 = server.id();
    wait_admin(&mut server)?;
    // Up to 10 s, but never into the first refresh window (half the expiry after the first registration),
    // where REGISTERs are due anyway.
    let window_end = (started + Duration::from_secs(u64::from(EXPIRES) / 2)
        - Duration::from_secs(1))
    .min(Instant::now() + Duration::from_secs(10));
    let restart_window = window_end.saturating_duration_since(Instant::now());
    std::thread::sleep(restart_window);
    let after_restart = registers_received()? - c2;
    eprintln!("    restart window {:.1} s", restart_window.as_secs_f64());
    if active_total() != Some(ACCOUNTS as u64) {
        eprintln!("    warning: after restart {:?} ACTIVE", active_total());
    }

    // The first refresh cycle: refreshes fall between 50% and 90% of the expiry after each registration.
    // Sampling stops where the second cycle of the first accounts could begin (one expiry after start).
    let until = started + Duration::from_secs(u64::from(EXPIRES));
    let mut per_second = Vec::new();
    let mut last = registers_received()?;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1));
        let now = registers_received()?;
        per_second.push(now - last);
        last = now;
    }
    let rss_mb = f64::max(rss_registering, crate::bench::peak_rss_mb(pid2)?);
    terminate(&mut server)?;
    let first = per_second.iter().position(|&n| n > 0).unwrap_or(0);
    let last_busy = per_second.iter().rposition(|&n| n > 0).unwrap_or(0);
    let window = &per_second[first..=last_busy.max(first)];
    // Leave out the partial first and last seconds of the window.
    let inner = if window.len() > 4 {
        &window[1..window.len() - 1]
    } else {
        window
    };
    let profile_max = inner.iter().copied().max().unwrap_or(0);
    let profile_mean = inner.iter().sum::<u64>() as f64 / inner.len().max(1) as f64;
    eprintln!("    refresh profile (REGISTERs/s at the registrar): {window:?}");
    Ok(Agent {
        secs,
        cpu,
        rss_mb,
        registers,
        retransmissions,
        after_restart,
        profile_max,
        profile_mean,
    })
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn run_sipp(scenario: &Path, users: &Path) -> anyhow::Result<Sipp> {
    let c0 = registers_received()?;
    let port = free_udp_port()?.to_string();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %U %S %M", "sipp", "127.0.0.1:5070", "-sf"])
        .arg(scenario)
        .arg("-inf")
        .arg(users)
        .args([
            "-m",
            &ACCOUNTS.to_string(),
            "-r",
            &RATE.to_string(),
            "-rp",
            "1000",
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-timeout",
            "120s",
            "-nostdin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("sipp (apt-get install sip-tester) under /usr/bin/time")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("TIME "))
        .context("no /usr/bin/time line from sipp")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 4 {
        bail!("cannot read /usr/bin/time output {line:?}");
    }
    Ok(Sipp {
        secs: f[0],
        cpu: f[1] + f[2],
        rss_mb: f[3] / 1024.0,
        registers: registers_received()? - c0,
        ok: out.status.success(),
    })
}

pub(crate) fn sip(root: &Path, rounds: u32) -> anyhow::Result<()> {
    crate::services::ensure_tools()?;
    crate::step(
        root,
        "build rtcplane (release)",
        "cargo",
        &["build", "--release", "--locked", "-p", "rtcplane"],
    )?;
    let bin = root.join("target/release/rtcplane");
    let fixtures = fixtures()?.join("kamailio");
    let dir = std::env::temp_dir().join(format!("rtcplane-bench-sip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // SIPp's own scenario from the fixture, with a users file for all 20,000 accounts.
    let users = dir.join("users.csv");
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..ACCOUNTS {
        csv.push_str(&format!(
            "load{i};[authentication username=load{i} password=loadpw]\n"
        ));
    }
    std::fs::write(&users, csv)?;
    let scenario = fixtures.join("sipp/uac_register_auth.xml");

    let _ = Command::new("bash")
        .arg(fixtures.join("stop-kamailio.sh"))
        .output();
    let out = Command::new("bash")
        .arg(fixtures.join("run-kamailio.sh"))
        .output()?;
    if !out.status.success() {
        bail!("kamailio: {}", String::from_utf8_lossy(&out.stdout));
    }
    let result = (|| -> anyhow::Result<()> {
        let mut agents = Vec::new();
        let mut sipps = Vec::new();
        for round in 0..rounds {
            let agent_first = round % 2 == 0;
            for which in if agent_first { [0, 1] } else { [1, 0] } {
                if which == 0 {
                    let a = run_agent(&bin, &dir)?;
                    eprintln!(
                        "    round {round} rtcplane  {:>6.2} s  cpu {:>5.2} s  rss {:>6.1} MB  REGISTERs {} ({} retransmitted)  after restart {}  refresh max/mean {}/{:.0} = {:.2}",
                        a.secs,
                        a.cpu,
                        a.rss_mb,
                        a.registers,
                        a.retransmissions,
                        a.after_restart,
                        a.profile_max,
                        a.profile_mean,
                        a.profile_max as f64 / a.profile_mean.max(1.0)
                    );
                    agents.push(a);
                } else {
                    let s = run_sipp(&scenario, &users)?;
                    eprintln!(
                        "    round {round} sipp      {:>6.2} s  cpu {:>5.2} s  rss {:>6.1} MB  REGISTERs {}  {}",
                        s.secs,
                        s.cpu,
                        s.rss_mb,
                        s.registers,
                        if s.ok {
                            "all calls ok"
                        } else {
                            "SOME CALLS FAILED"
                        }
                    );
                    sipps.push(s);
                }
            }
        }
        let a = |f: fn(&Agent) -> f64| med(agents.iter().map(f).collect());
        let s = |f: fn(&Sipp) -> f64| med(sipps.iter().map(f).collect());
        let (a_secs, s_secs) = (a(|x| x.secs), s(|x| x.secs));
        let (a_cpu, s_cpu) = (a(|x| x.cpu), s(|x| x.cpu));
        let out = format!(
            "\nSIP registration: {ACCOUNTS} accounts at {RATE}/s against the Kamailio fixture (MD5 digest, expires {EXPIRES} s), medians of {rounds} rounds\n\n\
             | | time to all registered | CPU | peak RSS | REGISTERs received (2 per account = no loss) | after restart (up to 10 s, before any refresh is due) | first refresh cycle max/mean per second |\n|---|---|---|---|---|---|---|\n\
             | rtcplane (SQLite status writes) | {a_secs:.2} s | {a_cpu:.2} s | {:.1} MB | {:.0} ({:.0} retransmitted) | {:.0} | {:.2} |\n\
             | SIPp (no state, no writes) | {s_secs:.2} s | {s_cpu:.2} s | {:.1} MB | {:.0} | n/a | n/a |\n\
             | ratio rtcplane / SIPp | {:.2} | {:.2} | | | | |\n\
             Goals (issue 6): all ACTIVE, RSS < 150 MB, max/mean < 1.5, 0 REGISTERs on restart; DESIGN.md: uac_reg's 11.7 s, half its 4.9 CPU-s, < 50 MB.\n",
            a(|x| x.rss_mb),
            a(|x| x.registers as f64),
            a(|x| x.retransmissions),
            a(|x| x.after_restart as f64),
            a(|x| x.profile_max as f64 / x.profile_mean.max(1.0)),
            s(|x| x.rss_mb),
            s(|x| x.registers as f64),
            a_secs / s_secs,
            a_cpu / s_cpu,
        );
        eprintln!("{out}");
        Ok(())
    })();
    let _ = Command::new("bash")
        .arg(fixtures.join("stop-kamailio.sh"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
