//! The SIP agent's parsers on arbitrary bytes: a response (UDP datagram), TCP stream framing, the digest
//! challenges and Contact expiries of whatever parses. Any panic is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use rtcplane_sip_registrar_agent::sip::{digest, message};
    let _ = message::frame_len(data);
    if let Ok(r) = message::parse_response(data) {
        assert!((100..700).contains(&r.code));
        for v in r.www_authenticate.iter().chain(&r.proxy_authenticate) {
            if let Ok(c) = digest::Challenge::parse(v) {
                let _ = c.authorization("u", "p", "REGISTER", "sip:example.org", 1, "c");
            }
        }
        let _ = message::granted_expiry(&r, "sip:u@127.0.0.1:5060");
        for c in &r.contacts {
            let _ = message::contact_uri(c);
            let _ = message::contact_expires(c);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = digest::Challenge::parse(text);
        let _ = rtcplane_sip_registrar_agent::sip::uri::ProxyUri::parse(text);
    }
});
