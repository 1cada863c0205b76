//! `cargo xtask bench rooms`: Loop room cycles through rtcplane's rooms service, on SQLite and PostgreSQL.
//!
//! Setup: one Hawk session (`POST /registration`) creates `ROOMS` rooms. Load: one closed-loop worker per
//! room, each on its own keep-alive connection, repeating a link-clicker's visit: `join` (no auth) →
//! `status` (Basic with the session token) → `leave` (Basic), for `SECONDS` seconds. Reported: cycles per
//! second and p50/p99 latency of each action, medians of alternating rounds. Every join, status and leave
//! also publishes its event into the stored event log, as in production.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};

use crate::bench_events::{med, percentile, psql};

const ROOMS: usize = 100;
const SECONDS: u64 = 5;
const PORT: u16 = 23_497;

/// Status, headers (lower-case names) and body of an answer.
type Answer = (u16, Vec<(String, String)>, String);

/// One keep-alive HTTP/1.1 connection: a request with headers, the status and body back.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn connect(port: u16) -> anyhow::Result<Self> {
        let c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_nodelay(true)?;
        Ok(Self {
            writer: c.try_clone()?,
            reader: BufReader::new(c),
        })
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &str,
    ) -> anyhow::Result<Answer> {
        let auth = auth.map_or_else(String::new, |a| format!("authorization: {a}\r\n"));
        write!(
            self.writer,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{PORT}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut l = String::new();
            self.reader.read_line(&mut l)?;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let mut b = vec![0; length];
        self.reader.read_exact(&mut b)?;
        Ok((status, headers, String::from_utf8_lossy(&b).into_owned()))
    }
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(mut m) = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Loop's Hawk credentials of a session token: HKDF-SHA256, id and key as hex.
fn credentials(token: &str) -> anyhow::Result<(String, String)> {
    let ikm: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .context("session token is not hex")?;
    let prk = hmac256(&[0u8; 32], &ikm);
    let info = b"identity.mozilla.com/picl/v1/sessionToken";
    let mut okm = Vec::new();
    let mut t = Vec::new();
    for i in 1u8..=2 {
        let mut input = t.clone();
        input.extend_from_slice(info);
        input.push(i);
        t = hmac256(&prk, &input);
        okm.extend_from_slice(&t);
    }
    Ok((hex(&okm[..32]), hex(&okm[32..64])))
}

fn hawk(id: &str, key: &str, method: &str, path: &str, n: u64) -> String {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let nonce = format!("bench{n}");
    let normalized =
        format!("hawk.1.header\n{ts}\n{nonce}\n{method}\n{path}\n127.0.0.1\n{PORT}\n\n\n");
    let mac = STANDARD.encode(hmac256(key.as_bytes(), normalized.as_bytes()));
    format!("Hawk id=\"{id}\", ts=\"{ts}\", nonce=\"{nonce}\", mac=\"{mac}\"")
}

fn json_str(body: &str, key: &str) -> anyhow::Result<String> {
    let pat = format!("\"{key}\":\"");
    let start = body.find(&pat).context("key not in answer")? + pat.len();
    let end = body[start..].find('"').context("unterminated")? + start;
    Ok(body[start..end].to_owned())
}

#[derive(Clone, Debug, Default)]
struct Sample {
    cycles: f64,
    p50: [f64; 3],
    p99: [f64; 3],
}

/// Creates the rooms with one Hawk session.
fn setup() -> anyhow::Result<Vec<String>> {
    let mut c = Conn::connect(PORT)?;
    let (status, headers, _) = c.send("POST", "/registration", None, "")?;
    if status != 200 {
        bail!("POST /registration: HTTP {status}");
    }
    let token = headers
        .iter()
        .find(|(k, _)| k == "hawk-session-token")
        .map(|(_, v)| v.clone())
        .context("no Hawk-Session-Token")?;
    let (id, key) = credentials(&token)?;
    let mut rooms = Vec::with_capacity(ROOMS);
    for i in 0..ROOMS {
        let body = format!(r#"{{"roomOwner":"bench","roomName":"room {i}","maxSize":5}}"#);
        let auth = hawk(&id, &key, "POST", "/rooms", i as u64);
        let (status, _, answer) = c.send("POST", "/rooms", Some(&auth), &body)?;
        if status != 201 {
            bail!("POST /rooms: HTTP {status} {answer}");
        }
        rooms.push(json_str(&answer, "roomToken")?);
    }
    Ok(rooms)
}

/// One worker per room, closed loop, for `SECONDS`.
fn load(rooms: &[String], seconds: u64) -> anyhow::Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = rooms
        .iter()
        .map(|room| {
            let stop = stop.clone();
            let path = format!("/rooms/{room}");
            std::thread::spawn(move || -> anyhow::Result<[Vec<u64>; 3]> {
                let mut c = Conn::connect(PORT)?;
                let mut lat: [Vec<u64>; 3] = Default::default();
                let join = r#"{"action":"join","displayName":"guest","clientMaxSize":5}"#;
                let status = r#"{"action":"status","event":"Session.connectionCreated","state":"waiting","connections":1,"sendStreams":0,"recvStreams":0}"#;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (code, _, answer) = c.send("POST", &path, None, join)?;
                    lat[0].push(t.elapsed().as_nanos() as u64);
                    if code != 200 {
                        bail!("join: HTTP {code} {answer}");
                    }
                    let token = json_str(&answer, "sessionToken")?;
                    let basic = format!("Basic {}", STANDARD.encode(format!("{token}:")));
                    let t = Instant::now();
                    let (code, _, answer) = c.send("POST", &path, Some(&basic), status)?;
                    lat[1].push(t.elapsed().as_nanos() as u64);
                    if code != 204 {
                        bail!("status: HTTP {code} {answer}");
                    }
                    let t = Instant::now();
                    let (code, _, answer) =
                        c.send("POST", &path, Some(&basic), r#"{"action":"leave"}"#)?;
                    lat[2].push(t.elapsed().as_nanos() as u64);
                    if code != 204 {
                        bail!("leave: HTTP {code} {answer}");
                    }
                }
                Ok(lat)
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all: [Vec<u64>; 3] = Default::default();
    for h in handles {
        let lat = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        for (a, l) in all.iter_mut().zip(lat) {
            a.extend(l);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut s = Sample {
        cycles: all[2].len() as f64 / secs,
        ..Sample::default()
    };
    for (i, a) in all.iter_mut().enumerate() {
        a.sort_unstable();
        s.p50[i] = percentile(a, 0.50);
        s.p99[i] = percentile(a, 0.99);
    }
    Ok(s)
}

fn wait_port(child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", PORT)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("rtcplane exited with {status}");
        }
        if Instant::now() > deadline {
            bail!("rtcplane does not listen on {PORT}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run(bin: &Path, backend: &str) -> anyhow::Result<Sample> {
    let dir = std::env::temp_dir().join(format!("rtcplane-bench-rooms-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = format!("rtcplane_bench_rooms_{}", std::process::id());
    let url = match backend {
        "sqlite" => format!("sqlite:{}", dir.join("bench.db").display()),
        _ => {
            psql(&format!("DROP DATABASE IF EXISTS {db}"))?;
            psql(&format!("CREATE DATABASE {db}"))?;
            format!("postgres://postgres@127.0.0.1:5432/{db}")
        }
    };
    let mut server = Command::new(bin)
        .arg("serve")
        .current_dir(&dir)
        .env("RTCPLANE__LOG__LEVEL", "warn")
        .env("RTCPLANE__HTTP__PUBLIC_LISTEN", format!("127.0.0.1:{PORT}"))
        .env("RTCPLANE__HTTP__ADMIN_LISTEN", "127.0.0.1:0")
        .env("RTCPLANE__STORAGE__URL", &url)
        .env("RTCPLANE__STORAGE__MAX_CONNECTIONS", "20")
        .env("RTCPLANE__TURN__ENABLED", "false")
        .env("RTCPLANE__ROOMS__MAX_SIZE", "5")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rtcplane.log"))?)
        .spawn()
        .context("cannot start rtcplane")?;
    let result = (|| {
        wait_port(&mut server)?;
        let rooms = setup()?;
        load(&rooms, 1)?; // warm-up
        load(&rooms, SECONDS)
    })();
    let _ = server.kill();
    let _ = server.wait();
    if result.is_err() {
        let log = std::fs::read_to_string(dir.join("rtcplane.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!(
            "rtcplane's log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    if backend == "postgres" {
        let _ = psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
    result
}

pub(crate) fn rooms(root: &Path, rounds: u32) -> anyhow::Result<()> {
    crate::services::ensure()?;
    crate::step(
        root,
        "build rtcplane (release)",
        "cargo",
        &["build", "--release", "--locked", "-p", "rtcplane"],
    )?;
    let bin = root.join("target/release/rtcplane");
    let backends = ["sqlite", "postgres"];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); backends.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..backends.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let s = run(&bin, backends[i])?;
            eprintln!(
                "    round {round} {:<9} {:>7.0} cycles/s  p99 join {:>6.2} ms  status {:>6.2} ms  leave {:>6.2} ms",
                backends[i], s.cycles, s.p99[0], s.p99[1], s.p99[2]
            );
            samples[i].push(s);
        }
    }
    let mut out = format!(
        "\nLoop room cycles (link-clicker join -> status -> leave), {ROOMS} rooms, one closed-loop worker per room, {SECONDS} s, medians of {rounds} rounds\n\n\
         | store | cycles/s | join p50 / p99 | status p50 / p99 | leave p50 / p99 |\n|---|---|---|---|---|\n"
    );
    for (i, b) in backends.iter().enumerate() {
        let s = &samples[i];
        let m = |f: &dyn Fn(&Sample) -> f64| med(s.iter().map(f).collect());
        out.push_str(&format!(
            "| {b} | {:.0} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms |\n",
            m(&|x| x.cycles),
            m(&|x| x.p50[0]),
            m(&|x| x.p99[0]),
            m(&|x| x.p50[1]),
            m(&|x| x.p99[1]),
            m(&|x| x.p50[2]),
            m(&|x| x.p99[2]),
        ));
    }
    eprintln!("{out}");
    Ok(())
}
