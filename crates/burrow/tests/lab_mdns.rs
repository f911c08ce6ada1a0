//! mDNS between two hosts on one LAN segment of the NAT lab: a home's host and its router,
//! joined by one veth link. Multicast stays inside the lab's namespaces.
//!
//! Needs root. Without it the test skips and says so, except under CI (CI=true), where a skip
//! is a failure because CI runs as root.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use burrow::mdns::{Mdns, MdnsConfig, MdnsEvent};
use burrow::{NodeId, SecretKey};
use burrow_lab::{Lab, NatKind, RouterVariant};

/// Waits for the first event about `node`.
async fn event_for(browser: &mut burrow::mdns::MdnsBrowser, node: NodeId) -> MdnsEvent {
    let wait = async {
        loop {
            let e = browser.next().await.expect("browser ended");
            if matches!(&e, MdnsEvent::Found { node: n, .. } | MdnsEvent::Lost { node: n } if *n == node)
            {
                return e;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("an mDNS event within 10 s")
}

#[test]
fn two_hosts_on_a_lan_find_each_other_and_see_one_leave() {
    if !Lab::tests_allowed() {
        return;
    }
    let lab = Lab::builder()
        .home("lan", NatKind::Open, RouterVariant::Bare)
        .build()
        .expect("lab builds");
    let host_ip = IpAddr::V4(lab.host_ip("lan"));
    let (host_ns, router_ns) = (lab.host_ns("lan"), lab.router_ns("lan"));
    // Each daemon's sockets live in its namespace, on that namespace's LAN interface only.
    let start = |ns: &str, ifname: &str| {
        let config = MdnsConfig {
            interfaces: vec![ifname.to_string()],
            ..Default::default()
        };
        lab.in_ns(ns, || Ok(Mdns::new(&config)?))
            .expect("mdns starts")
    };
    let mut on_host = start(host_ns, "bw-up");
    let mut on_router = start(router_ns, "bw-lan");
    let (host_key, router_key) = (
        SecretKey::from_bytes(rand::random()),
        SecretKey::from_bytes(rand::random()),
    );
    let host_addr = SocketAddr::new(host_ip, 41641);
    on_host
        .announce(
            host_key.node_id(),
            41641,
            &[host_addr],
            Some("http://203.0.113.30:8080"),
        )
        .unwrap();
    // The router lets the daemon publish its interface addresses itself.
    on_router
        .announce(router_key.node_id(), 41642, &[], None)
        .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut host_sees = on_host.browse().unwrap();
        let mut router_sees = on_router.browse().unwrap();

        let MdnsEvent::Found { addrs, relay, .. } =
            event_for(&mut router_sees, host_key.node_id()).await
        else {
            panic!("first event is Found");
        };
        assert_eq!(addrs, vec![host_addr]);
        assert_eq!(relay.as_deref(), Some("http://203.0.113.30:8080"));

        let MdnsEvent::Found { addrs, relay, .. } =
            event_for(&mut host_sees, router_key.node_id()).await
        else {
            panic!("first event is Found");
        };
        assert_eq!(relay, None);
        // Its LAN address (the host's gateway), from the interface it was limited to; not
        // its WAN address.
        let mut gateway = lab.host_ip("lan").octets();
        gateway[3] = 1;
        let lan = SocketAddr::from((gateway, 41642));
        assert!(addrs.contains(&lan), "{addrs:?} lacks {lan}");
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 41642 && !a.ip().to_string().starts_with("198.18.")),
            "{addrs:?}"
        );

        // The router leaves: its goodbye reaches the host.
        drop(on_router);
        assert_eq!(
            event_for(&mut host_sees, router_key.node_id()).await,
            MdnsEvent::Lost {
                node: router_key.node_id()
            }
        );
    });
}
