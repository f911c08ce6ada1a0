//! The bootstrap registry client: publishes this node's signed record to several registries
//! and finds other nodes' records by key or by namespace.
//!
//! Registries are not trusted. Every record read is checked here: signed by the key it names,
//! for the node asked about, not expired. Writes (publish, remove) go to every registry at
//! once and succeed if any accepts. Reads go to every registry at once, so a dead or lying
//! registry costs at most the per-request timeout: a lookup takes the highest `seq` among the
//! good answers that arrive within [`RegistryClientOptions::seq_window`] of the first (so one
//! registry holding an old record cannot roll a node back to it), a namespace page the first
//! good answer. A registry
//! is addressed by its relay's URL (`http(s)://HOST:PORT`): `burrow relay` hosts both. The API
//! is described in the `burrow-relay` crate's `records` module.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use burrow::registry_client::{RegistryClient, RegistryClientOptions};
//! use burrow::record::NodeRecord;
//! use burrow::SecretKey;
//!
//! let key = SecretKey::from_bytes([7; 32]);
//! let registries = vec!["https://relay1.example.com".parse()?, "https://relay2.example.com".parse()?];
//! let client = RegistryClient::new(registries, RegistryClientOptions::default());
//! let mut record = NodeRecord::new(key.node_id(), 1, 1_900_000_000);
//! record.relays.push("https://relay1.example.com".parse()?);
//! client.publish(&record.sign(&key)?, &["chat".into()], None).await?;
//! let found = client.lookup(&key.node_id()).await?;
//! assert_eq!(found.record(), &record);
//! # Ok(()) }
//! ```

use std::time::Duration;

use burrow_proto::identity::NodeIdError;
use burrow_proto::record::{self, is_valid_namespace, RecordError, SignedRecord};
use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::clock::unix_now;
use crate::error_chain::Chain;
use crate::http_client::ExchangeError;
use crate::relay_client::tls::{self, TlsConfig};
use crate::relay_client::{RelayUrl, TlsError};
use crate::{NodeId, SecretKey};

/// Largest response body read from a registry (a full page of records is well under it).
const MAX_RESPONSE: usize = 1024 * 1024;

/// Options for [`RegistryClient::new`].
#[derive(Clone, Debug)]
pub struct RegistryClientOptions {
    /// Connect, TLS, request and response together, per registry. Default 5 s.
    pub timeout: Duration,
    /// How long a lookup waits after its first good answer for the other registries', to
    /// take the highest `seq` among them; it returns as soon as every registry has answered.
    /// Default 200 ms.
    pub seq_window: Duration,
    /// Trust the public web PKI roots (webpki-roots) for `https://` registries. Default true.
    pub webpki_roots: bool,
    /// More trusted root certificates (DER), for private deployments and tests.
    pub extra_roots: Vec<Vec<u8>>,
}

impl Default for RegistryClientOptions {
    fn default() -> Self {
        RegistryClientOptions {
            timeout: Duration::from_secs(5),
            seq_window: Duration::from_millis(200),
            webpki_roots: true,
            extra_roots: Vec::new(),
        }
    }
}

/// Why a registry operation failed everywhere.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The client has no registries.
    #[error("no registries configured")]
    NoRegistries,
    /// Every registry that answered has no record for the node (or namespace page); the
    /// others failed.
    #[error("no registry has a record for this node")]
    NotFound,
    /// The request is invalid before it is sent.
    #[error("{0}")]
    Invalid(String),
    /// No registry gave a good answer: why, registry by registry.
    #[error("every registry failed: {}", failures(.0))]
    AllFailed(Vec<(RelayUrl, RegistryFailure)>),
}

fn failures(list: &[(RelayUrl, RegistryFailure)]) -> String {
    list.iter()
        .map(|(url, e)| format!("{url}: {}", Chain(e)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one registry gave no good answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryFailure {
    /// The request could not be built.
    #[error("bad request")]
    Request(#[source] hyper::http::Error),
    /// No TCP connection.
    #[error("connect")]
    Connect(#[source] std::io::Error),
    /// No TLS session.
    #[error(transparent)]
    Tls(TlsError),
    /// The HTTP exchange failed.
    #[error("HTTP")]
    Http(#[source] hyper::Error),
    /// The response body could not be read (or was too long).
    #[error("reading the response")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Nothing within the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The registry refused, with this status and its `{"error": "..."}` message.
    #[error("HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What the registry said.
        message: String,
    },
    /// The answer is not JSON.
    #[error("bad JSON")]
    Json(#[source] serde_json::Error),
    /// The answer lacks a field.
    #[error("no {0}")]
    Missing(&'static str),
    /// The record field is not base64url.
    #[error("record is not base64url")]
    Base64(#[source] data_encoding::DecodeError),
    /// The record does not verify (or has expired).
    #[error(transparent)]
    Record(RecordError),
    /// The record is another node's.
    #[error("answered with {0}'s record")]
    WrongNode(NodeId),
    /// The listing's cursor is not a node id.
    #[error("bad next_cursor")]
    Cursor(#[source] NodeIdError),
}

/// What a write did at each registry.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Registries that accepted it.
    pub accepted: Vec<RelayUrl>,
    /// Registries that refused it or failed, and why.
    pub failed: Vec<(RelayUrl, RegistryFailure)>,
}

/// One page of a namespace listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The records on the page that verified; any that did not are left out.
    pub records: Vec<SignedRecord>,
    /// Where the next page starts (pass it as `after`), or `None` at the end.
    pub next_cursor: Option<NodeId>,
}

/// A client for one or more bootstrap registries. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    registries: Vec<RelayUrl>,
    timeout: Duration,
    seq_window: Duration,
    /// Built once if any registry is `https://`; `Err` says why those cannot be used.
    tls: Option<TlsConfig>,
}

/// A registry's answer: status and body.
type Answer = Result<(StatusCode, Bytes), RegistryFailure>;

impl RegistryClient {
    /// A client for `registries` (relay URLs).
    pub fn new(registries: Vec<RelayUrl>, options: RegistryClientOptions) -> RegistryClient {
        let tls = registries
            .iter()
            .any(RelayUrl::is_tls)
            .then(|| tls::client_config_with(options.webpki_roots, &options.extra_roots));
        RegistryClient {
            registries,
            timeout: options.timeout,
            seq_window: options.seq_window,
            tls,
        }
    }

    /// The registries.
    pub fn registries(&self) -> &[RelayUrl] {
        &self.registries
    }

    /// Registers (or replaces, with a higher seq) `record` at every registry, listed under
    /// `namespaces`, to be held for `ttl` (the registry's maximum when `None`, and never past
    /// the record's own expiry). Succeeds if at least one registry accepted it.
    pub async fn publish(
        &self,
        record: &SignedRecord,
        namespaces: &[String],
        ttl: Option<Duration>,
    ) -> Result<WriteReport, RegistryError> {
        if let Some(bad) = namespaces.iter().find(|n| !is_valid_namespace(n)) {
            return Err(RegistryError::Invalid(format!(
                "invalid namespace {bad:?}: 1 to {} characters of A-Z a-z 0-9 . _ - :",
                record::MAX_NAMESPACE_LEN
            )));
        }
        let mut body = serde_json::json!({
            "record": BASE64URL_NOPAD.encode(record.as_bytes()),
            "namespaces": namespaces,
        });
        if let Some(ttl) = ttl {
            body["ttl_secs"] = ttl.as_secs().into();
        }
        let path = format!("/records/{}", record.node_id());
        self.write_all(Method::PUT, &path, body.to_string(), false)
            .await
    }

    /// Removes the node's record from every registry: a delete signed by `key` for records
    /// with `seq` or lower. A registry that has no record counts as accepted.
    pub async fn remove(&self, key: &SecretKey, seq: u64) -> Result<WriteReport, RegistryError> {
        let timestamp = unix_now();
        let signature = record::sign_delete(key, seq, timestamp);
        let body = serde_json::json!({
            "seq": seq,
            "timestamp": timestamp,
            "signature": BASE64URL_NOPAD.encode(&signature),
        });
        let path = format!("/records/{}", key.node_id());
        self.write_all(Method::DELETE, &path, body.to_string(), true)
            .await
    }

    async fn write_all(
        &self,
        method: Method,
        path: &str,
        body: String,
        not_found_ok: bool,
    ) -> Result<WriteReport, RegistryError> {
        if self.registries.is_empty() {
            return Err(RegistryError::NoRegistries);
        }
        let body = Bytes::from(body);
        let answers = self
            .registries
            .iter()
            .map(|url| self.request(url, method.clone(), path.to_string(), Some(body.clone())));
        let answers = futures_util::future::join_all(answers).await;
        let mut report = WriteReport::default();
        for (url, answer) in self.registries.iter().zip(answers) {
            match answer {
                Ok((status, _)) if status.is_success() => report.accepted.push(url.clone()),
                Ok((StatusCode::NOT_FOUND, _)) if not_found_ok => report.accepted.push(url.clone()),
                Ok((status, body)) => report.failed.push((url.clone(), refused(status, &body))),
                Err(e) => report.failed.push((url.clone(), e)),
            }
        }
        if report.accepted.is_empty() {
            return Err(RegistryError::AllFailed(report.failed));
        }
        Ok(report)
    }

    /// The node's record: signed by `node`, not expired, and the highest `seq` among the
    /// good answers within the [`RegistryClientOptions::seq_window`] after the first. Asks
    /// every registry at once.
    pub async fn lookup(&self, node: &NodeId) -> Result<SignedRecord, RegistryError> {
        let path = format!("/records/{node}");
        let node = *node;
        let accept = move |body: &[u8]| {
            let signed = record_field(body)?;
            if signed.node_id() != node {
                return Err(RegistryFailure::WrongNode(signed.node_id()));
            }
            Ok(signed)
        };
        self.best_answer(&path, accept, self.seq_window, |r| r.record().seq)
            .await
    }

    /// A page of the records listed under `namespace`, after the node `after` (from the
    /// start with `None`), at most `limit` (the registry may give fewer). Asks every registry
    /// at once and takes the first good page; records that do not verify are left out of it.
    pub async fn list(
        &self,
        namespace: &str,
        after: Option<&NodeId>,
        limit: usize,
    ) -> Result<Page, RegistryError> {
        if !is_valid_namespace(namespace) {
            return Err(RegistryError::Invalid(format!(
                "invalid namespace {namespace:?}"
            )));
        }
        let mut path = format!("/namespaces/{namespace}?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&cursor={after}"));
        }
        let accept = |body: &[u8]| {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(RegistryFailure::Json)?;
            let items = v["records"]
                .as_array()
                .ok_or(RegistryFailure::Missing("records array"))?;
            let now = unix_now();
            let records = items
                .iter()
                .filter_map(|item| item["record"].as_str())
                .filter_map(|b64| BASE64URL_NOPAD.decode(b64.as_bytes()).ok())
                .filter_map(|bytes| SignedRecord::verify(&bytes, now).ok())
                .collect();
            let next_cursor = match v["next_cursor"].as_str() {
                Some(c) => Some(c.parse().map_err(RegistryFailure::Cursor)?),
                None => None,
            };
            Ok(Page {
                records,
                next_cursor,
            })
        };
        // Pages have no seq: the first good one.
        self.best_answer(&path, accept, Duration::ZERO, |_| 0).await
    }

    /// GETs `path` from every registry at once. Of the 200s whose body `accept` takes, those
    /// that arrive within `window` of the first are compared by `rank`, and the highest (the
    /// earliest of equals) wins; the answers still pending then are dropped.
    async fn best_answer<T>(
        &self,
        path: &str,
        accept: impl Fn(&[u8]) -> Result<T, RegistryFailure>,
        window: Duration,
        rank: impl Fn(&T) -> u64,
    ) -> Result<T, RegistryError> {
        if self.registries.is_empty() {
            return Err(RegistryError::NoRegistries);
        }
        let mut pending: FuturesUnordered<_> = self
            .registries
            .iter()
            .map(|url| async move {
                (
                    url,
                    self.request(url, Method::GET, path.to_string(), None).await,
                )
            })
            .collect();
        let (mut failed, mut not_found) = (Vec::new(), 0);
        let mut best: Option<T> = None;
        let mut until = None;
        loop {
            let next = match until {
                None => pending.next().await,
                Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some((url, answer)) = next else { break };
            match answer {
                Ok((StatusCode::OK, body)) => match accept(&body) {
                    Ok(found) => {
                        if best.as_ref().is_none_or(|b| rank(&found) > rank(b)) {
                            best = Some(found);
                        } else {
                            tracing::debug!(%url, "registry's answer is no newer than another's");
                        }
                        until.get_or_insert(tokio::time::Instant::now() + window);
                    }
                    Err(e) => {
                        tracing::debug!(%url, "registry gave a bad answer: {}", Chain(&e));
                        failed.push((url.clone(), e));
                    }
                },
                Ok((StatusCode::NOT_FOUND, _)) => not_found += 1,
                Ok((status, body)) => failed.push((url.clone(), refused(status, &body))),
                Err(e) => failed.push((url.clone(), e)),
            }
        }
        // Dropping what is still pending cancels it.
        if let Some(best) = best {
            return Ok(best);
        }
        if not_found > 0 {
            return Err(RegistryError::NotFound);
        }
        Err(RegistryError::AllFailed(failed))
    }

    /// One HTTP/1.1 request on a fresh connection, within the timeout.
    async fn request(
        &self,
        url: &RelayUrl,
        method: Method,
        path: String,
        body: Option<Bytes>,
    ) -> Answer {
        let host = if url.host().contains(':') {
            format!("[{}]:{}", url.host(), url.port())
        } else {
            format!("{}:{}", url.host(), url.port())
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "burrow");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(RegistryFailure::Request)?;
        let work = async {
            let tcp = TcpStream::connect((url.host(), url.port()))
                .await
                .map_err(RegistryFailure::Connect)?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                Some(config) if url.is_tls() => {
                    let stream = tls::connect(config, url.host(), tcp)
                        .await
                        .map_err(RegistryFailure::Tls)?;
                    exchange(stream, req).await
                }
                _ => exchange(tcp, req).await,
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| RegistryFailure::Timeout(self.timeout))?
    }
}

/// Sends `req` over a fresh HTTP/1.1 connection on `io` and reads the whole response.
async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Answer
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    crate::http_client::exchange(io, req, MAX_RESPONSE)
        .await
        .map_err(|e| match e {
            ExchangeError::Http(e) => RegistryFailure::Http(e),
            ExchangeError::Body(e) => RegistryFailure::Body(e),
        })
}

/// A refusal: the status and the message of the registry's `{"error": "..."}`.
fn refused(status: StatusCode, body: &[u8]) -> RegistryFailure {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    RegistryFailure::Refused {
        status: status.as_u16(),
        message,
    }
}

/// The verified, unexpired record in a view's `record` field.
fn record_field(body: &[u8]) -> Result<SignedRecord, RegistryFailure> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(RegistryFailure::Json)?;
    let b64 = v["record"]
        .as_str()
        .ok_or(RegistryFailure::Missing("record field"))?;
    let bytes = BASE64URL_NOPAD
        .decode(b64.as_bytes())
        .map_err(RegistryFailure::Base64)?;
    SignedRecord::verify(&bytes, unix_now()).map_err(RegistryFailure::Record)
}
