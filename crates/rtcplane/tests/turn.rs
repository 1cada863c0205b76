//! The TURN relay end to end: coturn's own client tools (`turnutils_uclient` against `turnutils_peer`) over
//! UDP and TCP with static users, REST secrets and database users, and a raw protocol client (built on our
//! codec) for every error path.

// Tests spawn real processes and poll real servers with std time.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rtcplane_turn_relay::stun::{
    Class, Encoder, LongTermKey, Message, Method, PasswordAlgorithm, attr,
};
use support::{Server, ServerBuilder, SseReader, free_port, run, sockets_of};
use tokio::net::UdpSocket;

const USER: &str = "ninefingers";
const PASS: &str = "youhavetoberealistic";
const REALM: &str = "north.gov";

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// A TURN-enabled server on free ports; relaying to loopback peers is allowed for the test peer.
fn turn_server(port: u16) -> ServerBuilder {
    Server::builder()
        .env("RTCPLANE__TURN__ENABLED", "true")
        .env("RTCPLANE__TURN__REALM", REALM)
        .env("RTCPLANE__TURN__LISTEN_UDP", format!("127.0.0.1:{port}"))
        .env("RTCPLANE__TURN__LISTEN_TCP", format!("127.0.0.1:{port}"))
        .env("RTCPLANE__TURN__RELAY_IP", "127.0.0.1")
        .env("RTCPLANE__TURN__ALLOW_LOOPBACK_PEERS", "true")
        .env("RTCPLANE__TURN__STATIC_USERS", format!("{USER}:{PASS}"))
}

/// A port free for both UDP and TCP.
fn free_dual_port() -> u16 {
    for _ in 0..50 {
        let p = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    free_port()
}

struct Peer(Child);

impl Peer {
    fn start(port: u16) -> anyhow::Result<Self> {
        let child = Command::new("turnutils_peer")
            .args(["-p", &port.to_string(), "-L", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("turnutils_peer (coturn package) must be installed")?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(Self(child))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
struct UclientReport {
    sent: u64,
    received: u64,
    lost: u64,
    output: String,
}

/// Runs turnutils_uclient and reads its totals.
async fn uclient(args: &[&str], server_port: u16, peer_port: u16) -> anyhow::Result<UclientReport> {
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    cmd.args(args)
        .args([
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &server_port.to_string(),
            "127.0.0.1",
        ])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("turnutils_uclient did not finish in 60s")?
        .context("turnutils_uclient (coturn package) must be installed")?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let number_after = |key: &str| -> Option<u64> {
        output
            .lines()
            .rev()
            .filter(|l| !l.contains("msz="))
            .find_map(|l| {
                let rest = &l[l.find(key)? + key.len()..];
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
    };
    Ok(UclientReport {
        sent: number_after("tot_send_msgs=").unwrap_or(0),
        received: number_after("tot_recv_msgs=").unwrap_or(0),
        lost: number_after("Total lost packets").unwrap_or(u64::MAX),
        output,
    })
}

/// Runs turnutils_uclient and asserts its run was clean (see [`assert_clean`]).
async fn uclient_clean(
    args: &[&str],
    server_port: u16,
    peer_port: u16,
    at_least: u64,
) -> anyhow::Result<UclientReport> {
    let report = uclient(args, server_port, peer_port).await?;
    assert_clean(&report, at_least);
    Ok(report)
}

/// Every message sent came back, at least `at_least` of them (uclient adds RTCP traffic of its own), none lost.
fn assert_clean(r: &UclientReport, at_least: u64) {
    assert!(
        r.sent >= at_least,
        "sent {} < {at_least}:\n{}",
        r.sent,
        r.output
    );
    assert_eq!(r.received, r.sent, "{}", r.output);
    assert_eq!(r.lost, 0, "{}", r.output);
}

/// `worker_threads = 1` runs the current-thread scheduler: everything on one thread, which must still relay
/// UDP and TCP clients (requests answered in tasks of their own) and shut down on SIGTERM.
#[tokio::test]
async fn one_worker_thread_relays_and_shuts_down() -> anyhow::Result<()> {
    let (port, peer_port) = (free_dual_port(), free_udp_port());
    let _peer = Peer::start(peer_port)?;
    let mut server = turn_server(port)
        .env("RTCPLANE__WORKER_THREADS", "1")
        .start()
        .await?;
    uclient_clean(
        &["-n", "100", "-m", "5", "-u", USER, "-w", PASS],
        port,
        peer_port,
        100 * 5,
    )
    .await?;
    uclient_clean(
        &["-t", "-n", "50", "-m", "2", "-u", USER, "-w", PASS],
        port,
        peer_port,
        50 * 2,
    )
    .await?;
    let status = server.terminate(Duration::from_secs(15)).await?;
    assert!(status.success(), "exit status {status}");
    Ok(())
}

#[tokio::test]
async fn coturn_client_relays_over_udp_and_tcp_with_a_static_user() -> anyhow::Result<()> {
    let (port, peer_port) = (free_dual_port(), free_udp_port());
    let _peer = Peer::start(peer_port)?;
    let server = turn_server(port).start().await?;
    let mut events = SseReader::connect(&server.admin_url("/api/v1/events?types=turn.*")).await?;

    // 4 clients × 50 messages, each with an RTP and an RTCP allocation (EVEN-PORT + RESERVATION-TOKEN).
    uclient_clean(
        &["-n", "50", "-m", "4", "-l", "170", "-u", USER, "-w", PASS],
        port,
        peer_port,
        50 * 4,
    )
    .await?;
    uclient_clean(
        &["-t", "-n", "50", "-m", "2", "-u", USER, "-w", PASS],
        port,
        peer_port,
        50 * 2,
    )
    .await?;
    uclient_clean(
        &["-s", "-n", "30", "-m", "2", "-u", USER, "-w", PASS],
        port,
        peer_port,
        30 * 2,
    )
    .await?;
    uclient_clean(
        &["-y", "-n", "30", "-m", "2", "-u", USER, "-w", PASS],
        port,
        peer_port,
        30 * 2,
    )
    .await?;

    let created = events
        .next_of("turn.allocation.created", Duration::from_secs(5))
        .await?;
    assert_eq!(created["data"]["user"], USER);
    assert_eq!(created["data"]["realm"], REALM);
    assert_eq!(created["data"]["transport"], "udp");
    assert!(
        created["data"]["relayed"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{created}"
    );

    let metrics = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    // The client-to-client run went through the in-process fast path (both clients are on this node).
    let fast: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rtcplane_turn_fast_path_packets_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(fast >= 60, "fast path used for {fast} packets:\n{metrics}");
    for series in [
        "rtcplane_turn_allocations_created_total",
        "rtcplane_turn_relayed_packets_total{direction=\"to_peer\"}",
        "rtcplane_turn_requests_total{method=\"Allocate\",result=\"success\"}",
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
    let ready: serde_json::Value = support::get(server.admin_url("/readyz"))
        .await?
        .json()
        .await?;
    assert_eq!(ready["checks"]["turn"]["ok"], true, "{ready}");
    Ok(())
}

#[tokio::test]
async fn rest_secrets_rotate_and_wrong_secrets_fail() -> anyhow::Result<()> {
    let (port, peer_port) = (free_dual_port(), free_udp_port());
    let _peer = Peer::start(peer_port)?;
    let _server = turn_server(port)
        .env("RTCPLANE__TURN__STATIC_AUTH_SECRETS", "current,previous")
        .start()
        .await?;
    for secret in ["current", "previous"] {
        uclient_clean(
            &["-W", secret, "-u", "alice", "-n", "20", "-m", "1", "-c"],
            port,
            peer_port,
            20,
        )
        .await?;
    }
    let bad = uclient(
        &["-W", "stolen", "-u", "alice", "-n", "5", "-m", "1", "-c"],
        port,
        peer_port,
    )
    .await?;
    assert_eq!(bad.received, 0, "{}", bad.output);
    assert!(
        bad.output.contains("Cannot complete Allocation"),
        "{}",
        bad.output
    );
    Ok(())
}

#[tokio::test]
async fn database_users_from_the_cli() -> anyhow::Result<()> {
    let (port, peer_port) = (free_dual_port(), free_udp_port());
    let _peer = Peer::start(peer_port)?;
    let server = turn_server(port)
        .env("RTCPLANE__TURN__STATIC_USERS", "")
        .start()
        .await?;
    let env = [("RTCPLANE__TURN__REALM", REALM.to_owned())];
    let add = run(
        server.dir.path(),
        &["turn", "user", "add", "dbuser", "--password", "dbpass"],
        &env,
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let list = run(server.dir.path(), &["turn", "user", "list"], &env);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        format!("{REALM}\tdbuser")
    );

    uclient_clean(
        &["-u", "dbuser", "-w", "dbpass", "-n", "20", "-m", "1", "-c"],
        port,
        peer_port,
        20,
    )
    .await?;

    let del = run(server.dir.path(), &["turn", "user", "del", "dbuser"], &env);
    assert!(del.status.success());
    let again = run(server.dir.path(), &["turn", "user", "del", "dbuser"], &env);
    assert_eq!(
        again.status.code(),
        Some(1),
        "deleting a missing user is an error"
    );
    let r = uclient(
        &["-u", "dbuser", "-w", "dbpass", "-n", "5", "-m", "1", "-c"],
        port,
        peer_port,
    )
    .await?;
    assert_eq!(
        r.received, 0,
        "a deleted user cannot allocate: {}",
        r.output
    );
    Ok(())
}

#[tokio::test]
async fn enabled_relay_opens_its_listeners() -> anyhow::Result<()> {
    let port = free_dual_port();
    let server = turn_server(port).start().await?;
    let sockets = sockets_of(server.pid())?;
    assert!(sockets.udp.contains(&port), "{sockets:?}");
    assert!(sockets.tcp_listen.contains(&port), "{sockets:?}");
    Ok(())
}

/// A raw STUN client on our codec.
struct Raw {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Raw {
    async fn new(port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind("127.0.0.1:0").await?,
            server: format!("127.0.0.1:{port}").parse()?,
        })
    }

    async fn send_raw(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.socket.send_to(bytes, self.server).await?;
        Ok(())
    }

    /// Sends a request and returns the response bytes (retrying like a client would, 3 times).
    async fn transact(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let tid = &bytes[8..20];
        let mut buf = vec![0_u8; 65536];
        for _ in 0..3 {
            self.send_raw(bytes).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
            {
                if n >= 20 && &buf[8..20] == tid {
                    return Ok(buf[..n].to_vec());
                }
            }
        }
        bail!("no response")
    }

    async fn expect_silence(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.send_raw(bytes).await?;
        let mut buf = vec![0_u8; 2048];
        if tokio::time::timeout(Duration::from_millis(300), self.socket.recv_from(&mut buf))
            .await
            .is_ok()
        {
            bail!("expected no answer to {} bytes", bytes.len());
        }
        Ok(())
    }
}

fn error_code(resp: &[u8]) -> Option<u16> {
    let m = Message::decode(resp).ok()?;
    if m.class != Class::Error {
        return None;
    }
    m.error_code().ok().flatten().map(|(c, _)| c)
}

struct Req {
    method: Method,
    tid: [u8; 12],
    buf: Vec<u8>,
}

impl Req {
    fn new(method: Method) -> Self {
        Self {
            method,
            tid: rand_tid(),
            buf: Vec::new(),
        }
    }

    /// Builds the request: `attrs` adds attributes, then credentials (if any) sign it.
    fn build(
        &mut self,
        attrs: impl FnOnce(&mut Encoder<'_>),
        creds: Option<(&str, &str, &str, &LongTermKey)>,
    ) -> Vec<u8> {
        let mut e = Encoder::new(&mut self.buf, self.method, Class::Request, self.tid);
        attrs(&mut e);
        if let Some((user, realm, nonce, key)) = creds {
            e.string(attr::USERNAME, user)
                .string(attr::REALM, realm)
                .string(attr::NONCE, nonce);
            e.message_integrity(key.as_bytes());
        }
        e.fingerprint();
        e.finish().expect("fits").to_vec()
    }
}

fn rand_tid() -> [u8; 12] {
    let mut t = [0_u8; 12];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    t[..12].copy_from_slice(&nanos.to_be_bytes()[4..16]);
    t
}

#[tokio::test]
async fn protocol_errors_get_the_right_answer_and_garbage_gets_none() -> anyhow::Result<()> {
    let port = free_dual_port();
    let server = turn_server(port)
        .env("RTCPLANE__TURN__NONCE_LIFETIME", "1s")
        .start()
        .await?;
    let c = Raw::new(port).await?;
    let key = LongTermKey::derive(PasswordAlgorithm::Md5, USER, REALM, PASS);
    let udp = |e: &mut Encoder<'_>| {
        e.requested_transport(attr::TRANSPORT_UDP);
    };

    // Binding needs no credentials.
    let resp = c
        .transact(&Req::new(Method::BINDING).build(|_| {}, None))
        .await?;
    let m = Message::decode(&resp)?;
    assert_eq!(m.class, Class::Success);
    assert_eq!(
        m.xor_address(attr::XOR_MAPPED_ADDRESS)?,
        Some(c.socket.local_addr()?)
    );

    // 401 challenge with realm, nonce and the password algorithms on offer.
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, None))
        .await?;
    assert_eq!(error_code(&resp), Some(401));
    let m = Message::decode(&resp)?;
    assert_eq!(m.realm()?, Some(REALM));
    let nonce = m.nonce()?.context("nonce")?.to_owned();
    assert!(
        nonce.starts_with("obMatJos2"),
        "RFC 8489 nonce cookie: {nonce}"
    );
    assert!(m.has(attr::PASSWORD_ALGORITHMS));

    let wrong = LongTermKey::derive(PasswordAlgorithm::Md5, USER, REALM, "nope");
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some((USER, REALM, &nonce, &wrong))))
        .await?;
    assert_eq!(error_code(&resp), Some(401), "wrong password");
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some((USER, "other.realm", &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(401), "wrong realm");
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some((USER, REALM, "forged-nonce", &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(438), "unknown nonce");
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(
            |e| {
                e.requested_transport(attr::TRANSPORT_UDP)
                    .attr(0x0777, b"x");
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(error_code(&resp), Some(420));
    let unknown: Vec<u16> = Message::decode(&resp)?
        .unknown_attributes()?
        .context("UNKNOWN-ATTRIBUTES")?
        .collect();
    assert_eq!(unknown, vec![0x0777]);
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(
            |e| {
                e.requested_transport(attr::TRANSPORT_TCP);
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(error_code(&resp), Some(442));
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(|_| {}, Some((USER, REALM, &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(400), "no REQUESTED-TRANSPORT");
    let resp = c
        .transact(&Req::new(Method::REFRESH).build(|_| {}, Some((USER, REALM, &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(437), "refresh without allocation");

    // Tampered integrity: 401, not a crash.
    let mut tampered = Req::new(Method::ALLOCATE).build(udp, Some((USER, REALM, &nonce, &key)));
    let mi = tampered.len() - 8 - 20;
    tampered[mi] ^= 0xff;
    // Recompute the fingerprint so the message itself is well formed.
    let crc = crc32(&tampered[..tampered.len() - 8]) ^ 0x5354_554E;
    let n = tampered.len();
    tampered[n - 4..].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        error_code(&c.transact(&tampered).await?),
        Some(401),
        "bad integrity"
    );

    // A real allocation, then the policy and the conflicts.
    let mut alloc = Req::new(Method::ALLOCATE);
    let resp = c
        .transact(&alloc.build(udp, Some((USER, REALM, &nonce, &key))))
        .await?;
    let m = Message::decode(&resp)?;
    assert_eq!(m.class, Class::Success, "{:?}", error_code(&resp));
    assert_eq!(
        m.verify_integrity(key.as_bytes()),
        Ok(rtcplane_turn_relay::stun::IntegrityKind::Sha1)
    );
    assert_eq!(m.lifetime()?, Some(600));
    let relayed = m
        .xor_address(attr::XOR_RELAYED_ADDRESS)?
        .context("relayed address")?;
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    // A retransmission of the same Allocate gets the same success; a new one for the same 5-tuple 437.
    let again = c
        .transact(&alloc.build(udp, Some((USER, REALM, &nonce, &key))))
        .await?;
    assert_eq!(Message::decode(&again)?.class, Class::Success);
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some((USER, REALM, &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(437));

    let server_private_peer: SocketAddr = "10.1.2.3:9".parse()?;
    let resp = c
        .transact(&Req::new(Method::CREATE_PERMISSION).build(
            |e| {
                e.xor_address(attr::XOR_PEER_ADDRESS, server_private_peer);
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(
        error_code(&resp),
        Some(403),
        "private peers are denied by default"
    );
    let resp = c
        .transact(&Req::new(Method::CHANNEL_BIND).build(
            |e| {
                e.channel_number(0x3000)
                    .xor_address(attr::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().expect("addr"));
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(error_code(&resp), Some(400), "channel number out of range");

    // Garbage, truncated and oversized datagrams: no answer, and the server keeps serving.
    c.expect_silence(b"hello, world").await?;
    c.expect_silence(&[0_u8; 19]).await?;
    c.expect_silence(&vec![0xff_u8; 60_000]).await?;
    let binding = Req::new(Method::BINDING).build(|_| {}, None);
    c.expect_silence(&binding[..binding.len() - 4]).await.ok();
    // A request whose length field lies gets 400.
    let mut lying = Req::new(Method::BINDING).build(
        |e| {
            e.string(attr::SOFTWARE, "x");
        },
        None,
    );
    lying[3] = lying[3].wrapping_add(8);
    lying.extend_from_slice(&[0; 4]);
    let resp = c.transact(&lying).await;
    assert!(resp.is_err() || resp.as_deref().ok().and_then(error_code) == Some(400));

    // Stale nonce: after nonce_lifetime (1 s here) the same credentials get 438 with a fresh nonce.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = c
        .transact(&Req::new(Method::REFRESH).build(|_| {}, Some((USER, REALM, &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(438));
    let fresh = Message::decode(&resp)?
        .nonce()?
        .context("fresh nonce")?
        .to_owned();
    assert_ne!(fresh, nonce);

    // Refresh with LIFETIME 0 deletes the allocation (and answers LIFETIME 0).
    let mut sse =
        SseReader::connect(&server.admin_url("/api/v1/events?types=turn.allocation.deleted"))
            .await?;
    let resp = c
        .transact(&Req::new(Method::REFRESH).build(
            |e| {
                e.lifetime(0);
            },
            Some((USER, REALM, &fresh, &key)),
        ))
        .await?;
    let m = Message::decode(&resp)?;
    assert_eq!((m.class, m.lifetime()?), (Class::Success, Some(0)));
    let deleted = sse
        .next_of("turn.allocation.deleted", Duration::from_secs(5))
        .await?;
    assert_eq!(deleted["data"]["reason"], "refresh");
    assert!(
        deleted["data"]["totals"]["sent_packets"].is_u64(),
        "{deleted}"
    );

    // SHA-256 keys (RFC 8489 §9.2) with the algorithm list echoed.
    let sha = LongTermKey::derive(PasswordAlgorithm::Sha256, USER, REALM, PASS);
    let mut req = Req::new(Method::ALLOCATE);
    let mut e = Encoder::new(&mut req.buf, Method::ALLOCATE, Class::Request, req.tid);
    e.requested_transport(attr::TRANSPORT_UDP)
        .string(attr::USERNAME, USER)
        .string(attr::REALM, REALM)
        .string(attr::NONCE, &fresh)
        .password_algorithms(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5])
        .password_algorithm(PasswordAlgorithm::Sha256)
        .message_integrity_sha256(sha.as_bytes())
        .fingerprint();
    let bytes = e.finish().expect("fits").to_vec();
    let resp = c.transact(&bytes).await?;
    let m = Message::decode(&resp)?;
    assert_eq!(m.class, Class::Success, "{:?}", error_code(&resp));
    assert_eq!(
        m.verify_integrity(sha.as_bytes()),
        Ok(rtcplane_turn_relay::stun::IntegrityKind::Sha256)
    );

    let mut s = server;
    assert!(s.alive());
    Ok(())
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A throw-away self-signed certificate (openssl CLI), for TLS listeners.
fn self_signed(dir: &std::path::Path) -> anyhow::Result<(String, String)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("openssl must be installed to make a test certificate")?;
    if !status.success() {
        bail!("openssl req failed");
    }
    Ok((cert.display().to_string(), key.display().to_string()))
}

#[tokio::test]
async fn tls_listener_relays_for_the_coturn_client() -> anyhow::Result<()> {
    let (port, tls_port, peer_port) = (free_dual_port(), free_port(), free_udp_port());
    let _peer = Peer::start(peer_port)?;
    let certs = tempfile::tempdir()?;
    let (cert, key) = self_signed(certs.path())?;
    // coturn's Redis statistics name the TLS version and cipher of TLS clients in OpenSSL's names (uclient
    // negotiates TLS 1.2 or 1.3 from one run to the next).
    let realm = unique("tls") + ".example.org";
    let (seen, task) = subscribe(
        "redis://127.0.0.1:6379/0",
        &[&format!("turn/realm/{realm}/user/*/allocation/*/status")],
    )
    .await?;
    let _server = turn_server(port)
        .env("RTCPLANE__TURN__REALM", &realm)
        .env(
            "RTCPLANE__TURN__LISTEN_TLS",
            format!("127.0.0.1:{tls_port}"),
        )
        .env("RTCPLANE__TURN__TLS_CERT", cert)
        .env("RTCPLANE__TURN__TLS_KEY", key)
        .env("RTCPLANE__TURN__REDIS_STATSDB", "redis://127.0.0.1:6379/0")
        .start()
        .await?;
    uclient_clean(
        &["-t", "-S", "-n", "30", "-m", "2", "-u", USER, "-w", PASS],
        tls_port,
        peer_port,
        30 * 2,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let statuses: Vec<String> = seen
        .lock()
        .map(|v| v.iter().map(|(_, p)| p.clone()).collect())
        .unwrap_or_default();
    let tls_new = format!("type=TLS/TCP, local=127.0.0.1:{tls_port}, remote=127.0.0.1:");
    assert!(
        statuses.iter().any(|p| p.starts_with("new lifetime=")
            && p.contains(&tls_new)
            && (p.contains(", ssl=TLSv1.3, cipher=TLS_AES_")
                || p.contains(", ssl=TLSv1.3, cipher=TLS_CHACHA20_")
                || p.contains(", ssl=TLSv1.2, cipher=ECDHE-"))),
        "{statuses:#?}"
    );
    assert!(
        statuses.iter().filter(|p| *p == "deleted").count() >= 2,
        "closing the TLS connection deletes its allocation: {statuses:#?}"
    );

    // A plain TCP client talking to the TLS port gets nothing relayed, and the server carries on.
    let plain = uclient(
        &["-t", "-n", "5", "-m", "1", "-u", USER, "-w", PASS],
        tls_port,
        peer_port,
    )
    .await?;
    assert_eq!(plain.received, 0, "{}", plain.output);
    uclient_clean(
        &["-t", "-S", "-n", "10", "-m", "1", "-u", USER, "-w", PASS],
        tls_port,
        peer_port,
        10,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn unreadable_tls_certificate_fails_start_up_naming_the_key() -> anyhow::Result<()> {
    let port = free_dual_port();
    let mut server = turn_server(port)
        .env(
            "RTCPLANE__TURN__LISTEN_TLS",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RTCPLANE__TURN__TLS_CERT", "/nonexistent/cert.pem")
        .env("RTCPLANE__TURN__TLS_KEY", "/nonexistent/key.pem")
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.alive() {
        assert!(tokio::time::Instant::now() < deadline, "must exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.log().contains("turn.tls_cert"), "{}", server.log());
    Ok(())
}

#[tokio::test]
async fn ipv6_listener_and_ipv6_relay() -> anyhow::Result<()> {
    let port = free_dual_port();
    let peer_port = free_udp_port();
    let peer = Command::new("turnutils_peer")
        .args(["-p", &peer_port.to_string(), "-L", "::1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("turnutils_peer")?;
    let _peer = Peer(peer);
    std::thread::sleep(Duration::from_millis(200));
    let _server = turn_server(port)
        .env("RTCPLANE__TURN__LISTEN_UDP", format!("[::1]:{port}"))
        .env("RTCPLANE__TURN__LISTEN_TCP", "")
        .env("RTCPLANE__TURN__RELAY_IP6", "::1")
        .start()
        .await?;
    let mut cmd = tokio::process::Command::new("turnutils_uclient");
    cmd.args([
        "-x",
        "-n",
        "20",
        "-m",
        "2",
        "-c",
        "-u",
        USER,
        "-w",
        PASS,
        "-e",
        "::1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port.to_string(),
        "::1",
    ])
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Total lost packets 0 "), "{text}");
    assert!(text.contains("tot_recv_msgs=40"), "{text}");
    Ok(())
}

#[tokio::test]
async fn family_credential_and_capacity_errors() -> anyhow::Result<()> {
    let port = free_dual_port();
    let relay_port = free_udp_port();
    let _server = turn_server(port)
        .env(
            "RTCPLANE__TURN__STATIC_USERS",
            format!("{USER}:{PASS},other:otherpass"),
        )
        .env("RTCPLANE__TURN__MIN_PORT", relay_port.to_string())
        .env("RTCPLANE__TURN__MAX_PORT", relay_port.to_string())
        .start()
        .await?;
    let key = LongTermKey::derive(PasswordAlgorithm::Md5, USER, REALM, PASS);
    let other = LongTermKey::derive(PasswordAlgorithm::Md5, "other", REALM, "otherpass");
    let a = Raw::new(port).await?;
    let resp = a
        .transact(&Req::new(Method::ALLOCATE).build(
            |e| {
                e.requested_transport(attr::TRANSPORT_UDP);
            },
            None,
        ))
        .await?;
    let nonce = Message::decode(&resp)?
        .nonce()?
        .context("nonce")?
        .to_owned();

    // IPv6 relay asked for, none configured: 440.
    let resp = a
        .transact(&Req::new(Method::ALLOCATE).build(
            |e| {
                e.requested_transport(attr::TRANSPORT_UDP)
                    .family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6);
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(error_code(&resp), Some(440));

    // The one relay port goes to the first allocation; a second client gets 508.
    let resp = a
        .transact(&Req::new(Method::ALLOCATE).build(
            |e| {
                e.requested_transport(attr::TRANSPORT_UDP);
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(
        Message::decode(&resp)?.class,
        Class::Success,
        "{:?}",
        error_code(&resp)
    );
    // Nonces bind to the client's IP address, so the first client's nonce serves the second (both loopback).
    let b = Raw::new(port).await?;
    let resp = b
        .transact(&Req::new(Method::ALLOCATE).build(
            |e| {
                e.requested_transport(attr::TRANSPORT_UDP);
            },
            Some((USER, REALM, &nonce, &key)),
        ))
        .await?;
    assert_eq!(error_code(&resp), Some(508), "no relay port left");

    // Another user refreshing the first client's allocation from its 5-tuple: 441.
    let resp = a
        .transact(&Req::new(Method::REFRESH).build(|_| {}, Some(("other", REALM, &nonce, &other))))
        .await?;
    assert_eq!(error_code(&resp), Some(441));
    Ok(())
}

#[tokio::test]
async fn rest_credentials_endpoint_and_allocations_admin_api() -> anyhow::Result<()> {
    let port = free_dual_port();
    let server = turn_server(port)
        .env("RTCPLANE__TURN__STATIC_AUTH_SECRETS", "rest-secret")
        .env("RTCPLANE__TURN__REST_API_KEYS", "backend-key-0123456789")
        .env("RTCPLANE__TURN__EXTERNAL_IP", "203.0.113.10")
        .start()
        .await?;
    let url = server.public_url("/api/v1/turn/credentials?username=alice&ttl=600");
    // No key, a wrong key: 401; a bad ttl: 400.
    assert_eq!(support::get(&url).await?.status(), 401);
    let wrong = support::client()
        .get(&url)
        .header("X-API-Key", "nope")
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    let bad_ttl = support::client()
        .get(server.public_url("/api/v1/turn/credentials?username=a&ttl=99999999"))
        .header("X-API-Key", "backend-key-0123456789")
        .send()
        .await?;
    assert_eq!(bad_ttl.status(), 400);
    let creds: serde_json::Value = support::client()
        .get(&url)
        .header("Authorization", "Bearer backend-key-0123456789")
        .send()
        .await?
        .json()
        .await?;
    let username = creds["username"].as_str().context("username")?.to_owned();
    let password = creds["password"].as_str().context("password")?.to_owned();
    assert!(username.ends_with(":alice"), "{creds}");
    assert_eq!(creds["ttl"], 600);
    assert_eq!(
        creds["uris"][0],
        format!("turn:203.0.113.10:{port}?transport=udp")
    );

    // The credentials allocate (long-term key of the REST username and password).
    let c = Raw::new(port).await?;
    let udp = |e: &mut Encoder<'_>| {
        e.requested_transport(attr::TRANSPORT_UDP);
    };
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, None))
        .await?;
    let nonce = Message::decode(&resp)?
        .nonce()?
        .context("nonce")?
        .to_owned();
    let key = LongTermKey::derive(PasswordAlgorithm::Md5, &username, REALM, &password);
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some((&username, REALM, &nonce, &key))))
        .await?;
    assert_eq!(
        Message::decode(&resp)?.class,
        Class::Success,
        "{:?}",
        error_code(&resp)
    );

    // The admin API lists it, filters by user, shows it, and ends it now.
    let list: serde_json::Value = support::get(server.admin_url("/api/v1/turn/allocations"))
        .await?
        .json()
        .await?;
    let a = &list["allocations"][0];
    assert_eq!(a["user"], username.as_str());
    assert_eq!(a["client"], c.socket.local_addr()?.to_string());
    let id = a["id"].as_str().context("id")?.to_owned();
    let none: serde_json::Value =
        support::get(server.admin_url("/api/v1/turn/allocations?user=bob"))
            .await?
            .json()
            .await?;
    assert_eq!(none["allocations"].as_array().map(Vec::len), Some(0));
    let one = support::get(server.admin_url(&format!("/api/v1/turn/allocations/{id}"))).await?;
    assert_eq!(one.status(), 200);
    let killed = support::client()
        .delete(server.admin_url(&format!("/api/v1/turn/allocations/{id}")))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    let after: serde_json::Value = support::get(server.admin_url("/api/v1/turn/allocations"))
        .await?
        .json()
        .await?;
    assert_eq!(after["allocations"].as_array().map(Vec::len), Some(0));
    // The client's next Refresh finds no allocation (437).
    let resp = c
        .transact(&Req::new(Method::REFRESH).build(|_| {}, Some((&username, REALM, &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), Some(437));
    let again = support::client()
        .delete(server.admin_url(&format!("/api/v1/turn/allocations/{id}")))
        .send()
        .await?;
    assert_eq!(again.status(), 404);

    // Database users through the admin API (what `rtcplane turn user` does), used by a real allocation.
    let users = server.admin_url("/api/v1/turn/users");
    let added = support::client()
        .post(&users)
        .json(&serde_json::json!({"name": "api-user", "password": "api-pass"}))
        .send()
        .await?;
    assert_eq!(added.status(), 201);
    let bad = support::client()
        .post(&users)
        .json(&serde_json::json!({"name": "x", "password": ""}))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let list: serde_json::Value = support::get(&users).await?.json().await?;
    assert_eq!(list["users"][0]["name"], "api-user");
    assert_eq!(list["users"][0]["realm"], REALM);
    assert!(!list.to_string().contains("api-pass"));
    let c2 = Raw::new(port).await?;
    let resp = c2
        .transact(&Req::new(Method::ALLOCATE).build(udp, None))
        .await?;
    let nonce = Message::decode(&resp)?
        .nonce()?
        .context("nonce")?
        .to_owned();
    let key = LongTermKey::derive(PasswordAlgorithm::Md5, "api-user", REALM, "api-pass");
    let resp = c2
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some(("api-user", REALM, &nonce, &key))))
        .await?;
    assert_eq!(error_code(&resp), None, "an API-added user allocates");
    let removed = support::client()
        .delete(server.admin_url("/api/v1/turn/users/api-user"))
        .send()
        .await?;
    assert_eq!(removed.status(), 204);
    let gone = support::client()
        .delete(server.admin_url("/api/v1/turn/users/api-user"))
        .send()
        .await?;
    assert_eq!(gone.status(), 404);
    Ok(())
}

#[tokio::test]
async fn user_and_total_quotas_answer_486() -> anyhow::Result<()> {
    let port = free_dual_port();
    let _server = turn_server(port)
        .env(
            "RTCPLANE__TURN__STATIC_USERS",
            format!("{USER}:{PASS},second:secondpass,third:thirdpass"),
        )
        .env("RTCPLANE__TURN__USER_QUOTA", "1")
        .env("RTCPLANE__TURN__TOTAL_QUOTA", "2")
        .start()
        .await?;
    let udp = |e: &mut Encoder<'_>| {
        e.requested_transport(attr::TRANSPORT_UDP);
    };
    // Each allocation from its own client socket (its own 5-tuple).
    let allocate = |user: &'static str, pass: &'static str| async move {
        let c = Raw::new(port).await?;
        let resp = c
            .transact(&Req::new(Method::ALLOCATE).build(udp, None))
            .await?;
        let nonce = Message::decode(&resp)?
            .nonce()?
            .context("nonce")?
            .to_owned();
        let key = LongTermKey::derive(PasswordAlgorithm::Md5, user, REALM, pass);
        let resp = c
            .transact(&Req::new(Method::ALLOCATE).build(udp, Some((user, REALM, &nonce, &key))))
            .await?;
        anyhow::Ok((c, error_code(&resp)))
    };
    let (_a, first) = allocate(USER, PASS).await?;
    assert_eq!(first, None, "the first allocation of a user succeeds");
    let (_b, second) = allocate(USER, PASS).await?;
    assert_eq!(second, Some(486), "user_quota = 1");
    let (_c, other) = allocate("second", "secondpass").await?;
    assert_eq!(other, None, "another user still has room");
    let (_d, third) = allocate("third", "thirdpass").await?;
    assert_eq!(third, Some(486), "total_quota = 2, whoever asks");
    Ok(())
}

// ------------------------------------------------------------------ operators: statistics, limits, callout

/// A raw UDP client holding an allocation (MD5 long-term credentials).
struct Allocated {
    c: Raw,
    user: String,
    realm: String,
    nonce: String,
    key: LongTermKey,
    relayed: SocketAddr,
}

/// Allocates as `user`; `Err(code)` if the server refuses.
async fn allocate_as(
    port: u16,
    realm: &str,
    user: &str,
    pass: &str,
) -> anyhow::Result<Result<Allocated, u16>> {
    allocate_with(port, realm, user, pass, false).await
}

/// `allocate_as`, with DONT-FRAGMENT in the Allocate requests if `dont_fragment`.
async fn allocate_with(
    port: u16,
    realm: &str,
    user: &str,
    pass: &str,
    dont_fragment: bool,
) -> anyhow::Result<Result<Allocated, u16>> {
    let c = Raw::new(port).await?;
    let udp = |e: &mut Encoder<'_>| {
        e.requested_transport(attr::TRANSPORT_UDP);
        if dont_fragment {
            e.attr(attr::DONT_FRAGMENT, &[]);
        }
    };
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, None))
        .await?;
    let nonce = Message::decode(&resp)?
        .nonce()?
        .context("nonce")?
        .to_owned();
    let key = LongTermKey::derive(PasswordAlgorithm::Md5, user, realm, pass);
    let resp = c
        .transact(&Req::new(Method::ALLOCATE).build(udp, Some((user, realm, &nonce, &key))))
        .await?;
    if let Some(code) = error_code(&resp) {
        return Ok(Err(code));
    }
    let relayed = Message::decode(&resp)?
        .xor_address(attr::XOR_RELAYED_ADDRESS)?
        .context("relayed address")?;
    Ok(Ok(Allocated {
        c,
        user: user.to_owned(),
        realm: realm.to_owned(),
        nonce,
        key,
        relayed,
    }))
}

impl Allocated {
    fn creds(&self) -> Option<(&str, &str, &str, &LongTermKey)> {
        Some((&self.user, &self.realm, &self.nonce, &self.key))
    }

    async fn permit(&self, peer: SocketAddr) -> anyhow::Result<()> {
        let resp = self
            .c
            .transact(&Req::new(Method::CREATE_PERMISSION).build(
                |e| {
                    e.xor_address(attr::XOR_PEER_ADDRESS, peer);
                },
                self.creds(),
            ))
            .await?;
        anyhow::ensure!(
            error_code(&resp).is_none(),
            "CreatePermission: {:?}",
            error_code(&resp)
        );
        Ok(())
    }

    async fn send(&self, peer: SocketAddr, data: &[u8]) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        let mut e = Encoder::new(&mut buf, Method::SEND, Class::Indication, rand_tid());
        e.xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attr(attr::DATA, data);
        self.c.send_raw(e.finish().context("fits")?).await
    }

    async fn delete(&self) -> anyhow::Result<()> {
        let resp = self
            .c
            .transact(&Req::new(Method::REFRESH).build(
                |e| {
                    e.lifetime(0);
                },
                self.creds(),
            ))
            .await?;
        anyhow::ensure!(
            error_code(&resp).is_none(),
            "Refresh 0: {:?}",
            error_code(&resp)
        );
        Ok(())
    }
}

/// Sum of a Prometheus metric's samples whose line starts with `prefix`.
async fn metric(server: &Server, prefix: &str) -> anyhow::Result<f64> {
    let text = support::get(server.admin_url("/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}{}", n % 1_000_000_000)
}

/// The seed's subscriptions (seed 000), exactly.
const SEED_PATTERNS: [&str; 5] = [
    "turn/realm/*/user/*/allocation/*/status",
    "turn/realm/*/user/*/allocation/*/traffic",
    "turn/realm/*/user/*/allocation/*/traffic/peer",
    "turn/realm/*/user/*/allocation/*/total_traffic",
    "turn/realm/*/user/*/allocation/*/total_traffic/peer",
];

/// Collects (channel, payload) of every message on `patterns` into a shared list.
async fn subscribe(
    url: &str,
    patterns: &[&str],
) -> anyhow::Result<(
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    tokio::task::JoinHandle<()>,
)> {
    use futures_util::StreamExt;
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    for p in patterns {
        pubsub.psubscribe(*p).await?;
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let payload: String = msg.get_payload().unwrap_or_default();
            if let Ok(mut v) = out.lock() {
                v.push((msg.get_channel_name().to_owned(), payload));
            }
        }
    });
    Ok((seen, task))
}

/// A message's shape: the kind after the id, and the payload with addresses and counts replaced (lifetimes
/// kept), checking each field parses.
fn shape(channel: &str, payload: &str) -> anyhow::Result<(String, String, String)> {
    let (_, rest) = channel
        .split_once("/allocation/")
        .with_context(|| format!("channel {channel:?}"))?;
    let (id, kind) = rest.split_once('/').context("kind")?;
    anyhow::ensure!(
        id.len() == 18 && id.bytes().all(|b| b.is_ascii_digit()),
        "id {id:?} is not 18 digits"
    );
    let shape = if payload == "deleted" {
        payload.to_owned()
    } else {
        let mut out = Vec::new();
        for (i, field) in payload.split(", ").enumerate() {
            let (name, value) = field.rsplit_once('=').context("field")?;
            let v = match name {
                "local" | "remote" => {
                    value
                        .parse::<SocketAddr>()
                        .with_context(|| format!("{field:?}"))?;
                    "ADDR".to_owned()
                }
                "rcvp" | "rcvb" | "sentp" | "sentb" => {
                    value.parse::<u64>().with_context(|| format!("{field:?}"))?;
                    "N".to_owned()
                }
                _ => value.to_owned(),
            };
            anyhow::ensure!(i > 0 || !name.is_empty(), "empty field in {payload:?}");
            out.push(format!("{name}={v}"));
        }
        out.join(", ")
    };
    Ok((id.to_owned(), kind.to_owned(), shape))
}

/// Per allocation id, the (kind, shape) sequence, in order.
fn by_allocation(
    messages: &[(String, String)],
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<(String, String)>>> {
    let mut out = std::collections::BTreeMap::<String, Vec<(String, String)>>::new();
    for (channel, payload) in messages {
        let (id, kind, shape) = shape(channel, payload)?;
        out.entry(id).or_default().push((kind, shape));
    }
    Ok(out)
}

#[tokio::test]
async fn coturn_redis_statistics_match_coturns_captured_output() -> anyhow::Result<()> {
    // coturn's own run (fixtures/coturn): the sequences of the allocations its client deleted.
    let captured =
        std::fs::read_to_string(support::fixtures().join("coturn/pubsub-udp-static.tsv"))
            .context("fixtures/coturn/pubsub-udp-static.tsv")?;
    let captured: Vec<(String, String)> = captured
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(c, p)| (c.to_owned(), p.to_owned()))
        .collect();
    let coturn = by_allocation(&captured)?;
    let coturn_deleted: Vec<&Vec<(String, String)>> = coturn
        .values()
        .filter(|s| s.iter().any(|(k, p)| k == "status" && p == "deleted"))
        .collect();
    assert!(!coturn_deleted.is_empty());

    // The same run against rtcplane: same client, same load, the seed's subscriptions.
    let realm = unique("stats") + ".example.org";
    let (seen, task) = subscribe("redis://127.0.0.1:6379/0", &SEED_PATTERNS).await?;
    let port = free_dual_port();
    let server = turn_server(port)
        .env("RTCPLANE__TURN__REALM", &realm)
        .env("RTCPLANE__TURN__STATIC_USERS", "alice:alicepw")
        .env(
            "RTCPLANE__TURN__REDIS_STATSDB",
            "ip=127.0.0.1 dbname=0 port=6379 connect_timeout=30",
        )
        .start()
        .await?;
    let peer_port = free_udp_port();
    let _peer = Peer::start(peer_port)?;
    uclient_clean(
        &[
            "-c", "-m", "2", "-n", "300", "-l", "120", "-z", "20", "-u", "alice", "-w", "alicepw",
        ],
        port,
        peer_port,
        600,
    )
    .await?;
    // Keys while allocations live: the status value, no TTL.
    let mut conn = redis::Client::open("redis://127.0.0.1:6379/0")?
        .get_multiplexed_async_connection()
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    let ours: Vec<(String, String)> = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        ours.iter()
            .all(|(c, _)| c.starts_with(&format!("turn/realm/{realm}/user/alice/allocation/"))),
        "{ours:#?}"
    );
    let ours_by = by_allocation(&ours)?;
    let deleted: Vec<(&String, &Vec<(String, String)>)> = ours_by
        .iter()
        .filter(|(_, s)| s.iter().any(|(k, p)| k == "status" && p == "deleted"))
        .collect();
    assert!(
        !deleted.is_empty(),
        "no allocation deleted:\n{ours:#?}\n{}",
        server.log()
    );
    for (id, seq) in &deleted {
        assert!(
            coturn_deleted.contains(seq),
            "allocation {id}: {seq:#?}\nis not one of coturn's sequences:\n{coturn_deleted:#?}"
        );
    }
    // The peer traffic of a deleted allocation is exactly coturn's for the same load; the client side
    // counts every message, headers included (coturn also counts the unauthenticated first Allocate).
    for (channel, payload) in &ours {
        if channel.ends_with("/total_traffic/peer") {
            assert_eq!(
                payload, "rcvp=300, rcvb=36000, sentp=300, sentb=36000",
                "{channel}"
            );
        }
        if channel.ends_with("/total_traffic") {
            let n: Vec<u64> = payload
                .split(", ")
                .filter_map(|f| f.split_once('=')?.1.parse().ok())
                .collect();
            assert!(
                n.len() == 4
                    && n[0] >= 305
                    && n[1] >= 300 * 124
                    && n[2] >= 305
                    && n[3] >= 300 * 124,
                "{payload}"
            );
        }
    }
    // Status keys: gone for deleted allocations, present without TTL (coturn's value) for the others.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("turn/realm/{realm}/*"))
        .query_async(&mut conn)
        .await?;
    for (id, seq) in &ours_by {
        let key = format!("turn/realm/{realm}/user/alice/allocation/{id}/status");
        let is_deleted = seq.iter().any(|(k, p)| k == "status" && p == "deleted");
        assert_eq!(keys.contains(&key), !is_deleted, "{key} in {keys:?}");
        if !is_deleted {
            let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
            let value: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            assert_eq!(ttl, -1);
            assert!(
                value.starts_with("refreshed lifetime=") || value.starts_with("new lifetime="),
                "{value}"
            );
            let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn redis_stopped_and_restarted_mid_run_relaying_continues_and_events_resume()
-> anyhow::Result<()> {
    let rport = free_port();
    let redis_server = |port: u16| {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server must be installed")
    };
    let mut redis1 = Peer(redis_server(rport)?);
    let url = format!("redis://127.0.0.1:{rport}/0");
    let realm = unique("restart") + ".example.org";
    let port = free_dual_port();
    let server = turn_server(port)
        .env("RTCPLANE__TURN__REALM", &realm)
        .env("RTCPLANE__TURN__STATIC_USERS", "alice:alicepw")
        .env("RTCPLANE__TURN__REDIS_STATSDB", &url)
        .start()
        .await?;
    let peer_port = free_udp_port();
    let _peer = Peer::start(peer_port)?;
    // 15 s of traffic from one client.
    let long_run = tokio::spawn(async move {
        uclient(
            &[
                "-c", "-m", "1", "-n", "750", "-l", "120", "-z", "20", "-u", "alice", "-w",
                "alicepw",
            ],
            port,
            peer_port,
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("turn/*")
        .query_async(&mut conn)
        .await?;
    assert!(
        !keys.is_empty(),
        "the running allocation has its status key"
    );
    // Redis goes away; meanwhile another allocation comes and goes (its events cannot be written).
    let _ = redis1.0.kill();
    let _ = redis1.0.wait();
    let a = allocate_as(port, &realm, "alice", "alicepw")
        .await?
        .map_err(|c| anyhow::anyhow!("{c}"))?;
    a.delete().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropped = metric(&server, "rtcplane_turn_redis_events_dropped_total").await?;
    assert!(dropped >= 1.0, "dropped events are counted: {dropped}");
    // Redis is back (empty): the live allocation's status key is restored, and new events arrive.
    redis1 = Peer(redis_server(rport)?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (seen, task) = subscribe(&url, &["turn/realm/*/user/*/allocation/*"]).await?;
    let restored = async {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        for _ in 0..100 {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("turn/*")
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                return anyhow::Ok(keys);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("status key not restored within 10 s")
    }
    .await?;
    assert!(
        restored[0].contains(&format!("turn/realm/{realm}/user/alice/allocation/")),
        "{restored:?}"
    );
    let b = allocate_as(port, &realm, "alice", "alicepw")
        .await?
        .map_err(|c| anyhow::anyhow!("{c}"))?;
    let report = long_run.await??;
    assert_clean(&report, 750);
    b.delete().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    let news = seen
        .iter()
        .filter(|(c, p)| c.ends_with("/status") && p.starts_with("new "))
        .count();
    let deleted = seen.iter().filter(|(_, p)| p == "deleted").count();
    assert!(news >= 1 && deleted >= 2, "events resumed: {seen:#?}");
    assert_eq!(metric(&server, "rtcplane_turn_redis_connected").await?, 1.0);
    drop(redis1);
    Ok(())
}

/// A UDP peer counting what reaches it, and when the last datagram came.
async fn counting_peer() -> anyhow::Result<(
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<(u64, u64, std::time::Instant)>>,
    std::sync::Arc<UdpSocket>,
)> {
    let socket = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let addr = socket.local_addr()?;
    let stats = std::sync::Arc::new(std::sync::Mutex::new((
        0_u64,
        0_u64,
        std::time::Instant::now(),
    )));
    let (s, st) = (socket.clone(), stats.clone());
    tokio::spawn(async move {
        let mut buf = vec![0_u8; 65536];
        while let Ok((n, _)) = s.recv_from(&mut buf).await {
            if let Ok(mut g) = st.lock() {
                g.0 += 1;
                g.1 += n as u64;
                g.2 = std::time::Instant::now();
            }
        }
    });
    Ok((addr, stats, socket))
}

#[tokio::test]
async fn max_bps_per_allocation_and_per_user_drop_the_excess() -> anyhow::Result<()> {
    let port = free_dual_port();
    let server = turn_server(port)
        .env("RTCPLANE__TURN__MAX_BPS", "20000")
        .env("RTCPLANE__TURN__USER_MAX_BPS", "30000")
        .start()
        .await?;
    let (peer_a, stats_a, peer_socket) = counting_peer().await?;
    let (peer_b, stats_b, _s) = counting_peer().await?;
    let a = allocate_as(port, REALM, USER, PASS)
        .await?
        .map_err(|c| anyhow::anyhow!("{c}"))?;
    let b = allocate_as(port, REALM, USER, PASS)
        .await?
        .map_err(|c| anyhow::anyhow!("{c}"))?;
    a.permit(peer_a).await?;
    b.permit(peer_b).await?;
    // Each client offers 50 kB/s for 3 s: 1000-byte Send indications every 20 ms.
    let payload = vec![7_u8; 1000];
    let started = std::time::Instant::now();
    for _ in 0..150 {
        a.send(peer_a, &payload).await?;
        b.send(peer_b, &payload).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (got_a, got_b) = (
        stats_a.lock().map(|g| g.1).unwrap_or(0),
        stats_b.lock().map(|g| g.1).unwrap_or(0),
    );
    let offered = 150_000_u64;
    // Each allocation at most its 20 kB/s (plus one second of burst); together at most the user's 30 kB/s.
    for got in [got_a, got_b] {
        assert!(got * 10 < offered * 6, "limited: {got} of {offered}");
        assert!(got as f64 <= 20_000.0 * (secs + 1.0), "{got} in {secs:.1}s");
    }
    let total = (got_a + got_b) as f64;
    assert!(
        total <= 30_000.0 * (secs + 1.0),
        "user-wide: {total} in {secs:.1}s"
    );
    assert!(
        total >= 30_000.0 * secs * 0.6,
        "the user's share is used: {total} in {secs:.1}s"
    );
    // The other direction: the peer floods the relayed address; the client gets at most 20 kB/s.
    let mut received = 0_u64;
    let mut buf = vec![0_u8; 2048];
    let flood_started = std::time::Instant::now();
    for _ in 0..100 {
        peer_socket.send_to(&payload, a.relayed).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(1), a.c.socket.recv_from(&mut buf)).await
        {
            received += n as u64;
        }
    }
    let flood_secs = flood_started.elapsed().as_secs_f64();
    assert!(received > 0);
    assert!(
        received as f64 <= 20_000.0 * (flood_secs + 1.0) * 1.1,
        "to the client: {received} in {flood_secs:.1}s"
    );
    // Counted: in metrics and in the allocation's counters.
    assert!(metric(&server, "rtcplane_turn_bandwidth_dropped_bytes_total").await? > 0.0);
    let list: serde_json::Value = support::get(server.admin_url("/api/v1/turn/allocations"))
        .await?
        .json()
        .await?;
    let dropped: u64 = list["allocations"]
        .as_array()
        .context("allocations")?
        .iter()
        .filter_map(|a| a["counters"]["bandwidth_dropped_bytes"].as_u64())
        .sum();
    assert!(dropped > 0, "{list}");
    Ok(())
}

#[tokio::test]
async fn killing_an_allocation_from_the_api_stops_its_relay_within_a_second() -> anyhow::Result<()>
{
    let port = free_dual_port();
    let server = turn_server(port).start().await?;
    let (peer, stats, _s) = counting_peer().await?;
    let a = std::sync::Arc::new(
        allocate_as(port, REALM, USER, PASS)
            .await?
            .map_err(|c| anyhow::anyhow!("{c}"))?,
    );
    a.permit(peer).await?;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                let _ = a.send(peer, b"media").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stats.lock().map(|g| g.0).unwrap_or(0);
    assert!(before > 10, "relaying before the kill: {before}");
    let list: serde_json::Value = support::get(server.admin_url("/api/v1/turn/allocations"))
        .await?
        .json()
        .await?;
    let id = list["allocations"][0]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let killed = support::client()
        .delete(server.admin_url(&format!("/api/v1/turn/allocations/{id}")))
        .send()
        .await?;
    assert_eq!(killed.status(), 204);
    let at_kill = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_1s = stats.lock().map(|g| g.0).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, last) = stats.lock().map(|g| (g.0, g.2)).unwrap_or((0, at_kill));
    assert_eq!(
        total, after_1s,
        "nothing relayed more than a second after the kill"
    );
    assert!(
        last <= at_kill + Duration::from_secs(1),
        "last datagram {:?} after the kill",
        last.saturating_duration_since(at_kill)
    );
    sender.abort();
    Ok(())
}

/// DONT-FRAGMENT (RFC 8656 §7.2) is honoured, no longer refused with 420: the allocation is made and relays
/// both ways. That its relayed socket sends with DF is checked by the turn-relay crate's sockopt tests:
/// loopback's 64 KiB MTU never fragments, so no datagram here could show the difference.
#[tokio::test]
async fn dont_fragment_allocations_are_made_and_relay_both_ways() -> anyhow::Result<()> {
    let port = free_dual_port();
    let _server = turn_server(port).start().await?;
    let a = allocate_with(port, REALM, USER, PASS, true)
        .await?
        .map_err(|c| anyhow::anyhow!("Allocate with DONT-FRAGMENT answered {c}"))?;
    let peer = UdpSocket::bind("127.0.0.1:0").await?;
    let peer_addr = peer.local_addr()?;
    a.permit(peer_addr).await?;
    a.send(peer_addr, b"to the peer, with DF").await?;
    let mut buf = vec![0_u8; 2048];
    let (n, from) =
        tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"to the peer, with DF");
    assert_eq!(from, a.relayed, "sent from the relayed address");
    peer.send_to(b"back to the client", a.relayed).await?;
    let (n, _) =
        tokio::time::timeout(Duration::from_secs(2), a.c.socket.recv_from(&mut buf)).await??;
    let data = Message::decode(&buf[..n])?;
    assert_eq!(data.method, Method::DATA);
    assert_eq!(data.get(attr::DATA), Some(&b"back to the client"[..]));
    a.delete().await
}

/// The receive buffer (`rb`) of the UDP socket bound to 127.0.0.1:`port`, as `ss` reports it.
fn udp_rcvbuf(port: u16) -> anyhow::Result<u64> {
    let out = std::process::Command::new("ss")
        .args(["-uanmH", "src", &format!("127.0.0.1:{port}")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rb = text
        .split(|c: char| c == ',' || c == '(' || c.is_whitespace())
        .find_map(|f| f.strip_prefix("rb"))
        .ok_or_else(|| anyhow::anyhow!("no rb in ss output: {text:?}"))?;
    Ok(rb.parse()?)
}

fn sysctl(name: &str) -> anyhow::Result<u64> {
    Ok(
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))?
            .trim()
            .parse()?,
    )
}

#[tokio::test]
async fn udp_listener_buffers_follow_listen_udp_buffer() -> anyhow::Result<()> {
    // Within this machine's cap (Linux reports twice the size set), and the OS default with 0.
    let asked = sysctl("rmem_max")?.min(sysctl("wmem_max")?).min(1 << 20) - 4096;
    let port = free_dual_port();
    let server = turn_server(port)
        .env("RTCPLANE__TURN__LISTEN_UDP_BUFFER", asked.to_string())
        .start()
        .await?;
    assert_eq!(udp_rcvbuf(port)?, 2 * asked);
    drop(server);
    let port = free_dual_port();
    let _server = turn_server(port)
        .env("RTCPLANE__TURN__LISTEN_UDP_BUFFER", "0")
        .start()
        .await?;
    assert_eq!(udp_rcvbuf(port)?, sysctl("rmem_default")?);
    Ok(())
}

/// A backend for the auth callout: alice (password alicepw, quota 1), slow (answers after 3 s), denied
/// (403), full (429); counts calls per user.
async fn callout_backend() -> anyhow::Result<(
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
)> {
    use axum::http::StatusCode;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/turn-auth",
        axum::routing::post(
            move |headers: axum::http::HeaderMap,
                  axum::Json(body): axum::Json<serde_json::Value>| {
                let c = c.clone();
                async move {
                    let user = body["username"].as_str().unwrap_or_default().to_owned();
                    if let Ok(mut v) = c.lock() {
                        v.push(user.clone());
                    }
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer callout-secret")
                    {
                        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({})))
                            .into_response();
                    }
                    match user.as_str() {
                        "alice" => {
                            axum::Json(serde_json::json!({"password": "alicepw", "quota": 1}))
                                .into_response()
                        }
                        "slow" => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            axum::Json(serde_json::json!({"password": "slowpw"})).into_response()
                        }
                        "full" => StatusCode::TOO_MANY_REQUESTS.into_response(),
                        _ => StatusCode::FORBIDDEN.into_response(),
                    }
                }
            },
        ),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/turn-auth", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, calls, task))
}

#[tokio::test]
async fn http_callout_authorizes_fails_closed_and_never_blocks_other_users() -> anyhow::Result<()> {
    let (url, calls, backend) = callout_backend().await?;
    let port = free_dual_port();
    let _server = turn_server(port)
        .env("RTCPLANE__TURN__AUTH_CALLOUT_URL", &url)
        .env("RTCPLANE__TURN__AUTH_CALLOUT_SECRET", "callout-secret")
        .env("RTCPLANE__TURN__AUTH_CALLOUT_TIMEOUT", "500ms")
        .start()
        .await?;
    // A slow backend answer: fail-closed (500) after the timeout, while alice is served meanwhile.
    let slow = tokio::spawn(async move {
        let t = std::time::Instant::now();
        let r = allocate_as(port, REALM, "slow", "slowpw").await;
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    let alice = allocate_as(port, REALM, "alice", "alicepw").await?;
    let alice_took = t.elapsed();
    assert!(alice.is_ok(), "alice: {:?}", alice.as_ref().err());
    assert!(
        alice_took < Duration::from_millis(400),
        "alice waited {alice_took:?} behind the slow user"
    );
    let (slow_result, slow_took) = slow.await?;
    assert_eq!(slow_result?.err(), Some(500), "fail-closed");
    assert!(
        slow_took >= Duration::from_millis(450) && slow_took < Duration::from_secs(2),
        "{slow_took:?}"
    );
    // Refused users; the quota the backend gave alice (1); her answer came from the cache.
    assert_eq!(
        allocate_as(port, REALM, "denied", "x").await?.err(),
        Some(401)
    );
    assert_eq!(
        allocate_as(port, REALM, "full", "x").await?.err(),
        Some(486)
    );
    assert_eq!(
        allocate_as(port, REALM, "alice", "alicepw").await?.err(),
        Some(486),
        "quota 1 from the callout"
    );
    assert_eq!(
        allocate_as(port, REALM, "alice", "wrong").await?.err(),
        Some(401),
        "wrong password"
    );
    let alice_calls = calls
        .lock()
        .map(|v| v.iter().filter(|u| *u == "alice").count())
        .unwrap_or(0);
    assert_eq!(alice_calls, 1, "cached for auth_callout_cache");
    // Static users never reach the callout.
    assert!(allocate_as(port, REALM, USER, PASS).await?.is_ok());
    assert!(
        !calls
            .lock()
            .map(|v| v.contains(&USER.to_owned()))
            .unwrap_or(true)
    );
    // The backend down: refused at once with 500, static users unaffected.
    backend.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        allocate_as(port, REALM, "newcomer", "x").await?.err(),
        Some(500)
    );
    assert!(allocate_as(port, REALM, USER, PASS).await?.is_ok());
    drop(alice);
    Ok(())
}

/// REST credentials for `user` from `secret`, expiring in `secs`.
fn rest_creds(secret: &str, user: &str, secs: u64) -> (String, String) {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + secs;
    let username = format!("{expiry}:{user}");
    let password = rtcplane_turn_relay::rest_password(secret, &username);
    (username, password)
}

#[tokio::test]
async fn per_user_limit_overrides_from_the_cli_and_the_api_on_every_backend() -> anyhow::Result<()>
{
    use rtcplane_storage::Backend;
    use rtcplane_storage::testing::TestDb;
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let db = TestDb::new(backend).await;
        let port = free_dual_port();
        let server = turn_server(port)
            .storage(&db.url)
            .env("RTCPLANE__TURN__STATIC_AUTH_SECRETS", "rest-secret")
            .start()
            .await?;
        let env = [
            ("RTCPLANE__TURN__REALM", REALM.to_owned()),
            ("RTCPLANE__STORAGE__URL", db.url.clone()),
        ];
        let dir = server.dir.path();
        // The CLI writes and lists overrides; without a flag it refuses.
        let set = run(
            dir,
            &[
                "turn",
                "user",
                "limit",
                "alice",
                "--quota",
                "3",
                "--max-bps",
                "5000",
            ],
            &env,
        );
        assert!(
            set.status.success(),
            "{backend:?}: {}",
            String::from_utf8_lossy(&set.stderr)
        );
        let none = run(dir, &["turn", "user", "limit", "alice"], &env);
        assert_eq!(none.status.code(), Some(1), "{backend:?}");
        assert!(String::from_utf8_lossy(&none.stderr).contains("--quota"));
        let list = run(dir, &["turn", "user", "limits"], &env);
        assert_eq!(
            String::from_utf8_lossy(&list.stdout).trim(),
            format!("{REALM}\talice\tquota=3 max_bps=5000 user_max_bps=-"),
            "{backend:?}"
        );
        // The API reads what the CLI wrote.
        let limits_url = server.admin_url("/api/v1/turn/users/alice/limits");
        let got: serde_json::Value = support::get(&limits_url).await?.json().await?;
        assert_eq!(got["quota"], 3, "{backend:?}: {got}");
        assert_eq!(got["max_bps"], 5000);
        assert!(got["user_max_bps"].is_null());
        assert_eq!(got["realm"], REALM);
        // PUT replaces them and applies at once: quota 1 for the account alice, whatever REST username.
        let put = |body: serde_json::Value| {
            let url = limits_url.clone();
            async move { support::client().put(url).json(&body).send().await }
        };
        let r = put(serde_json::json!({"quota": 1})).await?;
        assert_eq!(r.status(), 200, "{backend:?}");
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["quota"], 1);
        assert!(body["max_bps"].is_null(), "PUT replaces: {body}");
        let (u1, p1) = rest_creds("rest-secret", "alice", 3600);
        let (u2, p2) = rest_creds("rest-secret", "alice", 3601);
        let first = allocate_as(port, REALM, &u1, &p1).await?;
        assert!(first.is_ok(), "{backend:?}: {:?}", first.as_ref().err());
        assert_eq!(
            allocate_as(port, REALM, &u2, &p2).await?.err(),
            Some(486),
            "{backend:?}: the override counts REST usernames under their user"
        );
        // Bad input: clear errors, nothing stored changes.
        assert_eq!(
            put(serde_json::json!({"quota": 2_000_000})).await?.status(),
            400
        );
        assert_eq!(put(serde_json::json!({})).await?.status(), 400);
        assert_eq!(put(serde_json::json!({"qouta": 1})).await?.status(), 422);
        assert_eq!(put(serde_json::json!({"quota": -1})).await?.status(), 422);
        let garbage = support::client()
            .put(&limits_url)
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await?;
        assert_eq!(garbage.status(), 400);
        let err: serde_json::Value = garbage.json().await?;
        assert!(err["error"]["message"].is_string(), "{err}");
        let still: serde_json::Value = support::get(&limits_url).await?.json().await?;
        assert_eq!(still["quota"], 1, "{backend:?}");
        assert_eq!(
            support::get(server.admin_url("/api/v1/turn/users/bob/limits"))
                .await?
                .status(),
            404
        );
        let listed: serde_json::Value =
            support::get(server.admin_url(&format!("/api/v1/turn/limits?realm={REALM}")))
                .await?
                .json()
                .await?;
        assert_eq!(listed["limits"][0]["name"], "alice", "{listed}");
        // DELETE: the configured (unlimited) quota applies again.
        let del = support::client().delete(&limits_url).send().await?;
        assert_eq!(del.status(), 204);
        assert_eq!(
            support::client().delete(&limits_url).send().await?.status(),
            404
        );
        let mut third = None;
        for _ in 0..20 {
            let (u, p) = rest_creds("rest-secret", "alice", 3602);
            match allocate_as(port, REALM, &u, &p).await? {
                Ok(a) => {
                    third = Some(a);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(
            third.is_some(),
            "{backend:?}: no quota after the override is removed"
        );
        let clear = run(dir, &["turn", "user", "limit", "alice", "--clear"], &env);
        assert_eq!(clear.status.code(), Some(1), "nothing left to clear");
        drop(first);
    }
    Ok(())
}
