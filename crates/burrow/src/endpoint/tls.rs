//! TLS 1.3 for QUIC in which both sides prove their [`NodeId`]: no CA, no names.
//!
//! Each side presents its node's Ed25519 key as an RFC 7250 raw public key (a bare
//! SubjectPublicKeyInfo instead of an X.509 certificate) and signs the handshake with it. The
//! client accepts only the node it meant to dial; the server accepts any node and the
//! application reads which one with [`peer_node_id`]. Both sides check the peer's
//! CertificateVerify signature with rustls' ring verifiers, so a peer cannot claim a key it
//! does not hold.

use std::sync::Arc;

use ed25519_dalek::Signer as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{AlwaysResolvesClientRawPublicKeys, Resumption};
use rustls::crypto::{
    verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{AlwaysResolvesServerRawPublicKeys, NoServerSessionStorage};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, PeerIncompatible,
    SignatureAlgorithm, SignatureScheme,
};

use super::transport_config;
use crate::{NodeId, SecretKey};

/// The server name given to quinn's `connect`. Peers are checked by key, so the name carries
/// no meaning and is not sent (SNI is off).
pub(crate) const SERVER_NAME: &str = "burrow";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a TLS configuration could not be built, or why a handshake rejected the peer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// QUIC requires ALPN (RFC 9001 §8.1), so an empty list could never connect.
    #[error("no ALPN protocols given")]
    NoAlpn,
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC's Initial packets use.
    #[error("QUIC TLS configuration")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The dialled server proved a different key; becomes the reason of the connection error.
    #[error("peer is {presented}, expected {expected}")]
    WrongPeer {
        /// The node the client dialled.
        expected: NodeId,
        /// The node the server proved to be.
        presented: NodeId,
    },
}

/// Server side of every endpoint (accepts any authenticated peer key).
pub(crate) fn server_config(
    key: &SecretKey,
    alpns: &[Vec<u8>],
) -> Result<quinn::ServerConfig, TlsError> {
    server_config_with(certified_key(key), alpns)
}

/// Client side, dialling the node `peer`.
pub(crate) fn client_config(
    key: &SecretKey,
    peer: NodeId,
    alpns: &[Vec<u8>],
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with(certified_key(key), peer, alpns)
}

/// The key the peer proved in the handshake.
pub(crate) fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    node_id_from_spki(certs.first()?)
}

fn server_config_with(
    certified: Arc<CertifiedKey>,
    alpns: &[Vec<u8>],
) -> Result<quinn::ServerConfig, TlsError> {
    if alpns.is_empty() {
        return Err(TlsError::NoAlpn);
    }
    let provider = provider();
    let verifier = Arc::new(AnyNodeVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(certified)));
    config.alpn_protocols = alpns.to_vec();
    // Our clients never resume, so session tickets would be wasted bytes.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config());
    // A peer keeps one made-up address for good, whichever path carries it: a connection
    // that shows up at another peer's address is misfiled traffic, never a migration.
    server.migration(false);
    Ok(server)
}

fn client_config_with(
    certified: Arc<CertifiedKey>,
    peer: NodeId,
    alpns: &[Vec<u8>],
) -> Result<quinn::ClientConfig, TlsError> {
    if alpns.is_empty() {
        return Err(TlsError::NoAlpn);
    }
    let provider = provider();
    let verifier = Arc::new(ExactNodeVerifier {
        expected: peer,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(certified)));
    config.alpn_protocols = alpns.to_vec();
    // No resumption: a resumed handshake skips both key checks and trusts the peer rustls
    // cached under the server name, which is the same SERVER_NAME for every node.
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config());
    Ok(client)
}

/// An explicit provider: the process-wide default may be unset or ambiguous when other crates
/// in the program enable other rustls providers.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node key as a raw public key that signs with itself.
fn certified_key(key: &SecretKey) -> Arc<CertifiedKey> {
    let spki = spki(&key.node_id());
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki)],
        Arc::new(NodeKey(Arc::new(key.clone()))),
    ))
}

fn spki(id: &NodeId) -> Vec<u8> {
    [&ED25519_SPKI_PREFIX[..], id.as_bytes()].concat()
}

/// The node whose key `der` (a raw public key) holds, if it is an Ed25519 point.
fn node_id_from_spki(der: &[u8]) -> Option<NodeId> {
    let key = der.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    NodeId::from_bytes(key.try_into().ok()?).ok()
}

/// The presented raw public key as a node, checking it is the only entry.
fn presented_node(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<NodeId, rustls::Error> {
    match node_id_from_spki(end_entity) {
        Some(id) if intermediates.is_empty() => Ok(id),
        _ => Err(CertificateError::BadEncoding.into()),
    }
}

/// Checks a TLS 1.3 handshake signature against the raw public key `der`.
fn verify_signature(
    message: &[u8],
    der: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let spki = SubjectPublicKeyInfoDer::from(der.as_ref());
    verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms)
}

/// The node's Ed25519 key, signing handshakes with ed25519-dalek (rustls' ring signer would
/// need the key as PKCS#8).
#[derive(Debug, Clone)]
struct NodeKey(Arc<SecretKey>);

impl SigningKey for NodeKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(spki(&self.0.node_id()).into())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for NodeKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.0.signing_key().sign(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Client side: the server must be the dialled node.
#[derive(Debug)]
struct ExactNodeVerifier {
    expected: NodeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExactNodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = presented_node(end_entity, intermediates)?;
        if presented != self.expected {
            let wrong = TlsError::WrongPeer {
                expected: self.expected,
                presented,
            };
            return Err(CertificateError::Other(OtherError(Arc::new(wrong))).into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Server side: any node may connect, but it must present and prove a key.
#[derive(Debug)]
struct AnyNodeVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyNodeVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        presented_node(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
