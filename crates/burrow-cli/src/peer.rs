//! `burrow listen`, `burrow connect` and `burrow ping`: an [`Endpoint`] and the tool protocol
//! ([`burrow::tool`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burrow::endpoint::{Connection, Endpoint, EndpointOptions, PathInfo};
use burrow::relay_client::RelayUrl;
use burrow::ticket::Ticket;
use burrow::{tool, SecretKey};
use serde_json::json;

/// Options every peer command shares.
#[derive(clap::Args, Clone)]
pub struct NodeArgs {
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
async fn stun_servers(flags: &[SocketAddr], relays: &[RelayUrl]) -> Vec<SocketAddr> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    let mut out = Vec::new();
    for r in relays {
        if let Ok(addrs) = tokio::net::lookup_host((r.host(), 3478)).await {
            out.extend(addrs.filter(SocketAddr::is_ipv4));
        }
    }
    out
}

async fn bind(args: &NodeArgs, key: SecretKey, relays: Vec<RelayUrl>) -> Result<Endpoint> {
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
pub struct Publish {
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

/// `burrow listen`.
pub async fn listen(
    args: NodeArgs,
    relays: Vec<RelayUrl>,
    publish: Publish,
    json_out: bool,
) -> Result<()> {
    let Publish {
        records: publish,
        namespaces,
        namespace_secret,
        dht_bootstrap,
        mdns,
    } = publish;
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(burrow::keyfile::default_path);
    let key = burrow::keyfile::load_or_create(&key_path)?;
    // A registry lists namespaces for anyone to read: a closed one must stay out of it.
    let registry_namespaces = if namespace_secret.is_some() {
        if publish && !relays.is_empty() {
            eprintln!(
                "warning: closed namespaces ({}) go to the DHT only, not to the registries, \
                 whose listings are public",
                namespaces.join(", ")
            );
        }
        Vec::new()
    } else {
        namespaces.clone()
    };
    if relays.is_empty() {
        eprintln!("warning: no --relay: only peers that can reach this host directly will connect");
    }
    let ep = bind(&args, key.clone(), relays.clone()).await?;
    ep.wait_public_addr(Duration::from_secs(2)).await;
    let ticket = ep.ticket();
    // Peers on the LAN find this node with nothing configured.
    let lan = mdns
        .then(|| {
            let config = crate::discover::mdns_config(args.bind.ip());
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
    // The record also goes into the DHT when one was given.
    let dht = if publish {
        crate::discover::dht(&dht_bootstrap).await?
    } else {
        None
    };
    let in_dht = match &dht {
        Some(d) => Some(crate::discover::keep_in_dht(d, &key, &ticket)?),
        None => None,
    };
    // Dropped when listen returns, which stops the re-announcing.
    let _announced = match &dht {
        Some(d) => crate::discover::keep_announced(
            d,
            &key,
            &namespaces,
            namespace_secret.as_deref(),
            json_out,
        ),
        None => Vec::new(),
    };
    // The signed record goes to each relay's registry, so `burrow resolve` finds this node;
    // both copies are renewed (fresh addresses, expiry and seq) every few minutes.
    let publisher = (publish && (!relays.is_empty() || in_dht.is_some())).then(|| {
        let ep = ep.clone();
        tokio::spawn(async move {
            loop {
                if !relays.is_empty() {
                    let ticket = ep.ticket();
                    match crate::discover::publish(&relays, &key, &ticket, &registry_namespaces)
                        .await
                    {
                        Ok(n) if json_out => {
                            println!("{}", json!({"event": "published", "registries": n}))
                        }
                        Ok(n) => {
                            eprintln!("record published at {n} of {} registries", relays.len())
                        }
                        Err(e) => eprintln!("warning: publishing the record: {e:#}"),
                    }
                }
                tokio::time::sleep(crate::discover::REPUBLISH_EVERY).await;
                if let Some(r) = &in_dht {
                    if let Err(e) = crate::discover::update_in_dht(r, &key, &ep.ticket()) {
                        eprintln!("warning: renewing the DHT record: {e:#}");
                    }
                }
            }
        })
    });
    loop {
        let conn = tokio::select! {
            c = ep.accept() => match c { Some(c) => c, None => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        let ep = ep.clone();
        tokio::spawn(async move {
            let peer = conn.remote;
            let report = {
                let ep = ep.clone();
                move |event: &str, extra: serde_json::Value| {
                    let (path, addr, rtt) = path_json(&ep.path(&peer));
                    if json_out {
                        let mut v = json!({"event": event, "node_id": peer.to_string(),
                        "path": path, "remote_addr": addr, "rtt_ms": rtt});
                        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra)
                        {
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
        });
    }
    if let Some(p) = publisher {
        p.abort();
    }
    drop(lan);
    ep.close().await;
    Ok(())
}

async fn dial(args: &NodeArgs, ticket: &Ticket) -> Result<(Endpoint, Connection, Instant)> {
    let key = match &args.key {
        Some(path) => burrow::keyfile::load_or_create(path)?,
        None => SecretKey::from_bytes(rand::random()),
    };
    let ep = bind(args, key, ticket.relays.clone()).await?;
    let start = Instant::now();
    let conn = tokio::time::timeout(Duration::from_secs(15), ep.connect(ticket, tool::ALPN))
        .await
        .context("no answer from the peer within 15 s")??;
    Ok((ep, conn, start))
}

/// `burrow connect`.
pub async fn connect(
    args: NodeArgs,
    ticket: Ticket,
    bytes: u64,
    direct_timeout: Duration,
    json_out: bool,
) -> Result<()> {
    let (ep, conn, start) = dial(&args, &ticket).await?;
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
pub async fn ping(args: NodeArgs, ticket: Ticket, count: u64, interval: Duration) -> Result<()> {
    let (ep, conn, _) = dial(&args, &ticket).await?;
    let peer = conn.remote;
    let mut answered = 0;
    for seq in 1..=count {
        let rtt = tool::ping(&conn, seq, Duration::from_secs(2)).await?;
        let (path, addr, _) = path_json(&ep.path(&peer));
        let via = format!("{path} {}", addr.unwrap_or_default());
        match rtt {
            Some(rtt) => {
                answered += 1;
                println!("pong from {} via {via} in {:.1} ms", peer.short(), ms(rtt));
            }
            None => println!("timeout (seq {seq}) via {via}"),
        }
        if seq < count {
            tokio::time::sleep(interval).await;
        }
    }
    conn.quic.close(0u32.into(), b"done");
    ep.close().await;
    if answered == 0 {
        bail!("no pong in {count} pings");
    }
    Ok(())
}
