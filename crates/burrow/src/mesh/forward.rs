//! TCP ports forwarded between members: ports this machine exposes to the mesh, and local
//! listeners whose connections are carried to a member's exposed port, one QUIC stream each
//! (opened with a [`StreamOpen::Forward`] header, answered before any byte flows).
//!
//! Only members reach an exposed port (the stream comes on a connection that proved
//! membership), and only ports exposed are dialled, on `127.0.0.1`. A refusal (a port not
//! exposed, nothing listening, a member not in the roster) resets the local TCP connection at
//! once. A TCP half-close is the stream's finish and the other way round; a reset is a reset
//! both ways; bytes move through one bounded buffer per direction, so a slow reader slows the
//! writer (QUIC's flow control carries the back-pressure across). The QUIC connection keeps its
//! streams when its path moves between direct and relayed, so forwarded TCP connections do
//! too. What is exposed and forwarded is kept in the mesh directory and set up again when the
//! daemon restarts.
//!
//! By default a forward listens on a **stable address** made from the member's number,
//! `127.77.HI.LO:PORT` (Linux routes all of `127.0.0.0/8` to loopback), so one configuration
//! (`tcp://127.77.0.3:5555`) works on every machine of the mesh.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burrow_proto::mesh::stream::{StreamAnswer, StreamOpen};
use bytes::{Buf, Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::streams::{answer, ask, delivered, Asked, RESET_CODE};
use crate::paths::PathError;
use crate::NodeId;

/// The file in the mesh directory that keeps what is exposed and forwarded.
pub const FORWARDS_FILE: &str = "forwards.json";
/// The first two bytes of every stable forward address.
pub const STABLE_PREFIX: [u8; 2] = [127, 77];
/// How long a forwarded connection waits for a connection to its member when there is none.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);
pub use super::streams::ANSWER_TIMEOUT;
/// How long dialling an exposed port on loopback may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Forwarded TCP connections at once, both ways together; more are reset.
pub const MAX_FORWARDED: usize = 1024;
/// Bytes read from TCP at most at once, and so buffered toward QUIC, per forwarded connection.
pub const PIPE_BUFFER: usize = 256 * 1024;
/// QUIC chunks (about a packet each) taken at most at once toward TCP, in one vectored write.
const PIPE_CHUNKS: usize = 256;

/// Why a forwarding request failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No port 0.
    #[error("port 0 cannot be exposed or forwarded")]
    PortZero,
    /// Not exposed, so it cannot be taken back.
    #[error("port {0} is not exposed")]
    NotExposed(u16),
    /// No forward listens there.
    #[error("no forward listens on {0}")]
    UnknownForward(SocketAddr),
    /// A forward listens there already.
    #[error("a forward listens on {0} already")]
    Taken(SocketAddr),
    /// The member's number does not fit a stable address (or this system has none).
    #[error("member number {0} has no stable local address here: give one")]
    NoStableAddress(u32),
    /// The local listener would not bind.
    #[error("listening on {addr}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the state down.
    #[error("keeping the forwards")]
    Save(#[source] PathError),
}

/// A port this machine exposes to the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposed {
    /// The TCP port on `127.0.0.1`.
    pub port: u16,
    /// What it is, for people.
    pub name: Option<String>,
}

/// A local listener carried to a member's exposed port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The member.
    #[serde(with = "crate::api::as_str")]
    pub node_id: NodeId,
    /// Its exposed port.
    pub port: u16,
    /// Where this machine listens for it.
    pub local: SocketAddr,
}

/// What [`FORWARDS_FILE`] holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    exposed: Vec<Exposed>,
    forwards: Vec<Forward>,
}

/// The stable local address of member number `number` for `port`: `127.77.HI.LO` on Linux,
/// none for numbers that do not fit two bytes (or 0) or elsewhere.
pub fn stable_address(number: u32, port: u16) -> Option<SocketAddr> {
    let n = u16::try_from(number).ok().filter(|n| *n != 0)?;
    if !cfg!(target_os = "linux") {
        return None;
    }
    let [hi, lo] = n.to_be_bytes();
    let [a, b] = STABLE_PREFIX;
    Some(SocketAddr::from((Ipv4Addr::new(a, b, hi, lo), port)))
}

/// What a node exposes and forwards, with the forwards' listener tasks.
#[derive(Debug)]
pub(crate) struct Forwarding {
    file: PathBuf,
    exposed: Mutex<BTreeMap<u16, Option<String>>>,
    listeners: Mutex<BTreeMap<SocketAddr, (Forward, JoinHandle<()>)>>,
    /// Forwarded connections under way, both ways.
    slots: Arc<Semaphore>,
}

impl Forwarding {
    /// What `dir` keeps: the exposed ports, and the forwards to start again (see
    /// [`Forwarding::listen`]). A missing or unreadable file is nothing kept.
    pub(crate) fn load(dir: &std::path::Path) -> (Forwarding, Vec<Forward>) {
        let file = dir.join(FORWARDS_FILE);
        let saved: Saved = match crate::paths::read_private_file(&file) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("{}: {e}; starting with nothing forwarded", file.display());
                Saved::default()
            }),
            _ => Saved::default(),
        };
        let exposed = saved
            .exposed
            .into_iter()
            .map(|e| (e.port, e.name))
            .collect();
        let forwarding = Forwarding {
            file,
            exposed: Mutex::new(exposed),
            listeners: Mutex::default(),
            slots: Arc::new(Semaphore::new(MAX_FORWARDED)),
        };
        (forwarding, saved.forwards)
    }

    fn save(&self) -> Result<(), ForwardError> {
        let saved = Saved {
            exposed: self.exposed(),
            forwards: self.forwards(),
        };
        let json = serde_json::to_vec_pretty(&saved).expect("forwards serialize");
        crate::paths::replace_private_file(&self.file, &json).map_err(ForwardError::Save)
    }

    /// Exposes `port` (again, with a new name, if it is already).
    pub(crate) fn expose(&self, port: u16, name: Option<String>) -> Result<Exposed, ForwardError> {
        if port == 0 {
            return Err(ForwardError::PortZero);
        }
        lock(&self.exposed).insert(port, name.clone());
        self.save()?;
        Ok(Exposed { port, name })
    }

    /// Stops exposing `port` (connections under way go on).
    pub(crate) fn unexpose(&self, port: u16) -> Result<(), ForwardError> {
        if lock(&self.exposed).remove(&port).is_none() {
            return Err(ForwardError::NotExposed(port));
        }
        self.save()
    }

    /// The ports exposed, in order.
    pub(crate) fn exposed(&self) -> Vec<Exposed> {
        lock(&self.exposed)
            .iter()
            .map(|(port, name)| Exposed {
                port: *port,
                name: name.clone(),
            })
            .collect()
    }

    /// The forwards listening, by local address.
    pub(crate) fn forwards(&self) -> Vec<Forward> {
        lock(&self.listeners)
            .values()
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Listens for `forward` and keeps it; `carry` takes each connection accepted (with a
    /// slot of [`MAX_FORWARDED`]).
    pub(crate) async fn listen<F, Fut>(
        &self,
        forward: Forward,
        carry: F,
    ) -> Result<Forward, ForwardError>
    where
        F: Fn(TcpStream, Forward) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if forward.port == 0 {
            return Err(ForwardError::PortZero);
        }
        if lock(&self.listeners).contains_key(&forward.local) {
            return Err(ForwardError::Taken(forward.local));
        }
        let listener =
            TcpListener::bind(forward.local)
                .await
                .map_err(|source| ForwardError::Bind {
                    addr: forward.local,
                    source,
                })?;
        // Port 0 asked for any port: the one given is what is kept and shown.
        let local = listener.local_addr().unwrap_or(forward.local);
        let forward = Forward { local, ..forward };
        let slots = self.slots.clone();
        let spec = forward.clone();
        let task = tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of descriptors, say: try again shortly rather than spin.
                        tracing::debug!(local = %spec.local, "accepting: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(local = %spec.local, "too many forwarded connections");
                    reset(tcp);
                    continue;
                };
                let carried = carry(tcp, spec.clone());
                tokio::spawn(async move {
                    carried.await;
                    drop(slot);
                });
            }
        });
        lock(&self.listeners).insert(local, (forward.clone(), task));
        if let Err(e) = self.save() {
            if let Some((_, task)) = lock(&self.listeners).remove(&local) {
                task.abort();
            }
            return Err(e);
        }
        Ok(forward)
    }

    /// Stops the forward listening on `local` (connections under way go on).
    /// Returns once the listener is closed.
    pub(crate) async fn unforward(&self, local: SocketAddr) -> Result<Forward, ForwardError> {
        let (forward, task) = lock(&self.listeners)
            .remove(&local)
            .ok_or(ForwardError::UnknownForward(local))?;
        task.abort();
        // Its end drops the listener; the error is only that it was aborted.
        let _ = task.await;
        self.save()?;
        Ok(forward)
    }

    /// Serves a member's forwarded connection to `port`: dials it on loopback if it is
    /// exposed, answers, and carries the bytes.
    pub(crate) async fn serve(&self, port: u16, mut send: SendStream, recv: RecvStream) {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            let why = "too many forwarded connections";
            answer(&mut send, StreamAnswer::Refused(why.into())).await;
            return;
        };
        match self.dial(port).await {
            Ok(tcp) => {
                if answer(&mut send, StreamAnswer::Accepted).await {
                    pipe(tcp, send, recv).await;
                }
            }
            Err(why) => {
                answer(&mut send, StreamAnswer::Refused(why)).await;
            }
        }
    }

    /// A connection to exposed `port` on loopback, or why not.
    async fn dial(&self, port: u16) -> Result<TcpStream, String> {
        if !lock(&self.exposed).contains_key(&port) {
            return Err(format!("port {port} is not exposed"));
        }
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(tcp)) => Ok(tcp),
            Ok(Err(e)) => Err(format!("port {port}: {e}")),
            Err(_) => Err(format!("port {port}: no answer within {DIAL_TIMEOUT:?}")),
        }
    }

    /// Stops every listener.
    pub(crate) fn close(&self) {
        for (_, (_, task)) in std::mem::take(&mut *lock(&self.listeners)) {
            task.abort();
        }
    }
}

/// Tries to open a forwarded connection's stream this many times: a stream that dies before
/// its answer came on a connection that was closed meanwhile (one of two that met, replaced by
/// the other) is opened again on the member's connection now.
const OPEN_ATTEMPTS: usize = 2;

/// Carries `tcp` to `port` on a stream `open` opens to the member (`None`: no connection to
/// it), with a hold on the connection kept as long as the stream: asks, and carries the bytes
/// if the member accepts; resets `tcp` if it refuses, does not answer in time, or cannot be
/// reached.
pub(crate) async fn carry<F, Fut, H>(tcp: TcpStream, port: u16, open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<(SendStream, RecvStream, H)>>,
{
    for _ in 0..OPEN_ATTEMPTS {
        let Some((mut send, mut recv, _hold)) = open().await else {
            break;
        };
        match ask(&mut send, &mut recv, StreamOpen::Forward { port }).await {
            Asked::Accepted => return pipe(tcp, send, recv).await,
            Asked::Ended => continue,
            Asked::Refused(why) => {
                tracing::debug!(port, "forward refused: {why}");
                break;
            }
            Asked::TimedOut => break,
        }
    }
    reset(tcp);
}

/// Closes `tcp` with a reset, as a refused or broken connection should look to its program.
pub(crate) fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

/// Carries bytes between `tcp` and a stream both ways until both are done: an end of one side
/// (TCP FIN, stream finish) ends the same direction on the other, a failure of either resets
/// both.
pub(crate) async fn pipe(tcp: TcpStream, mut send: SendStream, mut recv: RecvStream) {
    let _ = tcp.set_nodelay(true);
    let (mut from_tcp, mut to_tcp) = tcp.into_split();
    // QUIC keeps the chunks it is given, and gives the ones it received, uncopied; what it
    // holds is written to TCP in one vectored write, not a write per packet.
    let up = async {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(PIPE_BUFFER);
            match from_tcp.read_buf(&mut buf).await {
                Ok(0) => {
                    send.finish().map_err(drop)?;
                    // Its connection may close once this is done (see `member_conn`).
                    delivered(&mut send).await;
                    return Ok(());
                }
                Ok(_) => send.write_chunk(buf.split().freeze()).await.map_err(drop)?,
                Err(_) => return Err(()),
            }
        }
    };
    let down = async {
        let mut chunks = vec![Bytes::new(); PIPE_CHUNKS];
        loop {
            match recv.read_chunks(&mut chunks).await {
                Ok(None) => return to_tcp.shutdown().await.map_err(drop),
                Ok(Some(n)) => write_all_chunks(&mut to_tcp, &mut chunks[..n])
                    .await
                    .map_err(drop)?,
                Err(_) => return Err(()),
            }
        }
    };
    if tokio::try_join!(up, down).is_err() {
        let _ = send.reset(RESET_CODE.into());
        let _ = recv.stop(RESET_CODE.into());
        if let Ok(tcp) = from_tcp.reunite(to_tcp) {
            reset(tcp);
        }
    }
}

/// Writes `chunks` to `tcp` whole, as few vectored writes as it takes.
async fn write_all_chunks(
    tcp: &mut tokio::net::tcp::OwnedWriteHalf,
    chunks: &mut [Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    loop {
        while chunks.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let slices: Vec<IoSlice<'_>> = chunks[first..].iter().map(|c| IoSlice::new(c)).collect();
        let mut written = tcp.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        for chunk in &mut chunks[first..] {
            let n = written.min(chunk.len());
            chunk.advance(n);
            written -= n;
            if written == 0 {
                break;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_addresses_come_from_the_member_number() {
        if !cfg!(target_os = "linux") {
            return;
        }
        assert_eq!(
            stable_address(3, 5555),
            Some("127.77.0.3:5555".parse().unwrap())
        );
        assert_eq!(
            stable_address(258, 1),
            Some("127.77.1.2:1".parse().unwrap())
        );
        assert_eq!(stable_address(0, 1), None);
        assert_eq!(stable_address(65_536, 1), None);
    }

    #[test]
    fn what_is_exposed_and_forwarded_is_kept() {
        let dir = std::env::temp_dir().join(format!("burrow-fwd-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (f, forwards) = Forwarding::load(&dir);
        assert!(forwards.is_empty() && f.exposed().is_empty());
        f.expose(5555, Some("zmq".into())).unwrap();
        f.expose(22, None).unwrap();
        assert!(matches!(f.expose(0, None), Err(ForwardError::PortZero)));
        assert!(matches!(f.unexpose(80), Err(ForwardError::NotExposed(80))));
        let (again, _) = Forwarding::load(&dir);
        assert_eq!(
            again.exposed(),
            [
                Exposed {
                    port: 22,
                    name: None
                },
                Exposed {
                    port: 5555,
                    name: Some("zmq".into())
                }
            ]
        );
        again.unexpose(22).unwrap();
        assert_eq!(Forwarding::load(&dir).0.exposed().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
