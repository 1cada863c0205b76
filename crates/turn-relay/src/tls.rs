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
