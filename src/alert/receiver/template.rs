//! `{{ name }}` placeholders for subjects, titles and email bodies: no
//! logic, no loops, nothing a config author could use to run code or read
//! files. Parsed once at startup, so an unknown name is a config error, not
//! a 3 a.m. surprise.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::view::View;

/// The names a template may use; docs/receivers.md lists what each holds.
/// `details` only in body templates.
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
    "ack_url",
    "search_url",
    "page_url",
    "details",
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
    AckUrl,
    SearchUrl,
    PageUrl,
    Details,
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

/// Where a template is used: a one-line field, or a body that may embed
/// the built-in rendering with `{{ details }}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Line,
    Body,
}

impl Template {
    /// `what` names the config key in errors, e.g. `receiver "ops-mail": subject`.
    pub fn parse(source: &str, what: &str) -> Result<Template> {
        Template::parse_kind(source, what, Kind::Line)
    }

    pub fn parse_kind(source: &str, what: &str, kind: Kind) -> Result<Template> {
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
                "ack_url" => Var::AckUrl,
                "search_url" => Var::SearchUrl,
                "page_url" => Var::PageUrl,
                "details" if kind == Kind::Body => Var::Details,
                "details" => bail!(
                    "{what}: {{{{ details }}}} is only allowed in body templates, not in {source:?}"
                ),
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
        self.render_with(view, "", &|s: &str| s.to_string())
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }

    /// Renders a body: every value goes through `escape` (HTML-escaping for
    /// an HTML body), the template's own text and `details` (already in the
    /// body's format) do not.
    pub fn render_body(
        &self,
        view: &View<'_>,
        details: &str,
        escape: &dyn Fn(&str) -> String,
    ) -> String {
        self.render_with(view, details, escape)
    }

    fn render_with(
        &self,
        view: &View<'_>,
        details: &str,
        escape: &dyn Fn(&str) -> String,
    ) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            let value = match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Piece::Var(Var::Details) => {
                    out.push_str(details);
                    continue;
                }
                Piece::Var(var) => value(*var, view),
            };
            out.push_str(&escape(&value));
        }
        out
    }
}

fn value(var: Var, view: &View<'_>) -> String {
    let mut out = String::new();
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
        Var::AckUrl => write!(
            out,
            "{}",
            view.notification.ack_url.as_deref().unwrap_or_default()
        ),
        Var::SearchUrl => write!(out, "{}", view.search_url(view.lead).unwrap_or_default()),
        Var::PageUrl => write!(out, "{}", view.page_url(view.lead).unwrap_or_default()),
        Var::Details => Ok(()),
    };
    out
}
