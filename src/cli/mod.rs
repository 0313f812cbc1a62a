//! Client-side commands: talking to a collector's HTTPS API.

pub mod admin;
pub mod agent;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod backtest;
pub mod backup;
pub mod cert;
/// The HTTPS client lives with the API it speaks to (the collector's
/// fan-out uses it too); the CLI keeps its old path.
pub use crate::api::client as http;
pub mod redact;
pub mod rules;
pub mod search;

pub use crate::error::{usage, UsageError};

use std::path::PathBuf;

use anyhow::Result;

/// Where the collector's HTTPS API is and how to authenticate to it.
#[derive(clap::Args)]
pub struct ApiArgs {
    #[arg(
        long,
        env = "NIGHTOWL_SERVER",
        default_value = "https://127.0.0.1:7443"
    )]
    pub server: String,
    #[arg(long, env = "NIGHTOWL_CA")]
    pub ca: PathBuf,
    #[arg(long, env = "NIGHTOWL_TOKEN_FILE")]
    pub token_file: PathBuf,
}

pub(crate) fn admin_api(api: ApiArgs) -> Result<admin::Api> {
    Ok(admin::Api {
        token: token(&api.token_file)?,
        server: api.server,
        ca: api.ca,
    })
}

pub(crate) fn token(path: &std::path::Path) -> Result<String> {
    crate::auth::read_token_file(path).map_err(|e| usage(format!("{e:#}")))
}

/// `--since`/`--until` as the user wrote them, checked before any request.
pub(crate) fn check_range(since: Option<&str>, until: Option<&str>) -> Result<()> {
    if let Some(since) = since {
        check_time_flag("--since", since)?;
    }
    if let Some(until) = until {
        check_time_flag("--until", until)?;
    }
    Ok(())
}

pub fn init_logging(json: bool, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a person at a terminal: a log file or journald
    // would keep the escape codes as text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A line to print after clap's "required arguments were not provided",
/// when what is missing is the API's CA or token: on the first day the
/// flags are forgotten more often than not, and clap names only the flags,
/// not the environment variables that stand for them, nor where the
/// collector put the files.
pub fn missing_api_args_hint(error: &clap::Error, cwd: &std::path::Path) -> Option<String> {
    if error.kind() != clap::error::ErrorKind::MissingRequiredArgument {
        return None;
    }
    let text = error.to_string();
    let missing: Vec<(&str, &str, &str)> = [
        ("--ca <CA>", "NIGHTOWL_CA", "tls/ca.pem"),
        (
            "--token-file <TOKEN_FILE>",
            "NIGHTOWL_TOKEN_FILE",
            "admin.token",
        ),
    ]
    .into_iter()
    .filter(|(flag, _, _)| text.lines().any(|l| l.trim() == *flag))
    .collect();
    if missing.is_empty() {
        return None;
    }
    // The README's first command keeps its files in ./nightowl-data.
    let data_dir = cwd.join("nightowl-data");
    let exports: Vec<String> = missing
        .iter()
        .filter(|(_, _, file)| data_dir.join(file).is_file())
        .map(|(_, var, file)| format!("export {var}=./nightowl-data/{file}"))
        .collect();
    let vars: Vec<&str> = missing.iter().map(|(_, var, _)| *var).collect();
    let mut hint = format!(
        "hint: {} may stand for the flag{}; a collector prints both paths when it starts \
         (DATA_DIR/tls/ca.pem, DATA_DIR/admin.token)",
        vars.join(" and "),
        if vars.len() > 1 { "s" } else { "" }
    );
    if exports.len() == missing.len() {
        hint.push_str(&format!(", here:\n  {}", exports.join("\n  ")));
    }
    Some(hint)
}

/// Whether an error is a write to a closed pipe (`nightowl ... | head`):
/// the reader has what it wanted, so the command ends quietly with 0.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `--since`/`--until`: a bare number like `15` is refused, since it reads
/// as "15 minutes ago" to a person and as the Unix second 15 (1970) to the
/// server. Unix seconds stay accepted from ten digits up (2001 onwards).
pub fn check_time_flag(flag: &str, value: &str) -> anyhow::Result<()> {
    let text = value.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.len() < 10 {
        return Err(usage(format!(
            "{flag} {text}: a duration needs a unit ({text}s, {text}m, {text}h, {text}d); \
             or give a date or time (2026-11-24, 2026-11-24T10:00:00Z) or now"
        )));
    }
    Ok(())
}

/// A duration flag (`--duration`): a unit is required, `2` is not "2 hours"
/// nor "2 seconds".
pub fn check_duration_flag(flag: &str, value: &str) -> anyhow::Result<()> {
    let text = value.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage(format!(
            "{flag} {text}: a duration needs a unit ({text}s, {text}m, {text}h, {text}d)"
        )));
    }
    crate::time::parse_duration(text).map_err(|e| usage(format!("{flag}: {e}")))?;
    Ok(())
}

/// The progress bar of long jobs (backtest, export): `VERB [===>  ]
/// 1200/5000 lines (34k lines/s, eta 3s)`. indicatif's own `{per_sec}`
/// prints four decimals; whole numbers read better.
pub fn progress_bar(verb: &str) -> anyhow::Result<indicatif::ProgressBar> {
    use anyhow::Context as _;
    let template =
        format!("{{spinner}} {verb} [{{bar:40}}] {{pos}}/{{len}} lines ({{rate}}, eta {{eta}})");
    let style = indicatif::ProgressStyle::with_template(&template)
        .context("progress bar template")?
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&human_rate(state.per_sec()));
            },
        )
        .progress_chars("=> ");
    Ok(indicatif::ProgressBar::new(0).with_style(style))
}

/// `950 lines/s`, `34k lines/s`, `1.2M lines/s`.
pub fn human_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "- lines/s".to_string();
    }
    if per_sec < 10_000.0 {
        format!("{per_sec:.0} lines/s")
    } else if per_sec < 1_000_000.0 {
        format!("{:.0}k lines/s", per_sec / 1e3)
    } else {
        format!("{:.1}M lines/s", per_sec / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_missing_ca_or_token_names_its_variable_and_the_files_nearby() {
        // The variables would satisfy clap and leave nothing to hint.
        if std::env::var_os("NIGHTOWL_CA").is_some()
            || std::env::var_os("NIGHTOWL_TOKEN_FILE").is_some()
        {
            return;
        }
        let parse = |args: &[&str]| {
            app::Cli::try_parse_from(args.iter().copied())
                .err()
                .expect("a usage error")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let both = parse(&["nightowl", "search", "*"]);
        let hint = missing_api_args_hint(&both, dir.path()).expect("a hint");
        assert!(
            hint.contains("NIGHTOWL_CA and NIGHTOWL_TOKEN_FILE"),
            "{hint}"
        );
        assert!(!hint.contains("export"), "no files here: {hint}");

        std::fs::create_dir_all(dir.path().join("nightowl-data/tls")).expect("mkdir");
        std::fs::write(dir.path().join("nightowl-data/tls/ca.pem"), "x").expect("ca");
        std::fs::write(dir.path().join("nightowl-data/admin.token"), "x").expect("token");
        let hint = missing_api_args_hint(&both, dir.path()).expect("a hint");
        assert!(
            hint.contains("export NIGHTOWL_CA=./nightowl-data/tls/ca.pem")
                && hint.contains("export NIGHTOWL_TOKEN_FILE=./nightowl-data/admin.token"),
            "{hint}"
        );

        let token_only = parse(&["nightowl", "alerts", "list", "--ca", "ca.pem"]);
        let hint = missing_api_args_hint(&token_only, dir.path()).expect("a hint");
        assert!(
            hint.contains("NIGHTOWL_TOKEN_FILE may stand for the flag;")
                && !hint.contains("NIGHTOWL_CA"),
            "{hint}"
        );

        // Other usage errors get clap's message alone.
        let other = parse(&["nightowl", "search", "--ca", "c", "--token-file", "t"]);
        assert!(missing_api_args_hint(&other, dir.path()).is_none());
    }

    #[test]
    fn bare_numbers_are_refused_as_times_and_durations() {
        for bad in ["15", "0", " 90 "] {
            let e = check_time_flag("--since", bad).expect_err(bad);
            assert!(e.downcast_ref::<UsageError>().is_some());
            assert!(e.to_string().contains("needs a unit"), "{e}");
        }
        for good in ["15m", "7d", "now", "2026-11-24T10:00:00Z", "1700000000"] {
            check_time_flag("--since", good).expect(good);
        }
        let e = check_duration_flag("--duration", "2").expect_err("2");
        assert!(e.to_string().contains("2h"), "{e}");
        check_duration_flag("--duration", "2h").expect("2h");
        assert!(check_duration_flag("--duration", "2x").is_err());
    }

    #[test]
    fn broken_pipe_is_found_under_context() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe");
        let e = anyhow::Error::from(io).context("writing the list");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn rates_read_as_whole_numbers() {
        assert_eq!(human_rate(950.123_456), "950 lines/s");
        assert_eq!(human_rate(34_567.8), "35k lines/s");
        assert_eq!(human_rate(1_234_567.0), "1.2M lines/s");
        assert_eq!(human_rate(f64::NAN), "- lines/s");
    }
}
