//! The lab's self-check through the library: every NAT kind in both router variants must get
//! the verdict its kind promises from coturn's natdiscovery. Skipped without root, except under CI.

use burrow_lab::{selfcheck, Lab};

#[test]
fn every_kind_agrees_with_natdiscovery() {
    if !Lab::tests_allowed() {
        return;
    }
    let check = selfcheck().expect("self-check could not run");
    eprint!("{}", check.table());
    for r in check.rows.iter().filter(|r| !r.ok()) {
        eprintln!("===== {} / {} =====\n{}", r.kind, r.variant, r.got.raw);
    }
    assert!(check.passed(), "some NAT kinds disagree with natdiscovery");
}
