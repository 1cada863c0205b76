//! Where an account's requests go: the outbound proxy, else DNS SRV (`_sip._udp` / `_sip._tcp`) of the
//! realm, else its A/AAAA records on port 5060 (RFC 3263 without NAPTR).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::Transport;
use crate::sip::transport::Dest;
use crate::sip::uri::ProxyUri;

/// Resolves `target` (an outbound proxy or a realm parsed as a URI) to destinations in preference order.
pub async fn resolve(
    resolver: Option<&TokioResolver>,
    target: &ProxyUri,
    default_transport: Transport,
) -> Result<Vec<Dest>, String> {
    let transport = target.transport.unwrap_or(default_transport);
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![Dest {
            addr: SocketAddr::new(ip, target.port.unwrap_or(5060)),
            transport,
        }]);
    }
    if target.port.is_none()
        && let Some(resolver) = resolver
    {
        let service = match transport {
            Transport::Udp => "_sip._udp",
            Transport::Tcp => "_sip._tcp",
        };
        let name = format!("{service}.{}.", target.host.trim_end_matches('.'));
        if let Ok(lookup) = resolver.lookup(name.as_str(), RecordType::SRV).await {
            let mut srvs: Vec<(u16, u16, u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => {
                        Some((s.priority, u16::MAX - s.weight, s.port, s.target.to_utf8()))
                    }
                    _ => None,
                })
                .collect();
            srvs.sort();
            let mut out = Vec::new();
            for (_, _, port, host) in srvs {
                if host == "." {
                    continue;
                }
                for ip in lookup_host(&host, port).await.unwrap_or_default() {
                    out.push(Dest {
                        addr: ip,
                        transport,
                    });
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
    let addrs = lookup_host(&target.host, target.port.unwrap_or(5060)).await?;
    if addrs.is_empty() {
        return Err(format!("{} has no address", target.host));
    }
    Ok(addrs
        .into_iter()
        .map(|addr| Dest { addr, transport })
        .collect())
}

async fn lookup_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let host = host.trim_end_matches('.');
    tokio::net::lookup_host((host, port))
        .await
        .map(|it| it.collect())
        .map_err(|e| format!("cannot resolve {host}: {e}"))
}

/// A resolver asking `servers` (UDP), or the system's when empty; `None` if the system has no
/// configuration (SRV lookups need one; A/AAAA fall back to the system's getaddrinfo).
pub fn resolver(servers: &[SocketAddr]) -> Option<TokioResolver> {
    if !servers.is_empty() {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let provider = hickory_resolver::net::runtime::TokioRuntimeProvider::default();
        return TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            provider,
        )
        .build()
        .ok();
    }
    match TokioResolver::builder_tokio() {
        Ok(b) => b.build().ok(),
        Err(e) => {
            tracing::info!(error = %e, "no system DNS configuration: SIP realms resolve by A/AAAA only");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_hosts_without_dns() {
        let d = resolve(
            None,
            &ProxyUri::parse("sip:127.0.0.1:5070").expect("uri"),
            Transport::Udp,
        )
        .await
        .expect("resolve");
        assert_eq!(
            d,
            vec![Dest {
                addr: "127.0.0.1:5070".parse().expect("addr"),
                transport: Transport::Udp
            }]
        );
        let d = resolve(
            None,
            &ProxyUri::parse("sip:[::1];transport=tcp").expect("uri"),
            Transport::Udp,
        )
        .await
        .expect("resolve");
        assert_eq!(d[0].addr, "[::1]:5060".parse().expect("addr"));
        assert_eq!(d[0].transport, Transport::Tcp);
        let d = resolve(
            None,
            &ProxyUri::parse("localhost:5070").expect("uri"),
            Transport::Udp,
        )
        .await
        .expect("localhost from /etc/hosts");
        assert!(
            d.iter()
                .all(|d| d.addr.ip().is_loopback() && d.addr.port() == 5070)
        );
        assert!(
            resolve(
                None,
                &ProxyUri::parse("no-such-host.invalid").expect("uri"),
                Transport::Udp
            )
            .await
            .is_err()
        );
    }
}
