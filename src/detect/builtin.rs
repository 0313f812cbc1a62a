//! The default rule pack, compiled into the binary (see `build.rs`), and
//! how it combines with a rules directory.
//!
//! The collector runs the embedded pack unless told not to (`[rules]
//! builtin = false`, `--no-builtin-rules`). A rules directory adds to it;
//! a rule of the directory with the id of an embedded rule replaces that
//! rule (`enabled: false` under the same id switches it off). So a copy of
//! the repository's `rules/` as the directory runs the pack once, with the
//! copy's edits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::load::{load_dir, parse_str, BadRules, LoadedRule, RuleError};

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

/// How embedded rule files are named in errors and in `GET /api/v1/rules`.
pub const PREFIX: &str = "<builtin>";

/// Where the live rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// The embedded default pack.
    pub builtin: bool,
    /// `[rules] dir`: added to the pack, replacing its rules by id.
    pub dir: Option<PathBuf>,
}

impl RuleSource {
    /// Whether any rule can run at all.
    pub fn any(&self) -> bool {
        self.builtin || self.dir.is_some()
    }

    /// "the embedded pack and DIR", for logs and errors.
    pub fn describe(&self) -> String {
        match (&self.dir, self.builtin) {
            (Some(d), true) => format!("the embedded pack and {}", d.display()),
            (Some(d), false) => d.display().to_string(),
            (None, true) => "the embedded pack".into(),
            (None, false) => "no rules".into(),
        }
    }
}

/// Parses the embedded pack. A broken embedded rule is a build mistake
/// (the `builtin` tests load every one), reported like a broken file.
pub fn load_builtin() -> Result<Vec<LoadedRule>, BadRules> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in FILES {
        match parse_str(text, &Path::new(PREFIX).join(name)) {
            Ok(mut r) => rules.append(&mut r),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(BadRules(errors))
    }
}

/// The rules of `source`: the embedded pack (when on), then the directory's
/// rules, each replacing an embedded rule of the same id in place.
pub fn load_source(source: &RuleSource) -> Result<Vec<LoadedRule>, BadRules> {
    let mut rules = if source.builtin {
        load_builtin()?
    } else {
        Vec::new()
    };
    let Some(dir) = &source.dir else {
        return Ok(rules);
    };
    let at: HashMap<String, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.spec.id.clone(), i))
        .collect();
    for r in load_dir(dir)? {
        match at.get(&r.spec.id) {
            Some(&i) => rules[i] = r,
            None => rules.push(r),
        }
    }
    Ok(rules)
}

/// An error naming `dir` itself, for a source with nothing to load.
pub fn no_rules(dir: &Path, message: &str) -> BadRules {
    BadRules(vec![RuleError {
        file: dir.to_path_buf(),
        line: 0,
        message: message.to_string(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule files under `rules/`, as `build.rs` picks them.
    fn on_disk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("rules dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && !name.starts_with('.') {
                on_disk(&p, base, out);
            } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
                && !name.contains(".test.")
                && !name.contains(".tests.")
            {
                let rel = p.strip_prefix(base).expect("under rules/");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_rule_file_of_the_repository_is_embedded_and_loads() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut want = Vec::new();
        on_disk(&base, &base, &mut want);
        want.sort();
        let got: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(got, want);
        assert!(got.iter().any(|n| n.starts_with("sigma/")), "{got:?}");
        let rules = load_builtin().unwrap_or_else(|e| panic!("{e}"));
        // The pack as a directory (its sub-directories included) is the
        // same rules, id for id.
        let mut ids: Vec<&str> = rules.iter().map(|r| r.spec.id.as_str()).collect();
        let from_dir = load_dir(&base).unwrap_or_else(|e| panic!("{e}"));
        let mut dir_ids: Vec<&str> = from_dir.iter().map(|r| r.spec.id.as_str()).collect();
        ids.sort_unstable();
        dir_ids.sort_unstable();
        assert_eq!(ids, dir_ids);
        assert!(
            rules.iter().all(|r| r.file.starts_with(PREFIX)),
            "{:?}",
            rules[0].file
        );
    }

    #[test]
    fn a_directory_adds_rules_and_replaces_embedded_ones_by_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("mine.yaml"),
            "id: web-log4shell\ntitle: mine\nseverity: info\nenabled: false\ndetect: {kind: match}\n\
             ---\nid: my-own\ntitle: own\nseverity: info\ndetect: {kind: match}\n",
        )
        .expect("write");
        let pack = load_builtin().expect("pack").len();
        let both = load_source(&RuleSource {
            builtin: true,
            dir: Some(dir.path().to_path_buf()),
        })
        .expect("loads");
        assert_eq!(both.len(), pack + 1);
        let replaced = both
            .iter()
            .find(|r| r.spec.id == "web-log4shell")
            .expect("kept");
        assert!(!replaced.spec.enabled && replaced.spec.title == "mine");
        let alone = load_source(&RuleSource {
            builtin: false,
            dir: Some(dir.path().to_path_buf()),
        })
        .expect("loads");
        assert_eq!(alone.len(), 2);
        let none = load_source(&RuleSource {
            builtin: false,
            dir: None,
        })
        .expect("nothing");
        assert!(none.is_empty());
    }
}
