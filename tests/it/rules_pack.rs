//! The default rule pack checks clean and passes its own fixtures.

use std::path::Path;

use nightowl::detect::cli::{cli_check, cli_test};

fn pack() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
}

#[test]
fn rules_pack_checks_clean() {
    let s = cli_check(pack()).expect("default pack is valid");
    assert!(s.rules >= 15, "{} rules", s.rules);
    assert!(s.fixtures >= s.rules, "{} fixtures", s.fixtures);
}

#[test]
fn rules_pack_fixtures_pass() {
    let mut out = Vec::new();
    let s = cli_test(pack(), &mut out).expect("fixtures run");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(s.failed, 0, "{text}");
    assert!(
        s.untested.is_empty(),
        "rules without fixtures: {:?}",
        s.untested
    );
    assert!(s.passed >= 15, "{text}");
}

#[test]
fn rules_pack_fixture_report_lists_every_rule() {
    let mut out = Vec::new();
    cli_test(pack(), &mut out).expect("fixtures run");
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    for id in [
        "web-login-brute-force",
        "web-log4shell",
        "web-host-silent",
        "web-traffic-spike-host",
    ] {
        assert!(
            text.contains(&format!("ok      {id} ::")),
            "{id} missing:\n{text}"
        );
    }
}
