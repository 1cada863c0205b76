//! Socket options the relay sets on its UDP sockets: batched receives (quinn-udp) without quinn-udp's
//! "never fragment", DONT-FRAGMENT (RFC 8656 §7.2) on the relayed sockets of allocations that ask for it,
//! and the listeners' buffer sizes.
//!
//! quinn-udp is made for QUIC, which sizes its own packets: setting a socket up for `recvmmsg` also sets
//! `IP_PMTUDISC_PROBE` (and on IPv6 sockets `IPV6_PMTUDISC_PROBE` and `IPV6_DONTFRAG`), so a datagram
//! larger than the interface MTU would be refused (`EMSGSIZE`) instead of fragmented. A relay forwards
//! other people's datagrams and must fragment them as any UDP socket does (coturn clears DF on its relayed
//! sockets), unless the client asked for DONT-FRAGMENT.

use std::os::fd::AsFd;

use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};

/// A socket's fragmentation settings, as read before changing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragmentation {
    /// IP_MTU_DISCOVER (on IPv6 sockets too: it governs IPv4-mapped destinations).
    v4: Option<Ipv4PathMtuDiscovery>,
    /// IPV6_MTU_DISCOVER and IPV6_DONTFRAG, on IPv6 sockets.
    v6: Option<(Ipv6PathMtuDiscovery, bool)>,
}

impl Fragmentation {
    /// The socket's current settings; an option the socket does not have is left out.
    pub(crate) fn read<S: AsFd>(socket: &S, ipv6: bool) -> Self {
        Self {
            v4: sockopt::ip_mtu_discover(socket).ok(),
            v6: if ipv6 {
                sockopt::ipv6_mtu_discover(socket).ok().zip(
                    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::Ipv6DontFrag)
                        .ok(),
                )
            } else {
                None
            },
        }
    }

    /// Sets the settings read by [`Fragmentation::read`] again.
    pub(crate) fn restore<S: AsFd>(&self, socket: &S) -> std::io::Result<()> {
        if let Some(v4) = self.v4 {
            sockopt::set_ip_mtu_discover(socket, v4)?;
        }
        if let Some((mode, dont_frag)) = self.v6 {
            sockopt::set_ipv6_mtu_discover(socket, mode)?;
            nix::sys::socket::setsockopt(
                socket,
                nix::sys::socket::sockopt::Ipv6DontFrag,
                &dont_frag,
            )?;
        }
        Ok(())
    }
}

/// quinn-udp's receive state for `socket` (`recvmmsg`, GRO), with the socket's fragmentation settings as
/// they were before (see the module's documentation).
pub(crate) fn batched_receive<S: AsFd>(
    socket: &S,
    ipv6: bool,
) -> std::io::Result<quinn_udp::UdpSocketState> {
    let saved = Fragmentation::read(socket, ipv6);
    let state = quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(socket))?;
    saved.restore(socket)?;
    Ok(state)
}

/// DONT-FRAGMENT: every datagram sent from `socket` carries DF (IPv4) or is never fragmented by this host
/// (IPv6); one larger than the path MTU is refused by the kernel and dropped (counted), not fragmented.
pub(crate) fn forbid_fragmentation<S: AsFd>(socket: &S, ipv6: bool) -> std::io::Result<()> {
    if ipv6 {
        sockopt::set_ipv6_mtu_discover(socket, Ipv6PathMtuDiscovery::DO)?;
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Ipv6DontFrag, &true)?;
        // An IPv6 socket that is not v6-only also sends to IPv4-mapped peers.
        let _ = sockopt::set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::DO);
        Ok(())
    } else {
        Ok(sockopt::set_ip_mtu_discover(
            socket,
            Ipv4PathMtuDiscovery::DO,
        )?)
    }
}

/// Buffer sizes as the kernel reports them: Linux reports twice the size set (the other half is its
/// bookkeeping), capped at `net.core.rmem_max` / `net.core.wmem_max` before doubling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Buffers {
    pub(crate) recv: usize,
    pub(crate) send: usize,
}

impl Buffers {
    /// Did the kernel give less than `asked` (in either direction)?
    pub(crate) fn capped(&self, asked: usize) -> bool {
        self.recv < asked.saturating_mul(2) || self.send < asked.saturating_mul(2)
    }
}

/// Asks for `bytes` of receive and send buffer on `socket` (SO_RCVBUF, SO_SNDBUF) and returns what it got.
/// The system's caps are respected (no SO_RCVBUFFORCE): they are the operator's to raise.
pub(crate) fn set_buffers<S: AsFd>(socket: &S, bytes: usize) -> std::io::Result<Buffers> {
    sockopt::set_socket_recv_buffer_size(socket, bytes)?;
    sockopt::set_socket_send_buffer_size(socket, bytes)?;
    Ok(Buffers {
        recv: sockopt::socket_recv_buffer_size(socket)?,
        send: sockopt::socket_send_buffer_size(socket)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn socket(addr: &str) -> tokio::net::UdpSocket {
        tokio::net::UdpSocket::bind(addr).await.expect("bind")
    }

    #[tokio::test]
    async fn batched_receive_keeps_the_sockets_fragmentation() {
        for (addr, ipv6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            let s = socket(addr).await;
            let before = Fragmentation::read(&s, ipv6);
            assert!(before.v4.is_some(), "{addr}: IP_MTU_DISCOVER readable");
            assert_eq!(before.v6.is_some(), ipv6, "{addr}");
            // What quinn-udp does alone: fragmentation forbidden.
            let bare = socket(addr).await;
            quinn_udp::UdpSocketState::new(quinn_udp::UdpSockRef::from(&bare)).expect("quinn");
            assert_ne!(
                Fragmentation::read(&bare, ipv6),
                before,
                "{addr}: quinn-udp changes it"
            );
            batched_receive(&s, ipv6).expect("batched receive");
            assert_eq!(Fragmentation::read(&s, ipv6), before, "{addr}: restored");
        }
    }

    #[tokio::test]
    async fn dont_fragment_sets_df() {
        let v4 = socket("127.0.0.1:0").await;
        forbid_fragmentation(&v4, false).expect("v4");
        assert_eq!(
            sockopt::ip_mtu_discover(&v4).ok(),
            Some(Ipv4PathMtuDiscovery::DO)
        );
        let v6 = socket("[::1]:0").await;
        forbid_fragmentation(&v6, true).expect("v6");
        assert_eq!(
            Fragmentation::read(&v6, true).v6,
            Some((Ipv6PathMtuDiscovery::DO, true))
        );
    }

    fn sysctl(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .expect("sysctl")
            .trim()
            .parse()
            .expect("number")
    }

    #[tokio::test]
    async fn listener_buffers_are_set_and_caps_reported() {
        let (rmem_max, wmem_max) = (sysctl("rmem_max"), sysctl("wmem_max"));
        let s = socket("127.0.0.1:0").await;
        let default = Buffers {
            recv: sockopt::socket_recv_buffer_size(&s).expect("rcvbuf"),
            send: sockopt::socket_send_buffer_size(&s).expect("sndbuf"),
        };
        // Within the caps: granted (reported doubled), and different from what the socket had.
        let asked = rmem_max.min(wmem_max).min(1 << 20);
        let got = set_buffers(&s, asked).expect("set");
        assert_eq!(
            got,
            Buffers {
                recv: 2 * asked,
                send: 2 * asked
            }
        );
        assert!(!got.capped(asked));
        assert_ne!(got, default);
        // Beyond the caps: what the caps allow, and said to be capped.
        let beyond = rmem_max.max(wmem_max) * 2;
        let got = set_buffers(&s, beyond).expect("set");
        assert_eq!(
            got,
            Buffers {
                recv: 2 * rmem_max,
                send: 2 * wmem_max
            }
        );
        assert!(got.capped(beyond));
    }
}
