//! TLS listeners (`listen_tls`, `tls_cert`, `tls_key`): rustls with the ring provider.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ConfigError;

/// Loads the certificate chain and key and builds the acceptor; errors name the key at fault.
pub(crate) fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ConfigError {
            key: "tls_cert",
            message: format!("cannot read certificates from {cert:?}: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ConfigError {
            key: "tls_cert",
            message: format!("{cert:?} holds no certificate"),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| ConfigError {
        key: "tls_key",
        message: format!("cannot read a private key from {key:?}: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| ConfigError {
            key: "tls_key",
            message: format!("certificate and key do not form a usable pair: {e}"),
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The negotiated version and cipher suite in OpenSSL's names (`TLSv1.3`, `TLS_AES_256_GCM_SHA384`,
/// `ECDHE-RSA-AES128-GCM-SHA256`), which coturn reports in its Redis status (`ssl=…, cipher=…`).
pub(crate) fn session_names(conn: &rustls::ServerConnection) -> Option<(String, String)> {
    let version = match conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    };
    let rustls_name = format!("{:?}", conn.negotiated_cipher_suite()?.suite());
    Some((version, openssl_cipher(&rustls_name)))
}

fn openssl_cipher(rustls_name: &str) -> String {
    match rustls_name {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cipher_names_are_openssls() {
        assert_eq!(
            super::openssl_cipher("TLS13_AES_256_GCM_SHA384"),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            super::openssl_cipher("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }
}
