//! Pure helpers over request values: JavaScript's `parseInt` (loop-server reads every number with it, so
//! `"3"` and `3` are the same and `"3abc"` is 3), UTF-16 lengths (JavaScript's `.length`), the derived
//! session state of spec §5.

use serde_json::Value;

/// `parseInt(value, 10)` as loop-server applies it: numbers are truncated, strings read up to the first
/// non-digit after optional leading whitespace and sign; anything else (or no digit) is None (`NaN`).
pub fn parse_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                // `as` saturates, which is what a huge number should become here.
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => parse_int_str(s),
        _ => None,
    }
}

fn parse_int_str(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let mut n: i64 = 0;
    for b in digits[..end].bytes() {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    Some(if neg { -n } else { n })
}

/// A string's length as JavaScript counts it (UTF-16 code units).
pub fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The state a client reports for its counters (spec §5: `≠0` is JavaScript truthiness, so negative
/// counts are "non-zero").
pub fn derived_state(send_streams: i64, recv_streams: i64) -> &'static str {
    match (send_streams != 0, recv_streams != 0) {
        (true, true) => "sendrecv",
        (true, false) => "sending",
        (false, true) => "receiving",
        (false, false) => "starting",
    }
}

/// A JSON value as text for storage: strings as they are, anything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value, want: Option<i64>) {
        assert_eq!(parse_int(&v), want, "{v}");
    }

    #[test]
    fn parse_int_is_javascripts() {
        check(json!(3), Some(3));
        check(json!("3"), Some(3));
        check(json!("3abc"), Some(3));
        check(json!("  42"), Some(42));
        check(json!("-1"), Some(-1));
        check(json!("+7"), Some(7));
        check(json!(2.9), Some(2));
        check(json!(-2.9), Some(-2));
        check(json!("abc"), None);
        check(json!(""), None);
        check(json!("-"), None);
        check(json!(null), None);
        check(json!(true), None);
        check(json!({}), None);
        check(json!("99999999999999999999999"), Some(i64::MAX));
    }

    #[test]
    fn derived_states_follow_the_table() {
        assert_eq!(derived_state(1, 1), "sendrecv");
        assert_eq!(derived_state(1, 0), "sending");
        assert_eq!(derived_state(0, 2), "receiving");
        assert_eq!(derived_state(0, 0), "starting");
        assert_eq!(derived_state(-1, 0), "sending");
    }

    #[test]
    fn lengths_count_utf16_units() {
        assert_eq!(js_len("abc"), 3);
        assert_eq!(js_len("é"), 1);
        assert_eq!(js_len("😀"), 2);
    }
}
