use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quinn::{Connection, ConnectionError, Endpoint, TransportErrorCode};
use tokio::time::timeout;

use super::*;

const ALPN: &[u8] = b"burrow/test/1";
const LIMIT: Duration = Duration::from_secs(5);

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

fn alpns(alpn: &[u8]) -> Vec<Vec<u8>> {
    vec![alpn.to_vec()]
}

/// A raw public key claiming `claimed` whose handshake signatures come from `signer`.
fn forged_key(claimed: &SecretKey, signer: &SecretKey) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki(&claimed.node_id()))],
        Arc::new(NodeKey(Arc::new(signer.clone()))),
    ))
}

/// Both sides' handshake results; the endpoints come back so the connections stay open.
struct Handshake {
    server: Result<Connection, ConnectionError>,
    client: Result<Connection, ConnectionError>,
    _endpoints: (Endpoint, Endpoint),
}

async fn handshake(
    server_config: quinn::ServerConfig,
    client_config: quinn::ClientConfig,
) -> Handshake {
    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server_ep = Endpoint::server(server_config, localhost).unwrap();
    let client_ep = Endpoint::client(localhost).unwrap();
    let server_addr = server_ep.local_addr().unwrap();
    let accept = async {
        server_ep
            .accept()
            .await
            .expect("an incoming connection")
            .await
    };
    let connect = client_ep
        .connect_with(client_config, server_addr, SERVER_NAME)
        .unwrap();
    let (server, client) = tokio::join!(accept, connect);
    Handshake {
        server,
        client,
        _endpoints: (server_ep, client_ep),
    }
}

/// The TLS alert behind a failed handshake, whichever side raised it.
fn alert(err: &ConnectionError) -> TransportErrorCode {
    match err {
        ConnectionError::TransportError(e) => e.code,
        ConnectionError::ConnectionClosed(close) => close.error_code,
        other => panic!("not a TLS failure: {other:?}"),
    }
}

const CERTIFICATE_UNKNOWN: u8 = 46;
const DECRYPT_ERROR: u8 = 51;
const NO_APPLICATION_PROTOCOL: u8 = 120;

#[tokio::test]
async fn both_sides_prove_their_node_and_a_stream_echoes() {
    let (server_key, client_key) = (key(1), key(2));
    let server_config = server_config(&server_key, &alpns(ALPN)).unwrap();
    let client_config = client_config(&client_key, server_key.node_id(), &alpns(ALPN)).unwrap();
    timeout(LIMIT, async {
        let hs = handshake(server_config, client_config).await;
        let (server, client) = (hs.server.unwrap(), hs.client.unwrap());
        assert_eq!(peer_node_id(&server), Some(client_key.node_id()));
        assert_eq!(peer_node_id(&client), Some(server_key.node_id()));
        assert_eq!(
            server
                .handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol
                .as_deref(),
            Some(ALPN)
        );

        let echo = tokio::spawn(async move {
            let (mut send, mut recv) = server.accept_bi().await.unwrap();
            let bytes = recv.read_to_end(1024).await.unwrap();
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
            // Keep the connection until the client has read the echo.
            server.closed().await;
        });
        let (mut send, mut recv) = client.open_bi().await.unwrap();
        send.write_all(b"hello, node").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1024).await.unwrap(), b"hello, node");
        client.close(0u32.into(), b"done");
        echo.await.unwrap();
    })
    .await
    .expect("handshake and echo within the limit");
}

#[tokio::test]
async fn client_rejects_a_server_that_is_not_the_dialled_node() {
    let (server_key, client_key, expected) = (key(1), key(2), key(3));
    let server_config = server_config(&server_key, &alpns(ALPN)).unwrap();
    let client_config = client_config(&client_key, expected.node_id(), &alpns(ALPN)).unwrap();
    let hs = timeout(LIMIT, handshake(server_config, client_config))
        .await
        .expect("a prompt failure, not a timeout");
    let err = hs.client.unwrap_err();
    assert_eq!(alert(&err), TransportErrorCode::crypto(CERTIFICATE_UNKNOWN));
    // rustls shows the error with Debug, so the ids appear shortened.
    let reason = err.to_string();
    assert!(reason.contains("WrongPeer"), "{reason}");
    assert!(reason.contains(&expected.node_id().short()), "{reason}");
    assert!(reason.contains(&server_key.node_id().short()), "{reason}");
    assert!(hs.server.is_err());
}

#[tokio::test]
async fn alpn_mismatch_fails() {
    let (server_key, client_key) = (key(1), key(2));
    let server_config = server_config(&server_key, &alpns(b"burrow/a")).unwrap();
    let client_config =
        client_config(&client_key, server_key.node_id(), &alpns(b"burrow/b")).unwrap();
    let hs = timeout(LIMIT, handshake(server_config, client_config))
        .await
        .expect("a prompt failure, not a timeout");
    let crypto = TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL);
    assert_eq!(alert(&hs.server.unwrap_err()), crypto);
    assert_eq!(alert(&hs.client.unwrap_err()), crypto);
}

#[tokio::test]
async fn server_presenting_a_key_it_does_not_hold_fails() {
    let (claimed, signer, client_key) = (key(1), key(2), key(3));
    let server_config = server_config_with(forged_key(&claimed, &signer), &alpns(ALPN)).unwrap();
    let client_config = client_config(&client_key, claimed.node_id(), &alpns(ALPN)).unwrap();
    let hs = timeout(LIMIT, handshake(server_config, client_config))
        .await
        .expect("a prompt failure, not a timeout");
    assert_eq!(
        alert(&hs.client.unwrap_err()),
        TransportErrorCode::crypto(DECRYPT_ERROR)
    );
    assert!(hs.server.is_err());
}

#[tokio::test]
async fn client_presenting_a_key_it_does_not_hold_fails() {
    let (server_key, claimed, signer) = (key(1), key(2), key(3));
    let server_config = server_config(&server_key, &alpns(ALPN)).unwrap();
    let client_config = client_config_with(
        forged_key(&claimed, &signer),
        server_key.node_id(),
        &alpns(ALPN),
    )
    .unwrap();
    let hs = timeout(LIMIT, handshake(server_config, client_config))
        .await
        .expect("a prompt failure, not a timeout");
    // The client finishes its half of the handshake before the server checks its signature,
    // so only the server is sure to see the handshake fail.
    assert_eq!(
        alert(&hs.server.unwrap_err()),
        TransportErrorCode::crypto(DECRYPT_ERROR)
    );
}

#[test]
fn an_empty_alpn_list_is_refused() {
    let key = key(1);
    assert!(matches!(server_config(&key, &[]), Err(TlsError::NoAlpn)));
    assert!(matches!(
        client_config(&key, key.node_id(), &[]),
        Err(TlsError::NoAlpn)
    ));
}

#[test]
fn spki_round_trips_and_rejects_other_keys() {
    let id = key(1).node_id();
    assert_eq!(node_id_from_spki(&spki(&id)), Some(id));
    assert_eq!(node_id_from_spki(&spki(&id)[1..]), None);
    let mut not_ed25519 = spki(&id);
    not_ed25519[8] = 0x71; // Ed448's OID.
    assert_eq!(node_id_from_spki(&not_ed25519), None);
}
