//! What a lab's homes are made of: the NAT kinds, the router variants and the link
//! conditions, with the classification a correct NAT discovery reaches for each kind.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};

/// The NAT behaviours the lab can build, each with the kernel's own NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// No NAT: the host has a routable address.
    Open,
    /// Endpoint-independent mapping and filtering (SNAT + DNAT of all inbound UDP).
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (plain MASQUERADE).
    PortRestrictedCone,
    /// Address-and-port-dependent mapping (MASQUERADE `--random-fully`).
    Symmetric,
    /// UDP dropped in the router (TCP still NATed).
    UdpBlocked,
    /// Two layers of MASQUERADE: home router onto 100.64.0.0/10, carrier onto its public address.
    Cgnat,
}

impl NatKind {
    /// Every kind, in a stable order.
    pub const ALL: [NatKind; 7] = [
        NatKind::Open,
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::Symmetric,
        NatKind::UdpBlocked,
        NatKind::Cgnat,
    ];

    /// Short name: `open`, `full-cone`, `restricted-cone`, `port-restricted-cone`,
    /// `symmetric`, `udp-blocked`, `cgnat`.
    pub fn name(self) -> &'static str {
        match self {
            NatKind::Open => "open",
            NatKind::FullCone => "full-cone",
            NatKind::RestrictedCone => "restricted-cone",
            NatKind::PortRestrictedCone => "port-restricted-cone",
            NatKind::Symmetric => "symmetric",
            NatKind::UdpBlocked => "udp-blocked",
            NatKind::Cgnat => "cgnat",
        }
    }

    /// The RFC 4787 mapping behaviour a correct classifier reports for this kind, in burrow's
    /// vocabulary (`none`, `endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent`, `unknown`).
    pub fn expected_mapping(self) -> &'static str {
        match self {
            NatKind::Open => "none",
            NatKind::FullCone
            | NatKind::RestrictedCone
            | NatKind::PortRestrictedCone
            | NatKind::Cgnat => "endpoint-independent",
            NatKind::Symmetric => "address-and-port-dependent",
            NatKind::UdpBlocked => "unknown",
        }
    }

    /// The RFC 4787 filtering behaviour a correct classifier reports for this kind.
    pub fn expected_filtering(self) -> &'static str {
        match self {
            NatKind::Open => "none",
            NatKind::FullCone => "endpoint-independent",
            NatKind::RestrictedCone => "address-dependent",
            NatKind::PortRestrictedCone | NatKind::Symmetric | NatKind::Cgnat => {
                "address-and-port-dependent"
            }
            NatKind::UdpBlocked => "unknown",
        }
    }

    /// The `nat_type` a correct classifier reports (`cgnat` looks like a port-restricted cone).
    pub fn expected_nat_type(self) -> &'static str {
        match self {
            NatKind::Cgnat => "port-restricted-cone",
            other => other.name(),
        }
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NatKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        NatKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| anyhow!("unknown NAT kind {s:?}"))
    }
}

/// The two ways real Linux routers treat packets addressed to themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouterVariant {
    /// A stateful firewall on the router's own WAN input: established/related accepted, the
    /// rest dropped silently (the default).
    #[default]
    Firewalled,
    /// No input rules: the router answers unsolicited packets itself (ICMP port unreachable)
    /// and keeps conntrack state for them.
    Bare,
}

impl RouterVariant {
    /// Both variants.
    pub const ALL: [RouterVariant; 2] = [RouterVariant::Firewalled, RouterVariant::Bare];

    /// `firewalled` or `bare`.
    pub fn name(self) -> &'static str {
        match self {
            RouterVariant::Firewalled => "firewalled",
            RouterVariant::Bare => "bare",
        }
    }
}

impl fmt::Display for RouterVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Impairments of a home's link to the internet. Each applies in each direction separately: a
/// delay of 50 ms adds 100 ms to a round trip, a loss of 5% drops 5% of the packets each way.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConditions {
    /// Random loss in percent (0..=100), with iptables `-m statistic`.
    pub loss_percent: f32,
    /// Rate limit in kbit/s, with a `tbf` qdisc on both ends of the link.
    pub rate_kbit: Option<u32>,
    /// One-way delay, with an NFQUEUE delay line in the namespace owning the home's WAN link.
    pub delay: Option<Duration>,
}

impl LinkConditions {
    pub(crate) fn is_none(&self) -> bool {
        self.loss_percent == 0.0 && self.rate_kbit.is_none() && self.delay.is_none()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=100.0).contains(&self.loss_percent),
            "loss_percent {} not in 0..=100",
            self.loss_percent
        );
        ensure!(self.rate_kbit != Some(0), "rate_kbit must be positive");
        ensure!(
            self.delay.is_none_or(|d| d <= Duration::from_secs(10)),
            "delay above 10s"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;

    #[test]
    fn kinds_round_trip_and_expectations_agree() {
        for k in NatKind::ALL {
            assert_eq!(k.name().parse::<NatKind>().unwrap(), k);
            let v = Verdict {
                mapping: k.expected_mapping().into(),
                filtering: k.expected_filtering().into(),
                raw: if k == NatKind::UdpBlocked {
                    String::new()
                } else {
                    "UDP reflexive addr".into()
                },
            };
            assert_eq!(v.nat_type(), k.expected_nat_type(), "{k}");
        }
    }
}
