//! `burrow listen`, `burrow connect` and `burrow ping`: an [`Endpoint`] and the tool protocol
//! ([`burrow::tool`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use burrow::api::Pong;
use burrow::endpoint::{Connection, Endpoint, EndpointOptions, PathInfo};
use burrow::keyfile::{KeyFileError, KeyLock};
use burrow::publisher::{PublishEvent, PublisherOptions, RecordPublisher};
use burrow::relay_client::{RelayClient, RelayEvent, RelayUrl};
use burrow::ticket::Ticket;
use burrow::{tool, SecretKey};
use serde_json::json;

use crate::ping::PingOptions;

/// Options every peer command shares.
#[derive(clap::Args, Clone)]
pub(crate) struct NodeArgs {
    /// Secret key file; without it `listen` uses $BURROW_KEY or ~/.config/burrow/key, and
    /// `connect`/`ping` a fresh key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// STUN server for our public address, as IP:PORT; repeat for several [default: port
    /// 3478 on each relay's host].
    #[arg(long = "stun", value_name = "IP:PORT")]
    stun: Vec<SocketAddr>,
    /// Local UDP address to bind (IPv4).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:0")]
    pub bind: SocketAddr,
}

/// STUN servers: the flags, else port 3478 on each relay host.
pub(crate) async fn stun_servers(flags: &[SocketAddr], relays: &[RelayUrl]) -> Vec<SocketAddr> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    burrow::relay_client::relay_stun_servers(relays).await
}

async fn bind(
    args: &NodeArgs,
    key: SecretKey,
    relays: Vec<RelayUrl>,
    webrtc: bool,
) -> Result<Endpoint> {
    let stun_servers = stun_servers(&args.stun, &relays).await;
    let ep = Endpoint::bind(
        key,
        EndpointOptions {
            bind_v4: args.bind,
            // A chosen IPv4 address means a chosen interface: no IPv6 beside it.
            bind_v6: args
                .bind
                .ip()
                .is_unspecified()
                .then(|| "[::]:0".parse().expect("valid")),
            relays,
            stun_servers,
            alpns: vec![tool::ALPN.to_vec()],
            webrtc,
            ..Default::default()
        },
    )
    .await?;
    if let Some(relay) = ep.relay() {
        relay
            .wait_connected(Duration::from_secs(10))
            .await
            .context("no relay answered within 10 s")?;
    }
    Ok(ep)
}

fn path_json(p: &PathInfo) -> (&'static str, Option<String>, Option<f64>) {
    match p {
        PathInfo::Direct(d) => ("direct", Some(d.addr.to_string()), Some(ms(d.rtt))),
        PathInfo::Relay(url) => ("relay", url.as_ref().map(ToString::to_string), None),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Where `burrow listen` makes itself known.
pub(crate) struct Publish {
    /// Its record to the relays' registries (and the DHT, given bootstrap nodes).
    pub records: bool,
    /// Namespaces to be listed under.
    pub namespaces: Vec<String>,
    /// The secret closing those namespaces (then the DHT only lists them).
    pub namespace_secret: Option<Vec<u8>>,
    /// DHT nodes to join through; none means no DHT.
    pub dht_bootstrap: Vec<String>,
    /// Announce on the LAN.
    pub mdns: bool,
}

/// The key in `path` (created if missing), locked for as long as the lock is held: a node
/// that shares its key with another running one would fight it at every relay.
fn locked_key(path: &Path) -> Result<(SecretKey, KeyLock)> {
    burrow::keyfile::load_and_lock(path).map_err(|e| match e {
        KeyFileError::InUse { .. } => {
            anyhow!("{e}; use --key FILE to give this node its own key")
        }
        e => e.into(),
    })
}

/// `burrow listen`.
pub(crate) async fn listen(
    args: NodeArgs,
    relays: Vec<RelayUrl>,
    publish: Publish,
    webrtc: bool,
    json_out: bool,
) -> Result<()> {
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(burrow::keyfile::default_path);
    // Held until listen returns.
    let (key, _lock) = locked_key(&key_path)?;
    if publish.namespace_secret.is_some() && publish.records && !relays.is_empty() {
        eprintln!(
            "warning: closed namespaces ({}) go to the DHT only, not to the registries, \
             whose listings are public",
            publish.namespaces.join(", ")
        );
    }
    if relays.is_empty() {
        eprintln!("warning: no --relay: only peers that can reach this host directly will connect");
    }
    let ep = bind(&args, key.clone(), relays.clone(), webrtc).await?;
    #[cfg(feature = "webrtc")]
    let pages = webrtc.then(|| tokio::spawn(crate::pages::echo_pages(ep.clone(), json_out)));
    let mut relay_events = ep.relay().map(RelayClient::events);
    ep.wait_public_addr(Duration::from_secs(2)).await;
    let ticket = ep.ticket();
    // Peers on the LAN find this node with nothing configured.
    let lan = publish
        .mdns
        .then(|| {
            let config = burrow::mdns::MdnsConfig::for_bind(args.bind.ip());
            crate::discover::announce_on_lan(&ep, &ticket, &config)
        })
        .flatten();
    if json_out {
        println!(
            "{}",
            json!({"node_id": ep.node_id().to_string(), "ticket": ticket.to_string(),
                "relays": ticket.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "addrs": ticket.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "mdns": lan.is_some()})
        );
    } else {
        println!("node id: {}", ep.node_id());
        println!("ticket:  {ticket}");
        if lan.is_some() {
            println!(
                "announced on the LAN (mDNS): burrow connect {}",
                ep.node_id()
            );
        }
        println!("waiting for connections (burrow connect TICKET); Ctrl-C stops");
    }
    // The signed record goes to each relay's registry, so `burrow resolve` finds this node,
    // and into the DHT when one was given; dropped when listen returns, which stops it.
    let mut publisher = if publish.records {
        let dht = crate::discover::dht(&publish.dht_bootstrap).await?;
        let ep = ep.clone();
        let options = PublisherOptions {
            registries: relays,
            dht,
            namespaces: publish.namespaces,
            namespace_secret: publish.namespace_secret,
            ..Default::default()
        };
        Some(RecordPublisher::start(key, move || ep.ticket(), options)?)
    } else {
        None
    };
    loop {
        tokio::select! {
            c = ep.accept() => match c {
                Some(c) => { tokio::spawn(serve(ep.clone(), c, json_out)); }
                None => break,
            },
            e = async {
                match &mut publisher {
                    Some(p) => p.next_event().await,
                    None => std::future::pending().await,
                }
            } => print_publish_event(e, json_out),
            // A lagging or closed receiver disables the branch for this turn only.
            Some(Ok(e)) = async {
                match &mut relay_events {
                    Some(r) => Some(r.recv().await),
                    None => None,
                }
            } => print_relay_event(e, json_out),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(publisher);
    drop(lan);
    #[cfg(feature = "webrtc")]
    if let Some(pages) = pages {
        pages.abort();
    }
    ep.close().await;
    Ok(())
}

/// One line per publisher event: JSON on stdout, or a status line on stderr.
fn print_publish_event(event: PublishEvent, json_out: bool) {
    // The error with its causes, as the CLI prints errors.
    let chain = |e: anyhow::Error| format!("{e:#}");
    let (json, line) = match event {
        PublishEvent::Published {
            source,
            seq,
            stored,
        } => (
            json!({"event": "published", "source": source.to_string(), "seq": seq,
                "stored": stored}),
            format!(
                "record published at {source} (seq {seq}{})",
                stored.map_or(String::new(), |n| format!(", stored by {n} DHT nodes"))
            ),
        ),
        PublishEvent::PublishFailed { source, error } => {
            let error = chain(error.into());
            (
                json!({"event": "publish_failed", "source": source.to_string(),
                    "error": error}),
                format!("warning: record not published at {source}: {error}"),
            )
        }
        PublishEvent::Announced { namespace } => (
            json!({"event": "announced", "namespace": namespace, "source": "dht"}),
            format!("announced in the DHT under namespace {namespace}"),
        ),
        PublishEvent::AnnounceFailed { namespace, error } => {
            let error = chain(error.into());
            (
                json!({"event": "announce_failed", "namespace": namespace, "source": "dht",
                    "error": error}),
                format!("warning: not announced in the DHT under namespace {namespace}: {error}"),
            )
        }
    };
    if json_out {
        println!("{json}");
    } else {
        eprintln!("{line}");
    }
}

/// A relay event as a JSON line; people read the library's warning, which says it already.
fn print_relay_event(event: RelayEvent, json_out: bool) {
    match event {
        RelayEvent::Replaced { relay, retry_in } if json_out => println!(
            "{}",
            json!({"event": "relay_replaced", "relay": relay.to_string(),
                "retry_in_ms": retry_in.as_millis() as u64,
                "error": "another node is using this node's key at this relay"})
        ),
        _ => {}
    }
}

/// Serves one accepted connection, reporting it and its path changes.
async fn serve(ep: Endpoint, conn: Connection, json_out: bool) {
    let peer = conn.remote;
    let report = {
        let ep = ep.clone();
        move |event: &str, extra: serde_json::Value| {
            let (path, addr, rtt) = path_json(&ep.path(&peer));
            if json_out {
                let mut v = json!({"event": event, "node_id": peer.to_string(),
                "path": path, "remote_addr": addr, "rtt_ms": rtt});
                if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                    o.extend(e);
                }
                println!("{v}");
            } else {
                println!(
                    "{event} {} via {path} {}",
                    peer.short(),
                    addr.unwrap_or_default()
                );
            }
        }
    };
    report("connected", json!({}));
    let watch = {
        let ep = ep.clone();
        let report = report.clone();
        tokio::spawn(async move {
            let mut last = ep.path(&peer);
            loop {
                ep.path_changed().await;
                let now = ep.path(&peer);
                if std::mem::discriminant(&now) != std::mem::discriminant(&last) {
                    report("path", json!({}));
                }
                last = now;
            }
        })
    };
    let bytes = tool::serve(conn).await;
    watch.abort();
    report("closed", json!({"bytes": bytes}));
}

/// A node key for `connect` and `ping`: the file given (locked), or a fresh one.
fn dial_key(args: &NodeArgs) -> Result<(SecretKey, Option<KeyLock>)> {
    Ok(match &args.key {
        Some(path) => {
            let (key, lock) = locked_key(path)?;
            (key, Some(lock))
        }
        None => (SecretKey::from_bytes(rand::random()), None),
    })
}

async fn dial(
    args: &NodeArgs,
    key: SecretKey,
    ticket: &Ticket,
) -> Result<(Endpoint, Connection, Instant)> {
    let ep = bind(args, key, ticket.relays.clone(), false).await?;
    let start = Instant::now();
    let conn = tokio::time::timeout(Duration::from_secs(15), ep.connect(ticket, tool::ALPN))
        .await
        .context("no answer from the peer within 15 s")??;
    Ok((ep, conn, start))
}

/// `burrow connect`.
pub(crate) async fn connect(
    args: NodeArgs,
    ticket: Ticket,
    bytes: u64,
    direct_timeout: Duration,
    json_out: bool,
) -> Result<()> {
    let (key, _lock) = dial_key(&args)?;
    let (ep, conn, start) = dial(&args, key, &ticket).await?;
    tool::greeting(&conn).await?;
    let ttfb = start.elapsed();
    let peer = conn.remote;
    // QUIC's RTT estimate is all relay hops while the connection is still relayed.
    let relay_rtt = matches!(ep.path(&peer), PathInfo::Relay(_)).then(|| conn.quic.rtt());
    // Moves between the relay and a direct path, for the whole run.
    let path_changes = Arc::new(AtomicU64::new(0));
    let watch = {
        let (ep, changes) = (ep.clone(), path_changes.clone());
        let mut last = std::mem::discriminant(&ep.path(&peer));
        tokio::spawn(async move {
            loop {
                ep.path_changed().await;
                let now = std::mem::discriminant(&ep.path(&peer));
                if now != last {
                    changes.fetch_add(1, Ordering::Relaxed);
                    last = now;
                }
            }
        })
    };
    let direct_deadline = start + direct_timeout;
    let to_direct = loop {
        if let PathInfo::Direct(_) = ep.path(&peer) {
            break Some(start.elapsed());
        }
        let left = direct_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, ep.path_changed()).await.is_err() {
            break None;
        }
    };
    if !json_out {
        eprintln!(
            "connected to {} in {:.1} ms{}",
            peer.short(),
            ms(ttfb),
            match to_direct {
                Some(t) => format!(", direct after {:.1} ms", ms(t)),
                None => format!(", still relayed after {direct_timeout:?}"),
            }
        );
    }
    let took = if bytes > 0 {
        Some(tool::send_bytes(&conn, bytes).await?)
    } else {
        None
    };
    watch.abort();
    let (path, addr, rtt) = path_json(&ep.path(&peer));
    let rtt = rtt.or_else(|| Some(ms(conn.quic.rtt())));
    let mbps = took.map(|t| bytes as f64 * 8.0 / t.as_secs_f64() / 1e6);
    if json_out {
        println!(
            "{}",
            json!({"connected": true, "path": path, "remote_addr": addr,
                "time_to_first_byte_ms": ms(ttfb), "time_to_direct_ms": to_direct.map(ms),
                "relay_rtt_ms": relay_rtt.map(ms),
                "path_changes": path_changes.load(Ordering::Relaxed),
                "rtt_ms": rtt, "bytes": bytes, "throughput_mbps": mbps})
        );
    } else {
        println!("path:        {path} {}", addr.unwrap_or_default());
        println!("rtt:         {:.1} ms", rtt.unwrap_or_default());
        if let Some(m) = mbps {
            println!("transferred: {bytes} bytes at {m:.1} Mbit/s");
        }
    }
    conn.quic.close(0u32.into(), b"done");
    ep.close().await;
    Ok(())
}

/// `burrow ping`.
pub(crate) async fn ping(args: NodeArgs, ticket: Ticket, opts: PingOptions) -> Result<()> {
    let (key, _lock) = dial_key(&args)?;
    let (ep, conn, _) = dial(&args, key, &ticket).await?;
    let peer = conn.remote;
    let (ep_ref, conn_ref) = (&ep, &conn);
    let result = crate::ping::run(opts, &peer.short(), |seq| async move {
        match tool::ping(conn_ref, seq, Duration::from_secs(2)).await {
            Ok(Some(rtt)) => Ok(Pong::new(ep_ref, peer, rtt)),
            Ok(None) => Err("timeout".to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    conn.quic.close(0u32.into(), b"done");
    ep.close().await;
    result
}
