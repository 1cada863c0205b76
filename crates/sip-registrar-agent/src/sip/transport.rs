//! Sockets: one UDP socket for every account, TCP connections per destination made on demand. Received
//! messages are parsed here (off the agent's task) and handed to the agent as [`Inbound`]s.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Transport;
use crate::metrics as m;
use crate::sip::message::{MAX_MESSAGE, Response, frame_len, parse_response};

/// A destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    /// Address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// What the sockets tell the agent.
#[derive(Debug)]
pub enum Inbound {
    /// A parsed response.
    Response(Box<Response>),
    /// A TCP connection to this destination failed or closed: its transactions cannot complete.
    Broken(Dest),
}

/// The agent's sockets.
#[derive(Debug)]
pub struct Sockets {
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    local_ips: Mutex<HashMap<IpAddr, IpAddr>>,
    shutdown: CancellationToken,
}

const TCP_QUEUE: usize = 4096;

impl Sockets {
    /// Binds `listen` (UDP) and starts its receive loop.
    pub async fn bind(
        listen: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> io::Result<Arc<Self>> {
        let udp = Arc::new(UdpSocket::bind(listen).await?);
        let local = udp.local_addr()?;
        let this = Arc::new(Self {
            udp: udp.clone(),
            local,
            inbound: inbound.clone(),
            tcp: Mutex::new(HashMap::new()),
            local_ips: Mutex::new(HashMap::new()),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(udp_loop(udp, inbound, shutdown));
        Ok(this)
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The local IP that reaches `to` (the listen IP unless that is unspecified).
    pub fn local_ip_for(&self, to: IpAddr) -> IpAddr {
        if !self.local.ip().is_unspecified() {
            return self.local.ip();
        }
        if let Ok(mut cache) = self.local_ips.lock() {
            if let Some(ip) = cache.get(&to) {
                return *ip;
            }
            let bind: SocketAddr = if to.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let found = std::net::UdpSocket::bind(bind)
                .and_then(|s| s.connect((to, 9)).and_then(|()| s.local_addr()))
                .map(|a| a.ip())
                .unwrap_or(to);
            cache.insert(to, found);
            return found;
        }
        to
    }

    /// Sends a request. UDP never waits (a full socket buffer loses the datagram; Timer E resends it); TCP
    /// queues it on the destination's connection, opened on first use.
    pub fn send(&self, dest: Dest, bytes: Vec<u8>) -> io::Result<()> {
        match dest.transport {
            Transport::Udp => match self.udp.try_send_to(&bytes, dest.addr) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    metrics::counter!(m::SEND_WOULD_BLOCK).increment(1);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Transport::Tcp => {
                let mut map = self
                    .tcp
                    .lock()
                    .map_err(|_| io::Error::other("tcp table poisoned"))?;
                if let Some(tx) = map.get(&dest.addr) {
                    match tx.try_send(bytes) {
                        Ok(()) => return Ok(()),
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            return Err(io::Error::other("tcp send queue full"));
                        }
                        Err(mpsc::error::TrySendError::Closed(b)) => {
                            map.remove(&dest.addr);
                            return self.open_tcp(&mut map, dest, b);
                        }
                    }
                }
                self.open_tcp(&mut map, dest, bytes)
            }
        }
    }

    fn open_tcp(
        &self,
        map: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
        dest: Dest,
        first: Vec<u8>,
    ) -> io::Result<()> {
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        tx.try_send(first)
            .map_err(|_| io::Error::other("tcp send queue"))?;
        map.insert(dest.addr, tx);
        let local_ip = self.local_ip_for(dest.addr.ip());
        tokio::spawn(tcp_connection(
            dest,
            local_ip,
            rx,
            self.inbound.clone(),
            self.shutdown.clone(),
        ));
        Ok(())
    }
}

async fn udp_loop(
    udp: Arc<UdpSocket>,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let got = tokio::select! {
            () = shutdown.cancelled() => return,
            r = udp.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, _from)) => deliver(&buf[..n], &inbound).await,
            // ICMP port unreachable and the like surface as errors on some systems; keep receiving.
            Err(e) => {
                tracing::debug!(error = %e, "sip udp receive");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

async fn deliver(bytes: &[u8], inbound: &mpsc::Sender<Inbound>) {
    // Keep-alive CRLFs are not messages.
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return;
    }
    match parse_response(bytes) {
        Ok(r) => {
            let _ = inbound.send(Inbound::Response(Box::new(r))).await;
        }
        Err(e) => {
            metrics::counter!(m::MALFORMED).increment(1);
            tracing::debug!(error = %e, "ignored a SIP message");
        }
    }
}

async fn tcp_connection(
    dest: Dest,
    local_ip: IpAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) {
    let connect = async {
        let socket = if local_ip.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if !local_ip.is_unspecified() && local_ip.is_ipv4() == dest.addr.is_ipv4() {
            socket.bind(SocketAddr::new(local_ip, 0))?;
        }
        socket.connect(dest.addr).await
    };
    let stream: TcpStream = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(dest = %dest.addr, error = %e, "sip tcp connect failed");
            let _ = inbound.send(Inbound::Broken(dest)).await;
            return;
        }
        Err(_) => {
            tracing::info!(dest = %dest.addr, "sip tcp connect timed out");
            let _ = inbound.send(Inbound::Broken(dest)).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            msg = outgoing.recv() => match msg {
                Some(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => return,
            },
            n = reader.read(&mut chunk) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        // Leading CRLFs are keep-alives (RFC 5626).
                        let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        buf.drain(..skip);
                        match frame_len(&buf) {
                            Ok(Some(len)) => {
                                let msg: Vec<u8> = buf.drain(..len).collect();
                                deliver(&msg, &inbound).await;
                            }
                            Ok(None) => break,
                            Err(_) => {
                                metrics::counter!(m::MALFORMED).increment(1);
                                let _ = inbound.send(Inbound::Broken(dest)).await;
                                return;
                            }
                        }
                    }
                }
            },
        }
    }
    let _ = inbound.send(Inbound::Broken(dest)).await;
}
