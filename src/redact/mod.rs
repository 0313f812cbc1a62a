//! Redaction of secrets before anything is stored.
//!
//! The collector runs every batch through one [`Redactor`] in the
//! connection task, before the batch reaches the sequencer: so the WAL, the
//! index and the rule engine's sample lines only ever see the marker
//! (`password=[REDACTED:password]`). Ingest paths other than the agent
//! protocol call the same [`Redactor::redact_batch`].
//!
//! Cost model: one Aho-Corasick pass over a few trigger literals (parameter
//! name stems in three spellings, `bearer`, `://`, `eyJ`, key prefixes...)
//! plus one byte loop
//! for card-number digit runs. A line without a hit is returned borrowed and
//! a batch without a hit is returned as the same `Bytes`; the detectors
//! (hand-written, no regex) only run around the hits. User patterns are
//! regexes run on every line: their cost is the user's choice.
//!
//! Redaction changes line lengths, while acks and dedup work in the
//! source's byte offsets: [`BatchRedaction::changed`] records, per changed
//! line, how much shorter or longer it got, so the sequencer can keep both
//! spaces apart (see `ingest::Resized`).

mod card;
mod commands;
mod formats;
mod names;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `[redact]` in the collector config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Replace secrets before they are written. Default `true`.
    pub enabled: bool,
    /// What replaces a secret; `{kind}` becomes the kind's name.
    /// Default `"[REDACTED:{kind}]"`.
    pub marker: String,
    /// Extra parameter/field names whose values are secrets, matched
    /// case-insensitively as a whole name (or the last `[..]`/`.` segment),
    /// e.g. `names = ["pin", "otp"]`. The kind is the name itself.
    pub names: Vec<String>,
    /// Extra patterns, e.g.
    /// `[[redact.patterns]] name = "ssn", regex = '\b\d{3}-\d{2}-\d{4}\b'`.
    /// With a capture group, only group 1 is replaced (keeps the context).
    pub patterns: Vec<PatternConfig>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            marker: "[REDACTED:{kind}]".into(),
            names: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// The kind reported in the marker and the metric; `[a-z0-9_]+`.
    pub name: String,
    /// A Rust regex (bytes mode), e.g. `'emp-\d{6}'`.
    pub regex: String,
}

// Built-in kinds: their index is the kind id. User kinds follow.
pub(crate) const PASSWORD: u16 = 0;
pub(crate) const SECRET: u16 = 1;
pub(crate) const TOKEN: u16 = 2;
pub(crate) const API_KEY: u16 = 3;
pub(crate) const SESSION: u16 = 4;
pub(crate) const SIGNATURE: u16 = 5;
pub(crate) const AUTH: u16 = 6;
pub(crate) const COOKIE: u16 = 7;
pub(crate) const BEARER: u16 = 8;
pub(crate) const BASIC: u16 = 9;
pub(crate) const URL_PASSWORD: u16 = 10;
pub(crate) const JWT: u16 = 11;
pub(crate) const AWS_KEY: u16 = 12;
pub(crate) const GITHUB_TOKEN: u16 = 13;
pub(crate) const SLACK_TOKEN: u16 = 14;
pub(crate) const STRIPE_KEY: u16 = 15;
pub(crate) const GOOGLE_API_KEY: u16 = 16;
pub(crate) const PRIVATE_KEY: u16 = 17;
pub(crate) const CARD: u16 = 18;
pub(crate) const NIGHTOWL_TOKEN: u16 = 19;
/// Looks at a redacted line takes at most (each finds less: a line that
/// still changes after that is pathological, and is left as it is then).
const MAX_REWRITES: usize = 4;
/// Not a kind: a stretch that is already a marker, skipped but kept.
pub(crate) const KEEP: u16 = u16::MAX;

const BUILTIN_KINDS: [&str; 20] = [
    "password",
    "secret",
    "token",
    "api_key",
    "session",
    "signature",
    "auth",
    "cookie",
    "bearer",
    "basic",
    "url_password",
    "jwt",
    "aws_key",
    "github_token",
    "slack_token",
    "stripe_key",
    "google_api_key",
    "private_key",
    "card",
    "nightowl_token",
];

/// What a trigger literal starts looking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A stem of a secret-ish name: `name=value`, `"name":"value"`, `Name: value`.
    Name,
    Bearer,
    Basic,
    /// `://` (also JSON-escaped, `:\/\/`): userinfo of a URL.
    Scheme,
    /// `%3A%2F%2F`: a URL-encoded URL's userinfo.
    EncodedScheme,
    /// A command word whose options carry credentials (`curl -u`).
    Command,
    Jwt,
    Aws,
    GitHub,
    Slack,
    Stripe,
    Google,
    PrivateKey,
    /// `nwl_<id>_<secret>`: this product's own API and agent tokens.
    Nightowl,
}

const TRIGGERS: &[(&str, Trigger)] = &[
    ("pass", Trigger::Name),
    ("pwd", Trigger::Name),
    ("pswd", Trigger::Name),
    ("pword", Trigger::Name),
    // `pw` and what may follow it as a name (see `names::find_named`).
    ("pw=", Trigger::Name),
    ("pw:", Trigger::Name),
    ("pw\"", Trigger::Name),
    ("pw%", Trigger::Name),
    ("pw]", Trigger::Name),
    ("kennwort", Trigger::Name),
    ("wachtwoord", Trigger::Name),
    ("contrasena", Trigger::Name),
    ("senha", Trigger::Name),
    ("secret", Trigger::Name),
    ("token", Trigger::Name),
    ("key", Trigger::Name),
    ("auth", Trigger::Name),
    ("sess", Trigger::Name),
    ("sid", Trigger::Name),
    ("sig", Trigger::Name),
    ("cred", Trigger::Name),
    ("cookie", Trigger::Name),
    ("cvv", Trigger::Name),
    ("cvc", Trigger::Name),
    ("bearer", Trigger::Bearer),
    ("basic", Trigger::Basic),
    ("://", Trigger::Scheme),
    (":\\/\\/", Trigger::Scheme),
    ("%3A%2F%2F", Trigger::EncodedScheme),
    ("%3a%2f%2f", Trigger::EncodedScheme),
    ("curl", Trigger::Command),
    ("mysql", Trigger::Command),
    ("mariadb", Trigger::Command),
    ("sshpass", Trigger::Command),
    ("eyJ", Trigger::Jwt),
    ("AKIA", Trigger::Aws),
    ("ASIA", Trigger::Aws),
    ("ghp_", Trigger::GitHub),
    ("gho_", Trigger::GitHub),
    ("ghu_", Trigger::GitHub),
    ("ghs_", Trigger::GitHub),
    ("ghr_", Trigger::GitHub),
    ("github_pat_", Trigger::GitHub),
    ("xoxa-", Trigger::Slack),
    ("xoxb-", Trigger::Slack),
    ("xoxp-", Trigger::Slack),
    ("xoxr-", Trigger::Slack),
    ("xoxs-", Trigger::Slack),
    ("sk_live_", Trigger::Stripe),
    ("rk_live_", Trigger::Stripe),
    ("sk_test_", Trigger::Stripe),
    ("rk_test_", Trigger::Stripe),
    ("AIza", Trigger::Google),
    ("-----BEGIN", Trigger::PrivateKey),
    ("nwl_", Trigger::Nightowl),
];

/// Finds the trigger literals. Their first bytes are common letters, so
/// the automaton's own prefilters give up and it walks every byte (a third
/// of the agent's CPU in a profile); a packed SIMD searcher (Teddy) checks
/// 16 or 32 bytes at a time. Where the CPU lacks it, the automaton does.
enum Triggers {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Triggers {
    fn new(literals: &[String]) -> Result<Triggers> {
        match Self::packed(literals) {
            Some(packed) => Ok(packed),
            None => Self::automaton(literals),
        }
    }

    fn packed(literals: &[String]) -> Option<Triggers> {
        aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostLongest)
            // Some 70 literals: past Teddy's default of 64, and still
            // several times faster than the automaton on access logs
            // (`benches/redact.rs`).
            .heuristic_pattern_limits(false)
            .builder()
            .extend(literals)
            .build()
            .map(Triggers::Packed)
    }

    fn automaton(literals: &[String]) -> Result<Triggers> {
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(literals)
            .context("building the redaction trigger automaton")?;
        Ok(Triggers::Automaton(automaton))
    }

    fn find(&self, line: &[u8], from: usize) -> Option<aho_corasick::Match> {
        match self {
            Triggers::Packed(s) => s.find_in(line, aho_corasick::Span::from(from..line.len())),
            Triggers::Automaton(a) => a.find(Input::new(line).range(from..line.len())),
        }
    }
}

/// One stretch of a line to replace by the marker of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: u16,
}

/// Carried from line to line within a batch: a PEM private key logged one
/// line per log line keeps redacting until its END line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineState {
    in_private_key: bool,
}

/// A batch whose lines changed.
#[derive(Debug)]
pub struct BatchRedaction {
    /// The batch rebuilt with markers (still newline-terminated lines).
    pub lines: Bytes,
    /// Per changed line whose length changed: (line index, source length
    /// minus redacted length). Empty when every marker happened to have the
    /// length of what it replaced.
    pub changed: Vec<(u32, i64)>,
    /// Secrets replaced, per kind id (see [`Redactor::kind_name`]).
    pub counts: Vec<(u16, u64)>,
}

/// The compiled redaction rules; built once, shared by every connection.
pub struct Redactor {
    triggers: Triggers,
    trigger_kinds: Vec<Trigger>,
    kinds: Vec<String>,
    markers: Vec<Vec<u8>>,
    /// Lowercased extra names and their kind ids.
    extra_names: Vec<(Vec<u8>, u16)>,
    patterns: Vec<(regex::bytes::Regex, u16)>,
    /// The marker template (`[REDACTED:{kind}]`).
    marker: String,
}

impl Redactor {
    /// Builds the default rules plus the configured ones. Errors name the
    /// config key (`redact.patterns[1].regex`).
    pub fn new(config: &RedactConfig) -> Result<Redactor> {
        if config.marker.is_empty() {
            bail!("redact.marker must not be empty");
        }
        if config.marker.bytes().any(|b| b == b'\n' || b == b'\r') {
            bail!("redact.marker must not contain a line break");
        }
        let mut kinds: Vec<String> = BUILTIN_KINDS.iter().map(|k| k.to_string()).collect();
        let mut literals = Vec::new();
        let mut trigger_kinds = Vec::new();
        for &(literal, trigger) in TRIGGERS {
            for variant in case_variants(literal, trigger) {
                literals.push(variant);
                trigger_kinds.push(trigger);
            }
        }
        let mut extra_names = Vec::new();
        for (i, name) in config.names.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty()
                || lower.len() > names::MAX_NAME
                || !lower.bytes().all(names::is_plain_name_byte)
            {
                bail!(
                    "redact.names[{i}] = {name:?}: a name is 1-{} bytes of letters, digits, '_', '-', '.'",
                    names::MAX_NAME
                );
            }
            let kind = kind_id(&mut kinds, &lower);
            for variant in case_variants(&lower, Trigger::Name) {
                literals.push(variant);
                trigger_kinds.push(Trigger::Name);
            }
            extra_names.push((lower.into_bytes(), kind));
        }
        let mut patterns = Vec::new();
        for (i, pattern) in config.patterns.iter().enumerate() {
            if pattern.name.is_empty()
                || !pattern
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                bail!(
                    "redact.patterns[{i}].name = {:?}: use lowercase letters, digits and '_'",
                    pattern.name
                );
            }
            let regex = regex::bytes::Regex::new(&pattern.regex).with_context(|| {
                format!(
                    "redact.patterns[{i}].regex (name {:?}) is not a valid regex",
                    pattern.name
                )
            })?;
            if regex.is_match(b"") {
                bail!(
                    "redact.patterns[{i}].regex (name {:?}) matches the empty string",
                    pattern.name
                );
            }
            patterns.push((regex, kind_id(&mut kinds, &pattern.name)));
        }
        let triggers = Triggers::new(&literals)?;
        let markers = kinds
            .iter()
            .map(|k| config.marker.replace("{kind}", k).into_bytes())
            .collect();
        Ok(Redactor {
            triggers,
            trigger_kinds,
            kinds,
            markers,
            extra_names,
            patterns,
            marker: config.marker.clone(),
        })
    }

    /// Calls `count` with the kind of every marker of these rules in
    /// `line`: what an agent replaced before sending, so the collector's
    /// metrics count secrets wherever they were redacted.
    pub fn count_markers(&self, line: &[u8], mut count: impl FnMut(u16)) {
        let (prefix, suffix) = match self.marker.split_once("{kind}") {
            Some((p, s)) if !p.is_empty() => (p.as_bytes(), s.as_bytes()),
            _ => return,
        };
        let mut at = 0;
        while let Some(i) = memchr::memmem::find(&line[at..], prefix) {
            let start = at + i + prefix.len();
            let rest = &line[start..];
            let len = rest
                .iter()
                .take(names::MAX_NAME + 1)
                .take_while(|&&b| names::is_plain_name_byte(b))
                .count();
            if rest[len..].starts_with(suffix) {
                if let Some(kind) = self.kinds.iter().position(|k| k.as_bytes() == &rest[..len]) {
                    count(kind as u16);
                }
            }
            at = start;
        }
    }

    /// The name of a kind id, as shown in markers and metrics.
    pub fn kind_name(&self, kind: u16) -> &str {
        self.kinds
            .get(kind as usize)
            .map_or("unknown", String::as_str)
    }

    /// One line (without its newline). Borrowed when nothing was found.
    pub fn redact<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        let mut spans = Vec::new();
        let mut state = LineState::default();
        if !self.find(line, &mut state, &mut spans) {
            return Cow::Borrowed(line);
        }
        let mut out = Vec::with_capacity(line.len() + 32);
        self.rewrite(
            line,
            LineState::default(),
            &mut state,
            &mut spans,
            &mut out,
            &mut |_| {},
        );
        Cow::Owned(out)
    }

    /// A batch of newline-terminated lines: `None` when nothing was found
    /// (the common case, no copy), else the batch rebuilt once.
    pub fn redact_batch(&self, lines: &[u8]) -> Option<BatchRedaction> {
        let mut spans = Vec::new();
        let mut state = LineState::default();
        let mut out: Option<Vec<u8>> = None;
        let mut changed = Vec::new();
        let mut counts: Vec<(u16, u64)> = Vec::new();
        let mut start = 0usize;
        let mut index = 0u32;
        while start < lines.len() {
            let end = memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |i| start + i);
            let line = &lines[start..end];
            let at_start = state;
            if self.find(line, &mut state, &mut spans) {
                let buf = out.get_or_insert_with(|| {
                    let mut buf = Vec::with_capacity(lines.len() + lines.len() / 8 + 64);
                    buf.extend_from_slice(&lines[..start]);
                    buf
                });
                let before = buf.len();
                self.rewrite(
                    line,
                    at_start,
                    &mut state,
                    &mut spans,
                    buf,
                    &mut |kind| match counts.iter_mut().find(|(k, _)| *k == kind) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((kind, 1)),
                    },
                );
                let delta = line.len() as i64 - (buf.len() - before) as i64;
                if delta != 0 {
                    changed.push((index, delta));
                }
            } else if let Some(buf) = out.as_mut() {
                buf.extend_from_slice(line);
            }
            if end < lines.len() {
                if let Some(buf) = out.as_mut() {
                    buf.push(b'\n');
                }
            }
            start = end + 1;
            index += 1;
        }
        out.map(|buf| BatchRedaction {
            lines: Bytes::from(buf),
            changed,
            counts,
        })
    }

    /// Appends `line` with `spans` (just found) replaced to `out`, then
    /// looks at the result again until nothing more is found: so a second
    /// redaction (the collector's, after the agent's) changes nothing.
    /// Without it, a marker can move what a detector sees as context (a
    /// `;` inside a cookie value no longer ends a command's arguments) and
    /// a second pass would find more. `at_start` is the line state before
    /// `line`; `state` ends as the last look left it. `count` gets the
    /// kind of every secret replaced.
    fn rewrite(
        &self,
        line: &[u8],
        at_start: LineState,
        state: &mut LineState,
        spans: &mut Vec<Span>,
        out: &mut Vec<u8>,
        count: &mut dyn FnMut(u16),
    ) {
        let begin = out.len();
        self.write_redacted(line, spans, out);
        spans.iter().for_each(|s| count(s.kind));
        let mut scratch = Vec::new();
        for _ in 0..MAX_REWRITES {
            let mut again = at_start;
            if !self.find(&out[begin..], &mut again, spans) {
                *state = again;
                return;
            }
            spans.iter().for_each(|s| count(s.kind));
            scratch.clear();
            scratch.extend_from_slice(&out[begin..]);
            out.truncate(begin);
            self.write_redacted(&scratch, spans, out);
            *state = again;
        }
    }

    fn write_redacted(&self, line: &[u8], spans: &[Span], out: &mut Vec<u8>) {
        let mut at = 0;
        for span in spans {
            out.extend_from_slice(&line[at..span.start]);
            out.extend_from_slice(&self.markers[span.kind as usize]);
            at = span.end;
        }
        out.extend_from_slice(&line[at..]);
    }

    /// Fills `spans` (sorted, disjoint) with what to replace in `line`.
    fn find(&self, line: &[u8], state: &mut LineState, spans: &mut Vec<Span>) -> bool {
        spans.clear();
        // A key's line already redacted (by the agent, or by the look
        // before this one) keeps the key going.
        if state.in_private_key && marker_len(line) != Some(line.len()) {
            if let Some(end) = formats::private_key_continuation(line, state) {
                spans.push(Span {
                    start: 0,
                    end,
                    kind: PRIVATE_KEY,
                });
            }
        }
        let mut pos = spans.last().map_or(0, |s| s.end);
        while pos < line.len() {
            let Some(hit) = self.triggers.find(line, pos) else {
                break;
            };
            let trigger = self.trigger_kinds[hit.pattern().as_usize()];
            let (start, end) = (hit.start(), hit.end());
            if trigger == Trigger::Command {
                // Its spans are further on, and what lies between (a
                // `-H "Authorization: …"`) still needs its own look.
                commands::find(line, start, end, spans);
                pos = end;
                if line[start..end] == *b"sshpass" {
                    // `sshpass=…` as a name; `SSHPASS=` comes as `PASS`.
                    if let Some(span) = names::find_named(line, start, end, &self.extra_names) {
                        pos = pos.max(span.end);
                        if span.kind != KEEP {
                            spans.push(span);
                        }
                    }
                }
                continue;
            }
            let found = match trigger {
                Trigger::Name => names::find_named(line, start, end, &self.extra_names),
                Trigger::Bearer => formats::bearer(line, start, end),
                Trigger::Basic => formats::basic(line, start, end),
                Trigger::Scheme => formats::url_password(line, start, end),
                Trigger::EncodedScheme => formats::url_password_encoded(line, start, end),
                Trigger::Command => None,
                Trigger::Jwt => formats::jwt(line, start),
                Trigger::Aws => formats::aws(line, start),
                Trigger::GitHub => formats::github(line, start),
                Trigger::Slack => formats::slack(line, start),
                Trigger::Stripe => formats::stripe(line, start),
                Trigger::Google => formats::google(line, start),
                Trigger::PrivateKey => formats::private_key(line, start, state),
                Trigger::Nightowl => formats::nightowl_token(line, start),
            };
            pos = end;
            if let Some(span) = found {
                // Resume after the value: nothing inside it needs a second
                // look, and a JWT inside `token=` is one secret, not two.
                pos = pos.max(span.end);
                if span.kind != KEEP {
                    spans.push(span);
                }
            }
        }
        card::find_cards(line, spans);
        for (regex, kind) in &self.patterns {
            if regex.captures_len() > 1 {
                for caps in regex.captures_iter(line) {
                    if let Some(m) = caps.get(1).filter(|m| !m.is_empty()) {
                        spans.push(Span {
                            start: m.start(),
                            end: m.end(),
                            kind: *kind,
                        });
                    }
                }
            } else {
                for m in regex.find_iter(line) {
                    spans.push(Span {
                        start: m.start(),
                        end: m.end(),
                        kind: *kind,
                    });
                }
            }
        }
        if spans.is_empty() {
            return false;
        }
        merge(spans);
        true
    }
}

/// The spellings a trigger is searched in. Names and schemes are written
/// `password`, `Password` (also inside `userPassword`, `X-Api-Key`) or
/// `PASSWORD`; a case-insensitive automaton would cost 7x more per line
/// (measured: ~700 ns against ~100 ns on a 220-byte access log line), and
/// `pAsSwOrD` is not how anyone names a field. Key formats are exact.
fn case_variants(literal: &str, trigger: Trigger) -> Vec<String> {
    if !matches!(trigger, Trigger::Name | Trigger::Bearer | Trigger::Basic) {
        return vec![literal.to_string()];
    }
    let lower = literal.to_ascii_lowercase();
    let mut capital = lower.clone();
    capital[..1].make_ascii_uppercase();
    let upper = literal.to_ascii_uppercase();
    let mut variants = vec![lower, capital, upper];
    variants.dedup();
    variants
}

fn kind_id(kinds: &mut Vec<String>, name: &str) -> u16 {
    match kinds.iter().position(|k| k == name) {
        Some(i) => i as u16,
        None => {
            kinds.push(name.to_string());
            (kinds.len() - 1) as u16
        }
    }
}

/// Sorts and joins overlapping spans (the earlier one's kind wins; on a
/// tie, the lower kind id: a header's kind before the scheme's).
fn merge(spans: &mut Vec<Span>) {
    if spans.len() < 2 {
        return;
    }
    spans.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end), s.kind));
    let mut w = 0;
    for r in 1..spans.len() {
        if spans[r].start < spans[w].end {
            spans[w].end = spans[w].end.max(spans[r].end);
        } else {
            w += 1;
            spans[w] = spans[r];
        }
    }
    spans.truncate(w + 1);
}

/// A value that is already a marker (redacted upstream, or by us) is left
/// alone, so redaction is idempotent. Returns the marker's length: only the
/// marker itself is skipped, what follows it is still looked at.
pub(crate) fn marker_len(value: &[u8]) -> Option<usize> {
    if !value.starts_with(b"[REDACTED") {
        return None;
    }
    memchr::memchr(b']', &value[..value.len().min(64)]).map(|i| i + 1)
}
