//! The services the tests talk to: PostgreSQL (127.0.0.1:5432), MariaDB (127.0.0.1:3306) and Redis
//! (127.0.0.1:6379), plus the `redis-server` binary for tests that run a private Redis. A service that is not
//! reachable is started with the machine's own command when there is one; if it still is not reachable the
//! run fails, naming it. Tests never skip a missing service.

use std::net::{SocketAddr, TcpStream};
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

fn reachable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
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
    if !missing.is_empty() {
        bail!(
            "services the tests need are not available: {}",
            missing.join(", ")
        );
    }
    Ok(())
}
