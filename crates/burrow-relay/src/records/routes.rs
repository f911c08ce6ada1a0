//! The registry's HTTP JSON routes (the API is described in [`crate::records`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use burrow_proto::identity::NodeId;
use burrow_proto::rate::{source_prefix, KeyedBuckets};
use burrow_proto::record::{verify_delete, NodeRecord, RecordError, SignedRecord, SIGNATURE_LEN};
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};

use super::{RecordStore, StoreError, Stored};
use crate::http::ConnInfo;
use crate::Shared;

/// Sources, and keys, whose rate-limit buckets are kept; past that the one seen longest ago
/// is forgotten, so a flood of new ones makes the limiter forgetful, never bigger.
const RATE_LIMITED: usize = 100_000;

/// A bounded table of token buckets, or `None` for no limit (a rate of 0).
struct Limiter<K>(Option<Mutex<KeyedBuckets<K>>>);

impl<K: Ord + Clone> Limiter<K> {
    fn new(rate: f64, burst: u32) -> Limiter<K> {
        Limiter((rate > 0.0).then(|| {
            Mutex::new(KeyedBuckets::new(
                rate,
                f64::from(burst.max(1)),
                RATE_LIMITED,
            ))
        }))
    }

    /// Takes a token for `key`; false if its bucket is empty.
    fn allow(&self, key: &K) -> bool {
        self.0
            .as_ref()
            .is_none_or(|buckets| buckets.lock().expect("lock").take(Instant::now(), key, 1.0))
    }
}

/// The registry's state next to the relay's.
pub(crate) struct Registry {
    pub store: Arc<RecordStore>,
    /// Per source ([`source_prefix`]).
    sources: Limiter<IpAddr>,
    keys: Limiter<[u8; 32]>,
}

impl Registry {
    pub(crate) fn new(store: Arc<RecordStore>) -> Registry {
        let l = store.limits().clone();
        Registry {
            store,
            sources: Limiter::new(l.ip_rate_per_sec, l.ip_burst),
            keys: Limiter::new(l.key_rate_per_sec, l.key_burst),
        }
    }
}

/// The routes, for the relay's router.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/records/{node_id}",
            get(get_record).put(put_record).delete(delete_record),
        )
        .route("/namespaces/{namespace}", get(list_namespace))
}

/// Unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error response: `{"error": "..."}` with a status.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> ApiError {
        let status = match e {
            RecordError::Signature | RecordError::DeleteTimestamp { .. } => {
                StatusCode::UNAUTHORIZED
            }
            RecordError::Stale { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match e {
            StoreError::Stale { .. } => StatusCode::CONFLICT,
            StoreError::Full(_) | StoreError::NamespaceFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::SourceFull(_) | StoreError::SourceNamespaceFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            StoreError::BadNamespace(_) | StoreError::TooManyNamespaces(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::NotFound => StatusCode::NOT_FOUND,
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A stored record as the API shows it.
#[derive(Serialize)]
struct View {
    node_id: String,
    /// The signed record, base64url without padding: what a client verifies.
    record: String,
    seq: u64,
    expires: u64,
    relays: Vec<String>,
    addrs: Vec<String>,
    name: Option<String>,
    capabilities: Vec<String>,
    stored_until: u64,
    /// Connected to this relay now.
    online: bool,
    /// This relay's own observation of the key (see the `presence` module): the share of
    /// the reputation window it was connected here, 0 to 1.
    reputation: f64,
}

/// The record `stored` holds.
fn record_of(stored: &Stored) -> ApiResult<NodeRecord> {
    // Stored bytes passed verification, so the payload decodes; an error here is a bug.
    let payload = stored
        .bytes
        .len()
        .checked_sub(SIGNATURE_LEN)
        .map(|n| &stored.bytes[..n])
        .unwrap_or_default();
    NodeRecord::decode_payload_for(payload, &stored.node).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stored record: {e}"),
        )
    })
}

/// A key's reputation now.
fn reputation(shared: &Shared, node: &NodeId) -> f64 {
    let window = shared.config.reputation_window;
    shared.presence.reputation(node, Instant::now(), window)
}

impl View {
    fn of(stored: &Stored, shared: &Shared) -> ApiResult<View> {
        let r = record_of(stored)?;
        Ok(View {
            node_id: r.node_id.to_string(),
            record: BASE64URL_NOPAD.encode(&stored.bytes),
            seq: r.seq,
            expires: r.expires,
            relays: r.relays.iter().map(ToString::to_string).collect(),
            addrs: r.addrs.iter().map(ToString::to_string).collect(),
            name: r.name,
            capabilities: r.capabilities,
            stored_until: stored.stored_until,
            online: shared.presence.is_online(&stored.node),
            reputation: reputation(shared, &stored.node),
        })
    }
}

fn registry(shared: &Shared) -> ApiResult<&Registry> {
    shared
        .records
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this relay runs no registry"))
}

/// The per-source rate limit for a request from `peer`, checked first on every route.
fn admit(reg: &Registry, peer: IpAddr) -> ApiResult<()> {
    if reg.sources.allow(&source_prefix(peer)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited: too many registry requests from this address",
        ))
    }
}

/// The enrolment and per-key rate limit, checked once a write's signature has verified.
fn admit_key(shared: &Shared, reg: &Registry, node: &NodeId) -> ApiResult<()> {
    if let Some(keys) = &shared.config.allowed_keys {
        if !keys.contains(node) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this registry takes records of the keys enrolled with it only",
            ));
        }
    }
    if reg.keys.allow(node.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limited: too many writes for this node",
        ))
    }
}

fn node_id(path: Result<Path<String>, PathRejection>) -> ApiResult<NodeId> {
    let Path(text) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    text.parse()
        .map_err(|e| ApiError::bad_request(format!("bad node id in the path: {e}")))
}

/// Reads a JSON body of at most the configured size.
async fn json_body<T: serde::de::DeserializeOwned>(
    reg: &Registry,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    let cap = reg.store.limits().max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {cap} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    // Past the cap without a Content-Length (chunked), or a broken body: either way no
    // request is coming.
    let bytes = axum::body::to_bytes(body, cap)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

fn base64(field: &str, text: &str) -> ApiResult<Vec<u8>> {
    BASE64URL_NOPAD.decode(text.as_bytes()).map_err(|e| {
        ApiError::bad_request(format!("{field} is not base64url without padding: {e}"))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    record: String,
    #[serde(default)]
    namespaces: Vec<String>,
    ttl_secs: Option<u64>,
}

async fn put_record(
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<View>> {
    let reg = registry(&shared)?;
    admit(reg, info.peer.ip())?;
    let node = node_id(path)?;
    let put: PutBody = json_body(reg, &headers, body).await?;
    let bytes = base64("record", &put.record)?;
    let now = unix_now();
    let signed = SignedRecord::verify(&bytes, now)?;
    if signed.node_id() != node {
        return Err(ApiError::bad_request(format!(
            "the record is {}'s, not {node}'s",
            signed.node_id()
        )));
    }
    admit_key(&shared, reg, &node)?;
    let limits = reg.store.limits();
    let max_ttl = limits.max_ttl.as_secs();
    let ttl = put.ttl_secs.unwrap_or(max_ttl).min(max_ttl);
    let stored_until = signed.record().expires.min(now.saturating_add(ttl));
    reg.store.insert(
        &signed,
        &put.namespaces,
        stored_until,
        now,
        Some(info.peer.ip()),
    )?;
    tracing::debug!(node = %node.short(), seq = signed.record().seq, "record registered");
    let stored = Stored {
        node,
        bytes,
        stored_until,
    };
    Ok(Json(View::of(&stored, &shared)?))
}

async fn get_record(
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<View>> {
    let reg = registry(&shared)?;
    admit(reg, info.peer.ip())?;
    let Path(text) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // The key bytes suffice to look up (only checked keys are stored), which spares the
    // point decompression of a full NodeId check on the hot path.
    let key = NodeId::text_to_bytes(&text)
        .map_err(|e| ApiError::bad_request(format!("bad node id in the path: {e}")))?;
    match reg.store.get(&key, unix_now()) {
        Some(stored) => Ok(Json(View::of(&stored, &shared)?)),
        None => {
            NodeId::from_bytes(key)
                .map_err(|e| ApiError::bad_request(format!("bad node id in the path: {e}")))?;
            Err(StoreError::NotFound.into())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    seq: u64,
    timestamp: u64,
    signature: String,
}

async fn delete_record(
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let reg = registry(&shared)?;
    admit(reg, info.peer.ip())?;
    let node = node_id(path)?;
    let del: DeleteBody = json_body(reg, &headers, body).await?;
    let signature = base64("signature", &del.signature)?;
    verify_delete(&node, del.seq, del.timestamp, &signature, unix_now())?;
    admit_key(&shared, reg, &node)?;
    reg.store.remove(&node, del.seq)?;
    tracing::debug!(node = %node.short(), "record deleted");
    Ok(Json(serde_json::json!({ "deleted": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    /// Capabilities every record listed has, comma-separated.
    require: Option<String>,
    /// `1` or `true`: only keys connected to this relay now.
    online: Option<String>,
    /// Only keys whose reputation here is at least this (0 to 1).
    min_reputation: Option<f64>,
}

/// How many records a filtered listing looks at for each one a page may hold.
const FILTERED_SCAN: usize = 20;

/// What a listing's filters ask of each record.
struct Filter {
    require: Vec<String>,
    online: bool,
    min_reputation: f64,
}

impl Filter {
    fn of(q: &ListQuery) -> ApiResult<Option<Filter>> {
        let require: Vec<String> = q
            .require
            .iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let online = match q.online.as_deref() {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "online={other:?}: give 1 or 0"
                )))
            }
        };
        let min_reputation = q.min_reputation.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&min_reputation) {
            return Err(ApiError::bad_request(
                "min_reputation is a share, from 0 to 1",
            ));
        }
        let any = !require.is_empty() || online || min_reputation > 0.0;
        Ok(any.then_some(Filter {
            require,
            online,
            min_reputation,
        }))
    }

    fn keeps(&self, stored: &Stored, shared: &Shared) -> bool {
        if self.online && !shared.presence.is_online(&stored.node) {
            return false;
        }
        if self.min_reputation > 0.0 && reputation(shared, &stored.node) < self.min_reputation {
            return false;
        }
        self.require.is_empty()
            || record_of(stored)
                .is_ok_and(|r| self.require.iter().all(|c| r.capabilities.contains(c)))
    }
}

#[derive(Serialize)]
struct Page {
    namespace: String,
    records: Vec<View>,
    next_cursor: Option<String>,
}

async fn list_namespace(
    State(shared): State<Arc<Shared>>,
    Extension(info): Extension<ConnInfo>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page>> {
    let reg = registry(&shared)?;
    admit(reg, info.peer.ip())?;
    let Path(namespace) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    super::check_namespace(&namespace)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            c.parse::<NodeId>()
                .map_err(|e| ApiError::bad_request(format!("bad cursor: {e}")))?,
        ),
        None => None,
    };
    let page_size = reg.store.limits().page_size;
    let limit = q.limit.unwrap_or(page_size).clamp(1, page_size);
    let filter = Filter::of(&q)?;
    let scan = match filter {
        Some(_) => limit.saturating_mul(FILTERED_SCAN),
        None => limit,
    };
    let (stored, next) =
        reg.store
            .list_where(&namespace, after.as_ref(), limit, unix_now(), scan, |s| {
                filter.as_ref().is_none_or(|f| f.keeps(s, &shared))
            });
    let records = stored
        .iter()
        .map(|s| View::of(s, &shared))
        .collect::<ApiResult<_>>()?;
    Ok(Json(Page {
        namespace,
        records,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryLimits;

    #[test]
    fn an_ipv6_site_shares_one_rate_limit() {
        let reg = Registry::new(Arc::new(RecordStore::new(RegistryLimits {
            ip_rate_per_sec: 0.001,
            ip_burst: 2,
            ..RegistryLimits::default()
        })));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(admit(&reg, ip("2001:db8:5:6::1")).is_ok());
        assert!(admit(&reg, ip("2001:db8:5:6:ffff::2")).is_ok());
        let refused = admit(&reg, ip("2001:db8:5:6:1:2:3:4")).unwrap_err();
        assert_eq!(refused.0, StatusCode::TOO_MANY_REQUESTS);
        // The next /64 and an IPv4 address are other sources.
        assert!(admit(&reg, ip("2001:db8:5:7::1")).is_ok());
        assert!(admit(&reg, ip("192.0.2.1")).is_ok());
        assert!(admit(&reg, ip("192.0.2.2")).is_ok());
    }
}
