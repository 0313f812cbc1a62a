//! `nightowl completions SHELL` prints a completion script covering every
//! subcommand, so operators get tab completion from the binary itself.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nightowl");

#[test]
fn completion_scripts_cover_the_subcommands() {
    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    for word in [
        "collector",
        "agent",
        "search",
        "backtest",
        "silence",
        "tenant",
        "token",
        "audit",
        "--since",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    let zsh = Command::new(BIN)
        .args(["completions", "zsh"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef nightowl"));
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is bad usage");
}
