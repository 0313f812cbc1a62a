//! Reading rule files: YAML documents → checked [`RuleSpec`]s, with every
//! error naming its file and line.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::compile::Builder;
use super::kind::compile_rule;
use super::rule::{RuleSpec, TestSpec};
use super::sigma;

/// One problem in one rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Every problem found in a rule directory. The CLI maps this error to exit
/// code 2 (bad input).
#[derive(Debug, Clone, thiserror::Error)]
pub struct BadRules(pub Vec<RuleError>);

impl fmt::Display for BadRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A rule as loaded, with where it came from (fixtures' `file:` paths are
/// relative to `file`).
#[derive(Debug, Clone)]
pub struct LoadedRule {
    pub spec: RuleSpec,
    pub file: PathBuf,
    pub line: usize,
    /// Fixtures from sibling `*.test.yaml` files, with their own file.
    pub extra_tests: Vec<(PathBuf, TestSpec)>,
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

fn is_test_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// `NAME.tests.yaml`: fixtures for the rules of `NAME.yml`/`NAME.yaml`
/// (Sigma has no place for tests in the rule itself). Returns `NAME`.
fn sidecar_stem(p: &Path) -> Option<&str> {
    let n = p.file_name()?.to_str()?;
    n.strip_suffix(".tests.yaml")
        .or_else(|| n.strip_suffix(".tests.yml"))
}

/// A sidecar holds a list of fixtures for its file's one rule, or a map
/// from rule id to fixtures.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Sidecar {
    List(Vec<TestSpec>),
    ById(BTreeMap<String, Vec<TestSpec>>),
}

/// Sub-directory levels [`load_dir`] descends.
const MAX_DEPTH: usize = 4;

/// Rule files of `dir` and of its sub-directories, hidden ones left out
/// (a Kubernetes ConfigMap volume keeps a second copy of its files under
/// `..data/`).
fn yaml_paths(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), BadRules> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        BadRules(vec![RuleError {
            file: dir.to_path_buf(),
            line: 0,
            message: format!("cannot read rule directory: {e}"),
        }])
    })?;
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            if depth < MAX_DEPTH {
                yaml_paths(&p, depth + 1, out)?;
            }
        } else if p.is_file() && is_yaml(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Loads every `*.yaml`/`*.yml` file of `dir` and its sub-directories
/// (sorted by path, so `rules/sigma/` loads with `rules/`); `*.test.yaml`
/// files hold fixtures keyed by rule id. All errors of all files are
/// collected, not just the first. `dir` may also be one rule file: it is
/// loaded with its `NAME.tests.yaml` sidecar, if any.
pub fn load_dir(dir: &Path) -> Result<Vec<LoadedRule>, BadRules> {
    if dir.is_file() {
        let mut paths = vec![dir.to_path_buf()];
        if let (Some(parent), Some(stem)) = (dir.parent(), dir.file_stem().and_then(|s| s.to_str()))
        {
            for ext in ["yaml", "yml"] {
                let sidecar = parent.join(format!("{stem}.tests.{ext}"));
                if sidecar.is_file() {
                    paths.push(sidecar);
                }
            }
        }
        return load_paths(paths);
    }
    let mut paths = Vec::new();
    yaml_paths(dir, 0, &mut paths)?;
    paths.sort();
    load_paths(paths)
}

fn load_paths(paths: Vec<PathBuf>) -> Result<Vec<LoadedRule>, BadRules> {
    let mut errors = Vec::new();
    let mut rules: Vec<LoadedRule> = Vec::new();
    let mut test_files = Vec::new();
    let mut sidecars = Vec::new();
    for p in paths {
        if is_test_file(&p) {
            test_files.push(p);
            continue;
        }
        if sidecar_stem(&p).is_some() {
            sidecars.push(p);
            continue;
        }
        match load_file(&p) {
            Ok(mut r) => rules.append(&mut r),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for r in &rules {
        if let Some((f, l)) = seen.get(&r.spec.id) {
            errors.push(RuleError {
                file: r.file.clone(),
                line: r.line,
                message: format!(
                    "duplicate rule id {:?} (first defined at {}:{l})",
                    r.spec.id,
                    f.display()
                ),
            });
        } else {
            seen.insert(r.spec.id.clone(), (r.file.clone(), r.line));
        }
    }
    for p in test_files {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                errors.push(RuleError {
                    file: p.clone(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match serde_yaml::from_str::<BTreeMap<String, Vec<TestSpec>>>(&text) {
            Ok(map) => {
                for (id, tests) in map {
                    match rules.iter_mut().find(|r| r.spec.id == id) {
                        Some(r) => r
                            .extra_tests
                            .extend(tests.into_iter().map(|t| (p.clone(), t))),
                        None => errors.push(RuleError {
                            file: p.clone(),
                            line: find_line(&text, &format!("{id}:")).unwrap_or(1),
                            message: format!("fixtures for unknown rule {id:?}"),
                        }),
                    }
                }
            }
            Err(e) => errors.push(RuleError {
                file: p.clone(),
                line: e.location().map_or(1, |l| l.line()),
                message: clean(&e.to_string()),
            }),
        }
    }
    for p in sidecars {
        attach_sidecar(&p, &mut rules, &mut errors);
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(BadRules(errors))
    }
}

fn attach_sidecar(p: &Path, rules: &mut [LoadedRule], errors: &mut Vec<RuleError>) {
    let at = |line: usize, message: String| RuleError {
        file: p.to_path_buf(),
        line,
        message,
    };
    let stem = sidecar_stem(p).unwrap_or_default();
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) => return errors.push(at(0, format!("cannot read: {e}"))),
    };
    let mut owners: Vec<&mut LoadedRule> = rules
        .iter_mut()
        .filter(|r| {
            r.file.parent() == p.parent()
                && r.file.file_stem().and_then(|s| s.to_str()) == Some(stem)
        })
        .collect();
    if owners.is_empty() {
        return errors.push(at(
            1,
            format!("fixtures for {stem}.yml/{stem}.yaml, which holds no rule here"),
        ));
    }
    // Parsed as a list first so a mistake in a list reports serde's line.
    let parsed = match serde_yaml::from_str::<Vec<TestSpec>>(&text) {
        Ok(list) => Ok(Sidecar::List(list)),
        Err(list_err) => match serde_yaml::from_str::<Sidecar>(&text) {
            Ok(s) => Ok(s),
            Err(_) => Err(list_err),
        },
    };
    match parsed {
        Ok(Sidecar::List(tests)) => {
            if owners.len() > 1 {
                return errors.push(at(
                    1,
                    format!(
                        "{stem} holds {} rules: key the fixtures by rule id",
                        owners.len()
                    ),
                ));
            }
            owners[0]
                .extra_tests
                .extend(tests.into_iter().map(|t| (p.to_path_buf(), t)));
        }
        Ok(Sidecar::ById(map)) => {
            for (id, tests) in map {
                match owners.iter_mut().find(|r| r.spec.id == id) {
                    Some(r) => r
                        .extra_tests
                        .extend(tests.into_iter().map(|t| (p.to_path_buf(), t))),
                    None => errors.push(at(
                        find_line(&text, &format!("{id}:")).unwrap_or(1),
                        format!("fixtures for unknown rule {id:?} (not in {stem})"),
                    )),
                }
            }
        }
        Err(e) => errors.push(at(
            e.location().map_or(1, |l| l.line()),
            clean(&e.to_string()),
        )),
    }
}

/// Loads one file of one or more `---`-separated rules.
pub fn load_file(path: &Path) -> Result<Vec<LoadedRule>, Vec<RuleError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![RuleError {
            file: path.to_path_buf(),
            line: 0,
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse_str(&text, path)
}

/// Parses and checks rule text as if read from `path`.
pub fn parse_str(text: &str, path: &Path) -> Result<Vec<LoadedRule>, Vec<RuleError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let at = |line: usize, message: String| RuleError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("rule")
        .to_string();
    for (start, doc) in documents(text) {
        // A Sigma rule is told apart by its `logsource` and `detection`.
        // YAML that does not parse (a duplicate key, a bad indent) is
        // reported as YAML when it looks like Sigma, else the native way;
        // both carry serde's line.
        let value = serde_yaml::from_str::<serde_yaml::Value>(&doc);
        let looks_sigma = |d: &str| {
            let top = |k: &str| d.lines().any(|l| l.starts_with(k));
            top("logsource:") && top("detection:")
        };
        let sigma_doc = match value {
            Ok(v) if sigma::is_sigma(&v) => Some(v),
            Err(e) if looks_sigma(&doc) => {
                let message = clean(&e.to_string());
                let line = locate(&doc, start, e.location().map(|l| l.line()), &message);
                errors.push(at(line, format!("Sigma rule: {message}")));
                continue;
            }
            _ => None,
        };
        let parsed = match &sigma_doc {
            Some(v) => sigma::to_spec(v, &stem).map_err(|e| {
                let line = e
                    .near
                    .as_deref()
                    .and_then(|n| find_line(&doc, n))
                    .map_or(start, |l| start + l - 1);
                at(line, format!("Sigma rule: {}", e.message))
            }),
            None => serde_yaml::from_str::<RuleSpec>(&doc).map_err(|e| {
                let message = clean(&e.to_string());
                let line = locate(&doc, start, e.location().map(|l| l.line()), &message);
                at(line, message)
            }),
        };
        let spec: RuleSpec = match parsed {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let id_line = find_line(&doc, "id:").map_or(start, |l| start + l - 1);
        // Compiled here only to check it; the engine compiles again into
        // its own shared match set.
        let mut b = Builder::new();
        let checked = compile_rule(&mut b, &spec).and_then(|_| b.finish().map(|_| ()));
        if let Err(e) = checked {
            let line = e
                .near
                .as_deref()
                .and_then(|n| find_line(&doc, n))
                .map_or(id_line, |l| start + l - 1);
            errors.push(at(line, format!("rule {:?}: {}", spec.id, e.message)));
            continue;
        }
        out.push(LoadedRule {
            spec,
            file: path.to_path_buf(),
            line: id_line,
            extra_tests: Vec::new(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The file line of a serde error in the document starting at line
/// `start`. serde_yaml points at the mapping that holds the mistake (the
/// `detect:` line for a bad `window:` under it) and at the document's
/// first line for a duplicate key; the line naming the culprit is better:
/// the second `KEY:` of a duplicate, else the first line from serde's on
/// that holds a value the message quotes (`5x`, `thresholdz`, `titel`).
fn locate(doc: &str, start: usize, serde_line: Option<usize>, message: &str) -> usize {
    let from = serde_line.unwrap_or(1).max(1);
    let lines: Vec<&str> = doc.lines().collect();
    let at = |index: usize| start + index;
    if let Some(key) = message
        .strip_prefix("duplicate field `")
        .or_else(|| message.strip_prefix("duplicate entry with key \""))
        .and_then(|rest| rest.split(['`', '"']).next())
    {
        let is_key = |l: &&str| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        };
        if let Some((index, _)) = lines.iter().enumerate().filter(|(_, l)| is_key(l)).nth(1) {
            return at(index);
        }
    }
    let quoted: Vec<&str> = message
        .split(['`', '"'])
        .skip(1)
        .step_by(2)
        .filter(|q| q.len() >= 2)
        .collect();
    for q in quoted {
        if let Some(offset) = lines.iter().skip(from - 1).position(|l| l.contains(q)) {
            return at(from - 1 + offset);
        }
    }
    start + from - 1
}

/// serde_yaml appends " at line L column C" to its messages; the line is
/// reported by us (offset to the file), so the suffix would only mislead.
fn clean(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Splits YAML text at `---` lines: (1-based first line, text) per
/// document that holds anything besides comments.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            push_doc(&mut docs, start, &mut cur);
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    push_doc(&mut docs, start, &mut cur);
    docs
}

fn push_doc(docs: &mut Vec<(usize, String)>, start: usize, cur: &mut String) {
    let has_content = cur.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    });
    if has_content {
        docs.push((start, std::mem::take(cur)));
    }
    cur.clear();
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn find_line(text: &str, needle: &str) -> Option<usize> {
    // Values may be quoted or escaped in YAML; a prefix of the needle is
    // still a good pointer.
    let short: String = needle.chars().take(24).collect();
    text.lines()
        .position(|l| l.contains(needle) || l.contains(short.as_str()))
        .map(|i| i + 1)
}
