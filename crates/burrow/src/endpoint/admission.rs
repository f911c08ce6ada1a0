//! Who may stay connected. QUIC proves a peer's key; an [`Admission`] decides whether that key
//! may talk to us at all (a mesh checks membership here). It runs on every new connection, both
//! directions, before [`Endpoint::accept`](super::Endpoint::accept) or
//! [`Endpoint::connect`](super::Endpoint::connect) hands the connection out and, for an
//! incoming one, before the hole punching trusts the key: a refused peer never learns our
//! direct addresses from us and never opens a stream the application reads.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::Connection;
use crate::NodeId;

/// The QUIC application close code of a connection refused by an [`Admission`]; the reason
/// travels with it.
pub const REFUSED: u32 = 0x4255_0001;
/// An admission that takes longer refuses the peer.
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest refusal reason sent to the peer, in bytes (longer ones are cut at a character
/// boundary), so a close frame always fits a datagram.
pub const MAX_REASON_LEN: usize = 200;

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// We dialled.
    Dialler,
    /// The peer dialled us.
    Listener,
}

/// Why a peer was refused, as it is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// A short human-readable reason ("not a member of mesh X").
    pub reason: String,
    /// Not a verdict on the peer: the refusing side cannot tell yet and asks it to come back
    /// shortly. A dialler that refuses so keeps trusting the key it chose to dial.
    pub retry: bool,
}

impl Refusal {
    /// A refusal saying `reason`.
    pub fn new(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            retry: false,
        }
    }

    /// A refusal saying `reason` that is no verdict: come back shortly.
    pub fn retry_later(reason: impl Into<String>) -> Refusal {
        Refusal {
            retry: true,
            ..Refusal::new(reason)
        }
    }

    /// The reason as sent in the close frame: at most [`MAX_REASON_LEN`] bytes.
    pub(crate) fn wire_reason(&self) -> &[u8] {
        burrow_proto::text::truncate(&self.reason, MAX_REASON_LEN).as_bytes()
    }
}

/// How far an admitted peer is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Fully: hole punching runs for it, so it learns our direct addresses.
    Trusted,
    /// Its connection may stay (on the relay, or wherever it already is), but it learns
    /// nothing from our hole punching until [`Endpoint::trust`](super::Endpoint::trust) says
    /// so: for a peer that must prove itself over the connection first, such as a node
    /// redeeming an invite.
    Untrusted,
}

/// What [`Admission::admit`] returns.
pub type AdmissionFuture<'a> = Pin<Box<dyn Future<Output = Result<Admitted, Refusal>> + Send + 'a>>;

/// Decides whether a peer whose key QUIC proved may stay. It may use the connection (for
/// example, to exchange certificates on a stream of its own) and must finish within
/// [`ADMISSION_TIMEOUT`]. An error closes the connection with [`REFUSED`] and the reason.
pub trait Admission: Send + Sync + std::fmt::Debug + 'static {
    /// Admits `conn`'s peer, or says why not.
    fn admit<'a>(&'a self, conn: &'a Connection, side: Side) -> AdmissionFuture<'a>;
}

/// An [`Admission`] by key alone: `F` says whether a key may connect, either way.
pub struct AllowKeys<F>(pub F);

impl<F> std::fmt::Debug for AllowKeys<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllowKeys")
    }
}

impl<F> Admission for AllowKeys<F>
where
    F: Fn(&NodeId) -> bool + Send + Sync + 'static,
{
    fn admit<'a>(&'a self, conn: &'a Connection, _side: Side) -> AdmissionFuture<'a> {
        let allowed = (self.0)(&conn.remote);
        Box::pin(async move {
            if allowed {
                Ok(Admitted::Trusted)
            } else {
                Err(Refusal::new("this node does not accept your key"))
            }
        })
    }
}

/// Longest proof a peer may send, in bytes.
pub const MAX_PROOF_LEN: usize = 256 * 1024;
/// How long after the handshake a peer's proof may take by default (it is sent the moment the
/// handshake completes, so it arrives with the handshake's last flight).
pub const PROOF_TIMEOUT: Duration = Duration::from_secs(1);

/// What a node shows and checks when both ends must prove something beyond their key, such as
/// membership of a mesh: used by [`ExchangeProofs`].
pub trait Credentials: Send + Sync + std::fmt::Debug + 'static {
    /// What we show the peer (a member certificate and the roster we hold, say). Called once
    /// per connection.
    fn proof(&self) -> Vec<u8>;
    /// Whether `node` (whose key QUIC proved) may stay, given what it showed.
    fn check(&self, node: &NodeId, proof: &[u8], side: Side) -> Result<(), Refusal>;
}

impl<C: Credentials> Credentials for std::sync::Arc<C> {
    fn proof(&self) -> Vec<u8> {
        (**self).proof()
    }

    fn check(&self, node: &NodeId, proof: &[u8], side: Side) -> Result<(), Refusal> {
        (**self).check(node, proof, side)
    }
}

/// An [`Admission`] in which both ends show a proof and check the other's: each opens one
/// unidirectional stream, writes its [`Credentials::proof`] and finishes it; each reads the
/// peer's first unidirectional stream (at most [`MAX_PROOF_LEN`] bytes, within `timeout`).
/// The dialler shows its proof the moment the handshake completes; the listener shows its own
/// only once it has checked the dialler's, so a dialler it refuses sees its refusal and no
/// proof. A dialler that opens a bidirectional stream first, or a peer that shows nothing in
/// time, is refused at once; the listener's streams may come before its proof, and wait.
#[derive(Debug)]
pub struct ExchangeProofs<C> {
    /// What we show and check.
    pub credentials: C,
    /// How long the peer's proof may take after the handshake.
    pub timeout: Duration,
}

impl<C: Credentials> ExchangeProofs<C> {
    /// With the default [`PROOF_TIMEOUT`].
    pub fn new(credentials: C) -> ExchangeProofs<C> {
        ExchangeProofs {
            credentials,
            timeout: PROOF_TIMEOUT,
        }
    }

    async fn exchange(&self, conn: &Connection, side: Side) -> Result<(), Refusal> {
        let quic = &conn.quic;
        let ours = self.credentials.proof();
        let send = async {
            let mut s = quic.open_uni().await.ok()?;
            s.write_all(&ours).await.ok()?;
            s.finish().ok()
        };
        let proof = async {
            let uni = quic.accept_uni().await;
            let mut r = uni.map_err(|e| Refusal::new(format!("connection lost: {e}")))?;
            r.read_to_end(MAX_PROOF_LEN)
                .await
                .map_err(|_| Refusal::new("unreadable or oversized proof"))
        };
        let receive = async {
            match side {
                // A listener that admitted us may open its streams the moment it has shown
                // its proof, and one may come first: it waits in QUIC until this is done.
                Side::Dialler => proof.await,
                // A dialler shows its proof before anything else (with the handshake's last
                // flight), so a stream first is no peer of ours.
                Side::Listener => tokio::select! {
                    biased;
                    proof = proof => proof,
                    bi = quic.accept_bi() => Err(match bi {
                        Ok(_) => Refusal::new("a stream before any proof"),
                        Err(e) => Refusal::new(format!("connection lost: {e}")),
                    }),
                },
            }
        };
        let receive = async {
            tokio::time::timeout(self.timeout, receive)
                .await
                .unwrap_or_else(|_| Err(Refusal::new("no proof in time")))
        };
        match side {
            Side::Dialler => {
                let (_, theirs) = tokio::join!(send, receive);
                self.credentials.check(&conn.remote, &theirs?, side)
            }
            // The dialler's proof comes with the handshake's last flight, so waiting for it
            // costs nothing; and our proof (a mesh's roster) is then shown only to peers we
            // admit, and a refused dialler hears our refusal, never a proof it would take
            // for our consent.
            Side::Listener => {
                self.credentials
                    .check(&conn.remote, &receive.await?, side)?;
                send.await;
                Ok(())
            }
        }
    }
}

impl<C: Credentials> Admission for ExchangeProofs<C> {
    fn admit<'a>(&'a self, conn: &'a Connection, side: Side) -> AdmissionFuture<'a> {
        Box::pin(async move {
            self.exchange(conn, side).await?;
            Ok(Admitted::Trusted)
        })
    }
}

/// Runs `admission` on `conn` within [`ADMISSION_TIMEOUT`]; on refusal closes the connection
/// with the reason and returns it.
pub(crate) async fn run(
    admission: &dyn Admission,
    conn: &Connection,
    side: Side,
) -> Result<Admitted, Refusal> {
    let verdict = match tokio::time::timeout(ADMISSION_TIMEOUT, admission.admit(conn, side)).await {
        Ok(v) => v,
        Err(_) => Err(Refusal::new("admission timed out")),
    };
    // A peer that closed first keeps its reason: closing now would replace it with ours.
    if let (Err(refusal), None) = (&verdict, conn.quic.close_reason()) {
        conn.quic.close(REFUSED.into(), refusal.wire_reason());
    }
    verdict
}

/// Whether the peer closed the connection (refusing us, or in the ordinary way).
pub(crate) fn closed_by_peer(quic: &quinn::Connection) -> bool {
    matches!(
        quic.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(_))
    )
}

/// The reason a peer gave when it refused us, if it did.
pub(crate) fn peer_refusal(quic: &quinn::Connection) -> Option<Refusal> {
    match quic.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(REFUSED) =>
        {
            Some(Refusal::new(String::from_utf8_lossy(&close.reason)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let r = Refusal::new("é".repeat(150));
        let wire = r.wire_reason();
        assert!(wire.len() <= MAX_REASON_LEN && wire.len() >= MAX_REASON_LEN - 1);
        assert!(std::str::from_utf8(wire).is_ok());
        assert_eq!(Refusal::new("short").wire_reason(), b"short");
    }
}
