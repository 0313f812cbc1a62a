//! Log patterns in the collector: a real agent ships an application log,
//! every stored line carries the pattern it joined when it arrived
//! (`pattern:<id>` finds them), the patterns outlive a restart, and a
//! tenant purge leaves none of the tenant's patterns on disk.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{stderr_of, wait_until, Collector, Settings, BIN};

fn app_log(users: &[&str], marker: &str) -> String {
    let mut s = String::new();
    for (i, user) in users.iter().enumerate() {
        s.push_str(&format!("Invalid user {user} from 10.0.0.{i} port 22\n"));
        s.push_str(&format!(
            "Connection closed by 10.1.0.{i} port {}\n",
            40000 + i
        ));
        if i % 3 == 0 {
            s.push_str(&format!(
                "payment {i} failed for order {} {marker}\n",
                900 + i
            ));
        }
    }
    s
}

/// Pattern id -> lines, as `patterns mine --assign` names them.
fn mined(file: &Path) -> BTreeMap<String, u64> {
    let out = Command::new(BIN)
        .args(["patterns", "mine", "--assign"])
        .arg(file)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut ids = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (id, _) = line.split_once('\t').expect("ID<TAB>TEMPLATE");
        *ids.entry(id.to_string()).or_default() += 1;
    }
    ids
}

fn ship(collector: &Collector, name: &str, token_file: &Path, file: &Path) {
    let mut agent = collector.agent_as(name, token_file, &[file], true);
    assert!(agent.wait().success(), "{}", agent.stderr());
}

#[test]
fn lines_carry_their_pattern_across_a_restart_and_a_purge_forgets_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut collector = Collector::start(root.path(), Settings::default());
    let users = ["ann", "bo", "cy", "di", "ed", "flo", "gus"];
    let file = root.path().join("app.log");
    std::fs::write(&file, app_log(&users, "defaultnote")).expect("write log");
    let expected = mined(&file);
    assert_eq!(expected.len(), 3, "three statements: {expected:?}");
    ship(&collector, "app", &collector.token_file, &file);
    let (users_id, _) = expected
        .iter()
        .find(|(_, &n)| n == users.len() as u64)
        .expect("the users' pattern");
    // A line is indexed with the pattern it joined when it arrived: the
    // users' slot opened at the sixth user, the five before were patterns
    // of their own then. The query for the pattern they merged into finds
    // them too.
    for (id, n) in &expected {
        collector.wait_for_count(&format!("pattern:{id}"), *n);
    }

    // The patterns are saved (on the rule snapshot's interval, and at a
    // clean shutdown) and restored: the eighth user joins the opened
    // pattern, which a fresh miner could not know (it would make `zed`'s
    // line a pattern of its own).
    assert!(
        collector.terminate().success(),
        "{}",
        collector.stderr_tail()
    );
    collector.restart();
    common::append(&file, "Invalid user zed from 10.9.9.9 port 22\n");
    ship(&collector, "app", &collector.token_file, &file);
    collector.wait_for_count(&format!("pattern:{users_id}"), users.len() as u64 + 1);
    assert_eq!(collector.count("zed"), 1);

    // A tenant's patterns go with the tenant.
    collector.operator(&["tenant", "create", "acme"]);
    let (_, acme_agent) =
        collector.new_token("acme-agent", &["--tenant", "acme", "--role", "agent"]);
    let (_, acme_admin) =
        collector.new_token("acme-admin", &["--tenant", "acme", "--role", "admin"]);
    let marker = "acmesecretnote"; // no digit: kept in the template
    let acme_file = root.path().join("acme.log");
    std::fs::write(&acme_file, app_log(&users, marker)).expect("write log");
    ship(&collector, "acme", &acme_agent, &acme_file);
    let state = collector.data_dir.join("patterns").join("state.json");
    let holds = |needle: &str| {
        std::fs::read(&state).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    wait_until("acme's patterns saved", || holds(marker).then_some(()));
    let out = collector.cli_as(&acme_admin, &["tenant", "purge", "acme", "--yes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until("acme's patterns gone from disk", || {
        (!holds(marker)).then_some(())
    });
    assert!(holds("defaultnote"), "another tenant's patterns stay");
}
