//! Hiding credentials in URLs before they reach a log line or `check-config`.

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; also hides `password=` query values.
/// URLs without credentials come back unchanged.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let authority_end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                {
                    format!("{k}=***")
                }
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{base}{query}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact_url(input), expected, "{input}");
    }

    #[test]
    fn hides_passwords() {
        check(
            "postgres://app:s3cr%40t@db:5432/rtc",
            "postgres://app:***@db:5432/rtc",
        );
        check(
            "redis://:pw@127.0.0.1:6379/0",
            "redis://:***@127.0.0.1:6379/0",
        );
        check("mysql://root@127.0.0.1/test", "mysql://root@127.0.0.1/test");
        check("sqlite:./data/rtcplane.db", "sqlite:./data/rtcplane.db");
        check(
            "postgres://h/db?user=a&password=b&sslmode=require",
            "postgres://h/db?user=a&password=***&sslmode=require",
        );
        check("postgres://u:p@h/db?x=@y", "postgres://u:***@h/db?x=@y");
    }
}
