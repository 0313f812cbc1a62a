//! `{{ name }}` placeholders for subjects and titles: no logic, no loops,
//! nothing a config author could use to run code or read files. Parsed once
//! at startup, so an unknown name is a config error, not a 3 a.m. surprise.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::view::View;

/// The names a template may use; docs/receivers.md lists what each holds.
pub const VARIABLES: &[&str] = &[
    "title",
    "severity",
    "tenant",
    "key",
    "count",
    "rule_id",
    "alerts",
    "firing",
    "resolved",
    "status",
    "receiver",
    "group",
    "fingerprint",
    "summary",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Title,
    Severity,
    Tenant,
    Key,
    Count,
    RuleId,
    Alerts,
    Firing,
    Resolved,
    Status,
    Receiver,
    Group,
    Fingerprint,
    Summary,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// `what` names the config key in errors, e.g. `receiver "ops-mail": subject`.
    pub fn parse(source: &str, what: &str) -> Result<Template> {
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                bail!("{what}: unclosed `{{{{` in template {source:?}");
            };
            let name = after[..close].trim();
            let var = match name {
                "title" => Var::Title,
                "severity" => Var::Severity,
                "tenant" => Var::Tenant,
                "key" => Var::Key,
                "count" => Var::Count,
                "rule_id" => Var::RuleId,
                "alerts" => Var::Alerts,
                "firing" => Var::Firing,
                "resolved" => Var::Resolved,
                "status" => Var::Status,
                "receiver" => Var::Receiver,
                "group" => Var::Group,
                "fingerprint" => Var::Fingerprint,
                "summary" => Var::Summary,
                other => bail!(
                    "{what}: unknown template variable {other:?} in {source:?}; known: {}",
                    VARIABLES.join(", ")
                ),
            };
            pieces.push(Piece::Var(var));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            bail!("{what}: `}}}}` without `{{{{` in template {source:?}");
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Renders onto one line: control characters (CR/LF in a log-derived
    /// title) become spaces, so a subject can never smuggle a header.
    pub fn render(&self, view: &View<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(var) => {
                    let _ = match var {
                        Var::Title => write!(out, "{}", view.lead.title),
                        Var::Severity => write!(out, "{}", view.severity.as_str()),
                        Var::Tenant => write!(out, "{}", view.lead.tenant),
                        Var::Key => write!(out, "{}", view.lead.key),
                        Var::Count => write!(out, "{}", view.lead.count),
                        Var::RuleId => write!(out, "{}", view.lead.rule_id),
                        Var::Alerts => write!(out, "{}", view.notification.alerts.len()),
                        Var::Firing => write!(out, "{}", view.firing),
                        Var::Resolved => write!(out, "{}", view.resolved),
                        Var::Status => write!(out, "{}", view.status_str()),
                        Var::Receiver => write!(out, "{}", view.notification.receiver),
                        Var::Group => write!(out, "{}", view.group_text()),
                        Var::Fingerprint => write!(out, "{}", view.lead.fingerprint),
                        Var::Summary => write!(out, "{}", view.summary()),
                    };
                }
            }
        }
        out.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}
