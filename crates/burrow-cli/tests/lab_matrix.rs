//! The `matrix` scenario of the NAT lab (see `burrow_lab::matrix`): every pair of NAT kinds,
//! both router variants, 20 ms one-way per home link. Every pair must connect, go direct
//! wherever physics allows (symmetric x cone pairs in at least 9 of 10 runs, within 10 s;
//! easy pairs within 1 s), and bring the first byte within two relay round trips.
//!
//! Needs root. Without it the test skips and says so, except under CI (CI=true), where a skip is
//! a failure because CI runs as root. `burrow-lab matrix` runs the same scenario by hand.

use burrow_lab::matrix::{run_matrix, MatrixOptions};
use burrow_lab::Lab;

#[test]
fn every_pair_connects_and_goes_direct_wherever_physics_allows() {
    if !Lab::tests_allowed() {
        return;
    }
    let opts = MatrixOptions::new(env!("CARGO_BIN_EXE_burrow").into());
    let report = run_matrix(&opts, &|r| eprintln!("{r}")).expect("the matrix runs");
    eprintln!("{}", report.table());
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}
