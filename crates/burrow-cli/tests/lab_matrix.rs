//! The `matrix` scenario of the NAT lab (see `burrow_lab::matrix`): every pair of NAT kinds,
//! both router variants, 20 ms one-way per home link, a relay with two addresses. Every pair
//! must connect, go direct wherever physics allows (symmetric x cone pairs in at least 9 of 10
//! runs, within 10 s; easy pairs within 1 s), and bring the first byte within two relay round
//! trips. Then a fast subset with the relay (and its STUN) on one address, as on most rented
//! servers: symmetric against the cone kinds that CI has time for, both directions.
//!
//! Needs root. Without it the test skips and says so, except under CI (CI=true), where a skip is
//! a failure because CI runs as root. `burrow-lab matrix` runs the same scenario by hand.

use burrow_lab::burrow::RelayHost;
use burrow_lab::matrix::{run_matrix, MatrixOptions, Pairs};
use burrow_lab::{Lab, NatKind, RouterVariant};

#[test]
fn every_pair_connects_and_goes_direct_wherever_physics_allows() {
    if !Lab::tests_allowed() {
        return;
    }
    let mut opts = MatrixOptions::new(env!("CARGO_BIN_EXE_burrow").into());
    opts.relay_hosts = vec![RelayHost::TwoAddresses];
    let mut report = run_matrix(&opts, &|r| eprintln!("{r}")).expect("the matrix runs");
    // The same labs one after the other, not side by side: their timings must not compete.
    opts.relay_hosts = vec![RelayHost::OneAddress];
    opts.variants = vec![RouterVariant::Firewalled];
    opts.kinds = vec![
        NatKind::Symmetric,
        NatKind::PortRestrictedCone,
        NatKind::Cgnat,
    ];
    opts.pairs = Pairs::WithSymmetric;
    let one = run_matrix(&opts, &|r| eprintln!("{r}")).expect("the one-address matrix runs");
    report.runs.extend(one.runs);
    eprintln!("{}", report.table());
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}
