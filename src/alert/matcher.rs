//! Label matchers, Alertmanager style: `name=value`, `name!=value`,
//! `name=~regex`, `name!~regex`. Used by silences, inhibition rules and
//! routes. A missing label matches as the empty string (so `team!=db`
//! matches an alert without `team`), as in Alertmanager.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    /// Anchored (`^(?:value)$`) like Alertmanager: `=~web` does not match `webserver`.
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher> {
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            bail!("invalid label name {name:?} in matcher");
        }
        let regex = match op {
            Op::Re | Op::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .with_context(|| format!("invalid regex {value:?} for label {name:?}"))?,
            ),
            Op::Eq | Op::Ne => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses `name=value`, `name!=value`, `name=~re`, `name!~re`; the value
    /// may be double-quoted.
    pub fn parse(text: &str) -> Result<Matcher> {
        let (name, op, rest) = if let Some(i) = text.find("!=") {
            (&text[..i], Op::Ne, &text[i + 2..])
        } else if let Some(i) = text.find("!~") {
            (&text[..i], Op::NotRe, &text[i + 2..])
        } else if let Some(i) = text.find("=~") {
            (&text[..i], Op::Re, &text[i + 2..])
        } else if let Some(i) = text.find('=') {
            (&text[..i], Op::Eq, &text[i + 1..])
        } else {
            bail!("invalid matcher {text:?}: expected name=value, name!=value, name=~regex or name!~regex");
        };
        let value = rest.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Matcher::new(name, op, value).with_context(|| format!("in matcher {text:?}"))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (Op::Eq, _) => actual == self.value,
            (Op::Ne, _) => actual != self.value,
            (Op::Re, Some(re)) => re.is_match(actual),
            (Op::NotRe, Some(re)) => !re.is_match(actual),
            (_, None) => false,
        }
    }
}

/// All of `matchers` match (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        };
        write!(f, "{}{}{}", self.name, op, self.value)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Matcher::parse(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A label set from `(name, value)` pairs.
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn four_operators() {
        let l = labels(&[("alertname", "brute"), ("severity", "critical")]);
        assert!(Matcher::parse("alertname=brute").unwrap().matches(&l));
        assert!(!Matcher::parse("alertname!=brute").unwrap().matches(&l));
        assert!(Matcher::parse("severity=~crit.*").unwrap().matches(&l));
        assert!(
            !Matcher::parse("severity=~crit").unwrap().matches(&l),
            "anchored"
        );
        assert!(Matcher::parse("severity!~warn.*").unwrap().matches(&l));
        assert!(
            Matcher::parse("team!=db").unwrap().matches(&l),
            "missing is empty"
        );
        assert!(Matcher::parse("alertname=\"brute\"").unwrap().matches(&l));
    }

    #[test]
    fn bad_matchers_say_why() {
        for bad in ["nothing", "=x", "a=~(", "a b=c"] {
            let err = Matcher::parse(bad).expect_err(bad);
            assert!(format!("{err:#}").contains("matcher"), "{bad}: {err:#}");
        }
    }

    #[test]
    fn round_trips_as_text() {
        let m = Matcher::parse("key=~10\\..*").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"key=~10\\\\..*\"");
        let back: Matcher = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
