//! Where requests go: the outbound proxy URI and the host:port forms the agent handles (pure).

use crate::config::Transport;

/// A parsed `outbound_proxy` (or realm) destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyUri {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// `;transport=` parameter, if any.
    pub transport: Option<Transport>,
}

impl ProxyUri {
    /// Parses `sip:host[:port][;transport=udp|tcp]` (or the same without `sip:`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_start_matches('<').trim_end_matches('>');
        let rest = if let Some(r) = strip_prefix_ci(s, "sip:") {
            r
        } else if strip_prefix_ci(s, "sips:").is_some() {
            return Err("sips: (TLS) is not supported; use sip: with udp or tcp".into());
        } else if s.contains("://") {
            return Err(format!(
                "{s:?} is not a SIP URI (sip:host[:port][;transport=tcp])"
            ));
        } else {
            s
        };
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or_default();
        let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
        let mut transport = None;
        for param in parts {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            if k.eq_ignore_ascii_case("transport") {
                transport = Some(match v.to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    other => return Err(format!("transport={other} is not supported (udp, tcp)")),
                });
            }
        }
        let (host, port) = split_hostport(hostport)?;
        Ok(Self {
            host,
            port,
            transport,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_hostport(s: &str) -> Result<(String, Option<u16>), String> {
    if s.is_empty() {
        return Err("empty host".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing ]"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => return Err(format!("{s:?}: unexpected text after ]")),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Ok((s.to_string(), None)), // bare IPv6
        Some((host, port)) => Ok((host.to_string(), Some(parse_port(port)?))),
        None => Ok((s.to_string(), None)),
    }
    .and_then(|(h, p)| {
        if h.is_empty()
            || h.chars()
                .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '"' | ',' | '@' | '/'))
        {
            Err(format!("{h:?} is not a host"))
        } else {
            Ok((h, p))
        }
    })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port")),
        Ok(n) => Ok(n),
    }
}

/// `[host]` for an IPv6 literal, else `host` as is (also `host:port`), for a URI or Via.
pub fn bracket(host: &str) -> std::borrow::Cow<'_, str> {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_forms() {
        let p = ProxyUri::parse("sip:127.0.0.1:5070").expect("ok");
        assert_eq!(
            (p.host.as_str(), p.port, p.transport),
            ("127.0.0.1", Some(5070), None)
        );
        let p = ProxyUri::parse("sip:proxy.example.net;transport=TCP;lr").expect("ok");
        assert_eq!(
            (p.host.as_str(), p.port, p.transport),
            ("proxy.example.net", None, Some(Transport::Tcp))
        );
        let p = ProxyUri::parse("<sip:[::1]:5080>").expect("ok");
        assert_eq!((p.host.as_str(), p.port), ("::1", Some(5080)));
        let p = ProxyUri::parse("10.0.0.2").expect("ok");
        assert_eq!((p.host.as_str(), p.port), ("10.0.0.2", None));
        assert!(ProxyUri::parse("sips:x").is_err());
        assert!(ProxyUri::parse("http://x").is_err());
        assert!(ProxyUri::parse("sip:x:0").is_err());
        assert!(ProxyUri::parse("sip:x;transport=sctp").is_err());
        assert!(ProxyUri::parse("sip:").is_err());
        assert_eq!(bracket("::1"), "[::1]");
        assert_eq!(bracket("example.org:5070"), "example.org:5070");
        assert_eq!(bracket("[::1]:5070"), "[::1]:5070");
    }
}
