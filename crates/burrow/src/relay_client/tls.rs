//! TLS for `https://` relays (and registries): rustls with the ring provider, the web PKI roots
//! and any extra roots from the options.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::RelayClientOptions;

/// Why TLS to a relay or registry could not be set up or failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An extra root certificate from the options was refused.
    #[error("extra root certificate #{index} is not usable")]
    ExtraRoot {
        /// Its place in the list.
        index: usize,
        /// Why.
        source: rustls::Error,
    },
    /// Neither the web PKI roots nor extra roots are trusted.
    #[error("no trusted root certificates for https:// relays")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS setup")]
    Setup(#[source] rustls::Error),
    /// The configuration could not be built (shared by every connection that needs it).
    #[error(transparent)]
    Config(Arc<TlsError>),
    /// The host cannot be checked against a certificate.
    #[error("{host:?} is not a valid TLS server name")]
    ServerName {
        /// The host.
        host: String,
        /// Why.
        source: InvalidDnsNameError,
    },
    /// The handshake failed.
    #[error("TLS")]
    Handshake(#[source] std::io::Error),
}

/// The TLS client configuration, or why there is none (reported on each https relay).
pub(crate) type TlsConfig = Result<Arc<ClientConfig>, Arc<TlsError>>;

/// Builds the configuration once per client.
pub(super) fn client_config(opts: &RelayClientOptions) -> TlsConfig {
    client_config_with(opts.webpki_roots, &opts.extra_roots)
}

/// Builds a configuration trusting the web PKI roots (if `webpki_roots`) and `extra_roots`
/// (DER).
pub(crate) fn client_config_with(webpki_roots: bool, extra_roots: &[Vec<u8>]) -> TlsConfig {
    build(webpki_roots, extra_roots).map_err(Arc::new)
}

fn build(webpki_roots: bool, extra_roots: &[Vec<u8>]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (index, der) in extra_roots.iter().enumerate() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|source| TlsError::ExtraRoot { index, source })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    // An explicit provider: the process-wide default may be unset or ambiguous when other
    // crates in the program enable other rustls providers.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on a connected socket; `host` is checked against the certificate
/// (a DNS name, or an IP address for IP SANs).
pub(crate) async fn connect(
    config: &TlsConfig,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let config = config.as_ref().map_err(|e| TlsError::Config(e.clone()))?;
    let name = ServerName::try_from(host.to_string()).map_err(|source| TlsError::ServerName {
        host: host.to_string(),
        source,
    })?;
    TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(TlsError::Handshake)
}
