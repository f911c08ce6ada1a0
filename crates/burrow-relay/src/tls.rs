//! TLS from PEM files, for `https://` relay URLs (`wss://` WebSockets).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::TlsFiles;

/// Why the relay's TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file could not be read as PEM.
    #[error("{}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate found", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key")]
    Rustls(#[source] rustls::Error),
}

/// Loads the certificate chain and key and builds the acceptor (HTTP/1.1 only, as ALPN);
/// also returns the leaf certificate, whose names are the relay's own.
pub(crate) fn acceptor(
    files: &TlsFiles,
) -> Result<(TlsAcceptor, CertificateDer<'static>), TlsFileError> {
    let pem_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| TlsFileError::Pem { path, source }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(pem_error(&files.cert))?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let leaf = certs[0].clone();
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_error(&files.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsFileError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsFileError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), leaf))
}
