//! `iptables-restore` / `ipset restore` input for the routers of each NAT kind.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::{LinkConditions, NatKind, RouterVariant};

/// WAN interface of every router (toward the internet, or toward the carrier for `cgnat`).
pub(crate) const WAN: &str = "bw-wan";
/// LAN interface of a home router.
pub(crate) const LAN: &str = "bw-lan";
/// ipset holding (remote IP, mapped port) pairs a restricted-cone mapping has sent to.
pub(crate) const RC_SET: &str = "bw-rc";
/// NFQUEUE number of a delay line (queues are per namespace, so one number is enough).
pub(crate) const DELAY_QUEUE: u16 = 0;

/// `ipset restore` input a router of `kind` needs, if any.
pub(crate) fn ipset_script(kind: NatKind) -> Option<String> {
    // Entries expire like a UDP NAT binding would; each outbound packet refreshes its entry.
    (kind == NatKind::RestrictedCone).then(|| format!("create {RC_SET} hash:ip,port timeout 180\n"))
}

/// Rules for the NAT of a home router.
pub(crate) struct RouterRules {
    pub kind: NatKind,
    pub variant: RouterVariant,
    /// The router's own WAN address (SNAT target).
    pub wan_ip: Ipv4Addr,
    /// The LAN address of the home's end host (DNAT target).
    pub host_ip: Ipv4Addr,
    /// Conditions of the link toward the internet when this router owns it.
    pub conditions: Option<LinkConditions>,
}

/// `iptables-restore` input for a home router.
pub(crate) fn router_rules(r: &RouterRules) -> String {
    let mut filter = String::new();
    let mut nat = String::new();
    firewall(&mut filter, r.variant);
    let (wan_ip, host) = (r.wan_ip, r.host_ip);
    match r.kind {
        // Plain routing: the host's address is routable from the internet.
        NatKind::Open => {}
        // Port-preserving SNAT plus DNAT of any inbound UDP: once a mapping exists, anyone can
        // reach it (endpoint-independent mapping and filtering).
        NatKind::FullCone => {
            w(
                &mut nat,
                format!("-A PREROUTING -i {WAN} -p udp -j DNAT --to-destination {host}"),
            );
            w(
                &mut nat,
                format!("-A POSTROUTING -o {WAN} -j SNAT --to-source {wan_ip}"),
            );
        }
        // As full cone, but inbound UDP is let in only from a remote IP this mapping has sent to
        // (any port of it). The set is keyed per mapping (remote IP, port) rather than per remote
        // IP (`-m recent`), so a second socket of the host does not inherit the first one's
        // permissions. The key uses the pre-NAT source port, which SNAT preserves.
        NatKind::RestrictedCone => {
            w(
                &mut filter,
                format!(
                    "-A FORWARD -i {LAN} -o {WAN} -p udp -j SET --add-set {RC_SET} dst,src --exist"
                ),
            );
            w(
                &mut nat,
                format!(
                    "-A PREROUTING -i {WAN} -p udp -m set --match-set {RC_SET} src,dst \
                     -j DNAT --to-destination {host}"
                ),
            );
            w(
                &mut nat,
                format!("-A POSTROUTING -o {WAN} -j SNAT --to-source {wan_ip}"),
            );
        }
        // Conntrack only lets replies in: address-and-port-dependent filtering; MASQUERADE keeps
        // the source port, so mapping stays endpoint-independent.
        NatKind::PortRestrictedCone | NatKind::Cgnat => {
            w(&mut nat, format!("-A POSTROUTING -o {WAN} -j MASQUERADE"));
        }
        // A fresh random port for every new 5-tuple: address-and-port-dependent mapping.
        NatKind::Symmetric => {
            w(
                &mut nat,
                format!("-A POSTROUTING -o {WAN} -j MASQUERADE --random-fully"),
            );
        }
        // NAT for TCP (a TCP relay must still work), UDP dropped both ways.
        NatKind::UdpBlocked => {
            w(&mut filter, "-A FORWARD -p udp -j DROP".to_string());
            w(&mut nat, format!("-A POSTROUTING -o {WAN} -j MASQUERADE"));
        }
    }
    restore_input(&filter, &nat, r.conditions.as_ref())
}

/// `iptables-restore` input for the carrier router of a `cgnat` home (the second NAT layer).
pub(crate) fn carrier_rules(variant: RouterVariant, conditions: Option<&LinkConditions>) -> String {
    let mut filter = String::new();
    let mut nat = String::new();
    firewall(&mut filter, variant);
    w(&mut nat, format!("-A POSTROUTING -o {WAN} -j MASQUERADE"));
    restore_input(&filter, &nat, conditions)
}

/// The stateful firewall on the router's own WAN input (Firewalled), or nothing (Bare). A bare
/// router answers unsolicited packets itself (ICMP port unreachable) and keeps a conntrack entry
/// for them, which can make it pick another port for a later outbound flow to that peer.
fn firewall(filter: &mut String, variant: RouterVariant) {
    if variant == RouterVariant::Firewalled {
        w(
            filter,
            format!("-A INPUT -i {WAN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
        );
        w(filter, format!("-A INPUT -i {WAN} -j DROP"));
    }
}

fn restore_input(filter: &str, nat: &str, conditions: Option<&LinkConditions>) -> String {
    let mut raw = String::new();
    let mut mangle = String::new();
    if let Some(c) = conditions {
        if c.loss_percent > 0.0 {
            // Same loss rate in each direction; dropped in raw so a lost packet leaves no state.
            let p = f64::from(c.loss_percent) / 100.0;
            let m = format!("-m statistic --mode random --probability {p:.6}");
            w(&mut raw, format!("-A PREROUTING -i {WAN} {m} -j DROP"));
            w(&mut mangle, format!("-A POSTROUTING -o {WAN} {m} -j DROP"));
        }
        if c.delay.is_some_and(|d| !d.is_zero()) {
            // The in-process delay line holds each packet; bypass lets packets through
            // undelayed rather than dropping them if no delay line listens.
            let q = format!("-j NFQUEUE --queue-num {DELAY_QUEUE} --queue-bypass");
            w(&mut raw, format!("-A PREROUTING -i {WAN} {q}"));
            w(&mut mangle, format!("-A POSTROUTING -o {WAN} {q}"));
        }
    }
    let mut out = String::new();
    let tables: [(&str, &[&str], &str); 4] = [
        ("raw", &["PREROUTING", "OUTPUT"], &raw),
        (
            "mangle",
            &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            &mangle,
        ),
        ("filter", &["INPUT", "FORWARD", "OUTPUT"], filter),
        (
            "nat",
            &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            nat,
        ),
    ];
    for (table, chains, rules) in tables {
        if rules.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for chain in chains {
            let _ = writeln!(out, ":{chain} ACCEPT [0:0]");
        }
        out.push_str(rules);
        out.push_str("COMMIT\n");
    }
    out
}

fn w(buf: &mut String, line: String) {
    buf.push_str(&line);
    buf.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rules(kind: NatKind, variant: RouterVariant) -> String {
        router_rules(&RouterRules {
            kind,
            variant,
            wan_ip: "198.18.1.2".parse().unwrap(),
            host_ip: "10.1.0.2".parse().unwrap(),
            conditions: None,
        })
    }

    #[test]
    fn kinds_get_their_nat() {
        assert!(rules(NatKind::Open, RouterVariant::Bare).is_empty());
        assert!(!rules(NatKind::Open, RouterVariant::Firewalled).contains("*nat"));
        assert!(rules(NatKind::Symmetric, RouterVariant::Bare).contains("--random-fully"));
        let rc = rules(NatKind::RestrictedCone, RouterVariant::Firewalled);
        assert!(rc.contains("--add-set bw-rc dst,src"));
        assert!(rc.contains("--match-set bw-rc src,dst"));
        assert!(rc.contains("-A INPUT -i bw-wan -j DROP"));
        assert!(rules(NatKind::UdpBlocked, RouterVariant::Bare).contains("-p udp -j DROP"));
    }

    #[test]
    fn conditions_add_loss_and_queue() {
        let c = LinkConditions {
            loss_percent: 5.0,
            rate_kbit: None,
            delay: Some(Duration::from_millis(20)),
        };
        let r = carrier_rules(RouterVariant::Bare, Some(&c));
        assert!(r.contains("--probability 0.050000"));
        assert!(r.contains("NFQUEUE --queue-num 0"));
        assert!(r.contains("*raw") && r.contains("*mangle"));
    }
}
