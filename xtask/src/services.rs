//! The services the tests talk to: PostgreSQL (127.0.0.1:5432), MariaDB (127.0.0.1:3306) and Redis
//! (127.0.0.1:6379), the `redis-server` binary for tests that run a private Redis, and the real protocol peers
//! (coturn's `turnutils_uclient` and `turnutils_peer`; nginx-light with the RTMP module and ffmpeg for the hook
//! gateway), installed from Debian's packages when missing. A service that is not
//! reachable is started with the machine's own command when there is one; if it still is not reachable the
//! run fails, naming it. Tests never skip a missing service.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

struct Service {
    name: &'static str,
    addr: &'static str,
    start: &'static [&'static str],
}

const SERVICES: &[Service] = &[
    Service {
        name: "PostgreSQL",
        addr: "127.0.0.1:5432",
        start: &[
            "sh",
            "-c",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start",
        ],
    },
    Service {
        name: "MariaDB",
        addr: "127.0.0.1:3306",
        start: &[
            "start-stop-daemon",
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ],
    },
    Service {
        name: "Redis",
        addr: "127.0.0.1:6379",
        start: &[
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    },
];

/// Real protocol peers the tests drive, and the Debian packages that carry them.
const PEER_TOOLS: &[(&str, &str)] = &[
    ("turnutils_uclient", "coturn"),
    ("turnutils_peer", "coturn"),
    // The hook gateway's real media server and client.
    ("nginx", "nginx-light"),
    (
        "/usr/lib/nginx/modules/ngx_rtmp_module.so",
        "libnginx-mod-rtmp",
    ),
    ("ffmpeg", "ffmpeg"),
    // The SIP agent's real registrar (fixtures/kamailio) and its reference REGISTER load.
    ("kamailio", "kamailio"),
    ("kamcmd", "kamailio"),
    ("sipp", "sip-tester"),
    // The SIP bench seeds its 20,000 accounts with it; /usr/bin/time measures SIPp.
    ("sqlite3", "sqlite3"),
    ("/usr/bin/time", "time"),
    // The TURN tests read a listener's socket buffers with it.
    ("ss", "iproute2"),
];

/// A command on the PATH, or (for an absolute path) a file that exists.
fn on_path(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// `apt-get install` (after one `apt-get update`); failures show in the missing-tool check that follows.
fn install(package: &str) {
    static UPDATED: std::sync::Once = std::sync::Once::new();
    UPDATED.call_once(|| {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    });
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
}

/// Installs the package of each missing tool; what is still missing afterwards, as "tool (Debian package p)".
fn install_missing(tools: &[(&str, &str)]) -> Vec<String> {
    let mut missing = Vec::new();
    for (tool, package) in tools {
        if !on_path(tool) {
            eprintln!("    {tool} is missing; installing Debian package {package}");
            install(package);
        }
        if !on_path(tool) {
            missing.push(format!("{tool} (Debian package {package})"));
        }
    }
    missing
}

fn reachable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// Only the protocol peers (for benchmarks, which need no database).
pub(crate) fn ensure_tools() -> anyhow::Result<()> {
    ensure_installed(PEER_TOOLS)
}

/// Each `(tool, Debian package)`: installed when the tool is missing; still missing afterwards is an error.
pub(crate) fn ensure_installed(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing = install_missing(tools);
    if missing.is_empty() {
        Ok(())
    } else {
        bail!("missing: {}", missing.join(", "))
    }
}

pub(crate) fn ensure() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for s in SERVICES {
        if reachable(s.addr) {
            eprintln!("    {} is up at {}", s.name, s.addr);
            continue;
        }
        eprintln!("    {} is not reachable at {}; starting it", s.name, s.addr);
        let started = Command::new(s.start[0]).args(&s.start[1..]).status();
        if let Err(e) = &started {
            eprintln!("    cannot run {}: {e}", s.start[0]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reachable(s.addr) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        if reachable(s.addr) {
            eprintln!("    {} is up at {}", s.name, s.addr);
        } else {
            missing.push(format!("{} ({})", s.name, s.addr));
        }
    }
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("the redis-server binary (tests run private Redis servers)".into());
    }
    missing.extend(install_missing(PEER_TOOLS));
    if !missing.is_empty() {
        bail!(
            "services the tests need are not available: {}",
            missing.join(", ")
        );
    }
    Ok(())
}
