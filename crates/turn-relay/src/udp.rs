//! The relay's UDP socket: registered with tokio for readability only.
//!
//! `tokio::net::UdpSocket` registers every socket for reading and writing (edge-triggered `EPOLLOUT` too).
//! A datagram socket is writable nearly always, so that buys nothing, and it costs on every send: when
//! the kernel frees a sent datagram (at once, on loopback) the socket's write space callback finds the
//! epoll entry interested in `EPOLLOUT`, puts it on the ready list, and the next `epoll_wait` hands tokio
//! an event it has no use for (under the bench's light echo load: 23,000 events for 40,000 datagrams, where
//! coturn, registered for reading only, got 15,800). At the multi-thread scheduler's defaults the entry
//! can also wake a parked worker for nothing.
//!
//! Sends are tried at once (`try_send_to`). The rare full send buffer is waited out by polling every
//! millisecond, for at most [`SEND_WAIT`]: nothing tells a socket registered for reading when it has room.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};

/// The longest a send waits for room in a full socket buffer before it gives up (`WouldBlock`).
pub(crate) const SEND_WAIT: Duration = Duration::from_millis(50);

/// A nonblocking UDP socket that tokio polls for readability only (see the module's documentation).
#[derive(Debug)]
pub(crate) struct UdpSocket {
    fd: AsyncFd<std::net::UdpSocket>,
}

/// Readiness of a [`UdpSocket`] to read, as returned by [`UdpSocket::readable`].
pub(crate) type Readable<'a> = AsyncFdReadyGuard<'a, std::net::UdpSocket>;

impl UdpSocket {
    /// Binds `addr` and registers the socket with the current runtime (binding a UDP socket does not block).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Registers `socket` with the current runtime, for reading.
    // `with_interest` is deprecated for any `T: AsRawFd` because such a T could close or swap its descriptor
    // while registered; its replacement is an `unsafe fn` whose contract is exactly that it does not. A
    // `std::net::UdpSocket` owns its descriptor until dropped, which the `AsyncFd` does last, so the call
    // is sound here and the crate stays free of `unsafe`.
    #[allow(deprecated)]
    pub(crate) fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            fd: AsyncFd::with_interest(socket, Interest::READABLE)?,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Sends now or fails (`WouldBlock` when the send buffer is full).
    pub(crate) fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.fd.get_ref().send_to(buf, to)
    }

    /// Sends, waiting up to [`SEND_WAIT`] for room in a full send buffer.
    pub(crate) async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let deadline = tokio::time::Instant::now() + SEND_WAIT;
        loop {
            match self.try_send_to(buf, to) {
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                r => return r,
            }
        }
    }

    /// Waits until the socket may have a datagram to read.
    pub(crate) async fn readable(&self) -> io::Result<Readable<'_>> {
        self.fd.readable().await
    }

    /// Receives one datagram, waiting for it.
    pub(crate) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.readable().await?;
            if let Ok(r) = ready.try_io(|s| s.get_ref().recv_from(buf)) {
                return r;
            }
        }
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_and_receives_both_ways() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind a");
        let b = UdpSocket::bind("[::1]:0".parse().expect("addr")).expect("bind b");
        let b4 = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind b4");
        let mut buf = [0_u8; 64];
        a.send_to(b"ping", b4.local_addr().expect("addr"))
            .await
            .expect("send");
        let (n, from) = b4.recv_from(&mut buf).await.expect("recv");
        assert_eq!(
            (&buf[..n], from),
            (&b"ping"[..], a.local_addr().expect("a"))
        );
        b4.try_send_to(b"pong", from).expect("try send");
        let (n, _) = a.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"pong");
        assert!(b.local_addr().expect("b").is_ipv6());
    }

    /// The events each epoll instance of this process watches the socket `fd` for (from /proc/self/fdinfo),
    /// matched by inode too: another test's epoll may still list a closed socket that had the same number.
    fn epoll_events(fd: i32) -> Vec<u32> {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("fd link");
        let inode: u64 = link
            .to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .expect("socket inode");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").expect("fds").flatten() {
            let is_epoll = std::fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy().contains("eventpoll"));
            if !is_epoll {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            for line in info.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let after = |key: &str| {
                    fields
                        .iter()
                        .position(|f| *f == key)
                        .and_then(|i| fields.get(i + 1))
                        .copied()
                };
                // `ino:<hex>` is one field on these lines.
                let ino = fields
                    .iter()
                    .find_map(|f| f.strip_prefix("ino:"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                if after("tfd:") == Some(&fd.to_string()) && ino == Some(inode) {
                    let events = after("events:").expect("events");
                    found.push(u32::from_str_radix(events, 16).expect("hex"));
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn registered_for_reading_only() {
        use std::os::fd::AsRawFd;
        const EPOLLIN: u32 = 0x1;
        const EPOLLOUT: u32 = 0x4;
        let ours = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let events = epoll_events(ours.as_fd().as_raw_fd());
        assert!(!events.is_empty(), "registered");
        assert!(
            events.iter().all(|e| e & (EPOLLIN | EPOLLOUT) == EPOLLIN),
            "{events:x?}"
        );
        // What tokio's own socket asks for: the check can tell the difference.
        let tokio_socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let events = epoll_events(tokio_socket.as_raw_fd());
        assert!(events.iter().any(|e| e & EPOLLOUT != 0), "{events:x?}");
    }
}
