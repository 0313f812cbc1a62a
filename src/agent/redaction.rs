//! The collector's redaction rules, on the agent: lines are redacted before
//! they reach the spool, so a password in an access log does not sit on the
//! web server's disk until the collector acknowledges it.
//!
//! The rules are the collector's own `[redact]` section, sent in each
//! welcome (`CAP_REDACT`) and kept in `STATE_DIR/redact-rules.json` (0600),
//! so a restart while the collector is down still applies them. Before the
//! first connection ever, the built-in rules apply (they are most of any
//! config: custom `names` and `patterns` come on top). A collector with
//! `[redact] enabled = false` turns the agent's pass off too.
//!
//! The collector redacts every batch again: its pass is the guarantee (an
//! agent that never connected yet, a pattern added since), and since a
//! redacted line is a fixed point of the redactor, the second pass finds
//! nothing when the rules are the same.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};

use crate::redact::{RedactConfig, Redactor};

const FILE: &str = "redact-rules.json";

pub struct Rules {
    dir: PathBuf,
    path: PathBuf,
    state: RwLock<State>,
}

struct State {
    /// The collector's rules as it sent them (`None`: built-in rules).
    json: Option<String>,
    redactor: Option<Arc<Redactor>>,
}

impl Rules {
    /// The rules last received, or the built-in ones; `None` redactor when
    /// the agent does not redact (`redact = false`).
    pub fn load(state_dir: &Path, enabled: bool) -> Result<Rules> {
        let path = state_dir.join(FILE);
        let state = if !enabled {
            State {
                json: None,
                redactor: None,
            }
        } else {
            let stored = match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            match stored.as_deref().map(compile) {
                Some(Ok(redactor)) => State {
                    json: stored,
                    redactor,
                },
                Some(Err(e)) => {
                    tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "stored redaction rules do not compile; using the built-in ones until the collector sends its own");
                    builtin()?
                }
                None => builtin()?,
            }
        };
        Ok(Rules {
            dir: state_dir.to_path_buf(),
            path,
            state: RwLock::new(state),
        })
    }

    /// What lines are redacted with now (`None`: not redacted).
    pub fn current(&self) -> Option<Arc<Redactor>> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .redactor
            .clone()
    }

    /// The collector's rules from a welcome: compiled, kept for the next
    /// start, and used from the next line read. Returns whether they
    /// changed.
    pub fn update(&self, json: &str) -> Result<bool> {
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            if state.redactor.is_none() && state.json.is_none() {
                return Ok(false); // `redact = false`: nothing to update
            }
            if state.json.as_deref() == Some(json) {
                return Ok(false);
            }
        }
        let redactor = compile(json).context("the collector's redaction rules")?;
        super::checkpoint::write_atomic(&self.dir, FILE, json.as_bytes(), true)
            .with_context(|| format!("keeping the rules in {}", self.path.display()))?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.json = Some(json.to_string());
        state.redactor = redactor;
        Ok(true)
    }
}

fn builtin() -> Result<State> {
    let redactor =
        Redactor::new(&RedactConfig::default()).context("the built-in redaction rules")?;
    Ok(State {
        json: None,
        redactor: Some(Arc::new(redactor)),
    })
}

fn compile(json: &str) -> Result<Option<Arc<Redactor>>> {
    let config: RedactConfig = serde_json::from_str(json).context("not a [redact] section")?;
    if !config.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(Redactor::new(&config)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_kept_for_the_next_start_and_can_turn_redaction_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = Rules::load(dir.path(), true).expect("load");
        let line = b"pin=1234&password=x";
        let out = rules.current().expect("built-in").redact(line).into_owned();
        assert_eq!(out, b"pin=1234&password=[REDACTED:password]");

        let config = RedactConfig {
            names: vec!["pin".into()],
            ..RedactConfig::default()
        };
        let json = serde_json::to_string(&config).expect("json");
        assert!(rules.update(&json).expect("update"));
        assert!(!rules.update(&json).expect("same again"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(FILE))
                .expect("stored")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{mode:o}");

        let again = Rules::load(dir.path(), true).expect("reload");
        let out = again.current().expect("stored").redact(line).into_owned();
        assert_eq!(out, b"pin=[REDACTED:pin]&password=[REDACTED:password]");

        let off = serde_json::to_string(&RedactConfig {
            enabled: false,
            ..RedactConfig::default()
        })
        .expect("json");
        assert!(again.update(&off).expect("update"));
        assert!(again.current().is_none());
        assert!(Rules::load(dir.path(), false)
            .expect("disabled")
            .current()
            .is_none());
        assert!(again.update("{not json").is_err());
    }
}
