//! TLS from PEM files, for `https://` relay URLs (`wss://` WebSockets).

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::{RelayError, TlsFiles};

/// Loads the certificate chain and key and builds the acceptor (HTTP/1.1 only, as ALPN);
/// also returns the leaf certificate, whose names are the relay's own.
pub(crate) fn acceptor(
    files: &TlsFiles,
) -> Result<(TlsAcceptor, CertificateDer<'static>), RelayError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RelayError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(RelayError::Tls(format!(
            "{}: no certificate found",
            files.cert.display()
        )));
    }
    let leaf = certs[0].clone();
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| RelayError::Tls(format!("{}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), leaf))
}
