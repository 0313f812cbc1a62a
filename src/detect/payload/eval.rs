//! The labelled evaluation set (`tests/fixtures/payloads/`) and the
//! per-class detection and false-positive rates the payload bench prints
//! and the quality test asserts.

use std::path::Path;

use super::{detect, Payload, PayloadScratch};

/// The classes of the set, in report order; `benign` last.
pub const CLASSES: [&str; 5] = ["sqli", "xss", "cmdi", "traversal", "benign"];

pub fn class_kind(class: &str) -> Option<Payload> {
    match class {
        "sqli" => Some(Payload::Sqli),
        "xss" => Some(Payload::Xss),
        "cmdi" => Some(Payload::Cmdi),
        "traversal" => Some(Payload::Traversal),
        _ => None,
    }
}

/// One labelled value: its source list and the value as it travels in a
/// query string (percent-encoded).
#[derive(Debug, Clone)]
pub struct Sample {
    pub source: String,
    pub value: String,
}

/// `DIR/SPLIT/CLASS.txt`: `source<TAB>value` per line.
pub fn load(dir: &Path, split: &str, class: &str) -> Result<Vec<Sample>, String> {
    let path = dir.join(split).join(format!("{class}.txt"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((source, value)) = line.split_once('\t') else {
            return Err(format!(
                "{}:{}: expected source<TAB>value",
                path.display(),
                n + 1
            ));
        };
        out.push(Sample {
            source: source.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

/// The request path a sample is sent as: one parameter, as the public
/// corpora are measured.
pub fn request_path(value: &str) -> String {
    format!("/page?q={value}")
}

/// Detection of one class (or false positives of `benign`): samples
/// flagged, total, and the samples missed (or flagged, for benign).
#[derive(Debug, Default)]
pub struct ClassRate {
    pub flagged: usize,
    pub total: usize,
    pub wrong: Vec<Sample>,
}

impl ClassRate {
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.flagged as f64 / self.total as f64
        }
    }
}

/// Runs the detector of the class (any detector for `benign`) on every
/// sample, sent as [`request_path`].
pub fn rate(class: &str, samples: &[Sample], sc: &mut PayloadScratch) -> ClassRate {
    let mut r = ClassRate {
        total: samples.len(),
        ..ClassRate::default()
    };
    for s in samples {
        let path = request_path(&s.value);
        let hit = match class_kind(class) {
            Some(k) => detect(k, &path, sc),
            None => Payload::ALL.iter().any(|k| detect(*k, &path, sc)),
        };
        if hit {
            r.flagged += 1;
        }
        if hit != class_kind(class).is_some() {
            r.wrong.push(s.clone());
        }
    }
    r
}
