//! Measuring the miner: the Loghub benchmark's grouping accuracy, and a
//! reader for its structured CSV files.
//!
//! Loghub (<https://github.com/logpai/loghub>, Zhu et al., ISSRE 2023) is
//! not in this repository: its licence allows research and academic use
//! only, which an Apache-2.0 tree cannot pass on. The bench, the example and
//! the quality test read it from `NIGHTOWL_LOGHUB` (see
//! `benches/loghub.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The sixteen 2k datasets, in Loghub's order.
pub const LOGHUB_2K: [&str; 16] = [
    "HDFS",
    "Hadoop",
    "Spark",
    "Zookeeper",
    "BGL",
    "HPC",
    "Thunderbird",
    "Windows",
    "Linux",
    "Android",
    "HealthApp",
    "Apache",
    "OpenSSH",
    "OpenStack",
    "Mac",
    "Proxifier",
];

/// One labelled dataset: messages and their ground-truth event ids.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub name: String,
    pub messages: Vec<String>,
    pub events: Vec<String>,
}

/// The structured CSV of dataset `name` under `dir`: the corrected
/// `NAME/NAME_2k.log_structured_corrected.csv` when present (Loghub's
/// original labels have known errors), else `NAME/NAME_2k.log_structured.csv`.
pub fn loghub_file(dir: &Path, name: &str) -> PathBuf {
    let corrected = dir
        .join(name)
        .join(format!("{name}_2k.log_structured_corrected.csv"));
    if corrected.exists() {
        corrected
    } else {
        dir.join(name).join(format!("{name}_2k.log_structured.csv"))
    }
}

/// Reads the `Content` and `EventId` columns of a structured CSV.
pub fn read_structured(path: &Path, name: &str) -> Result<Labelled> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let rows = parse_csv(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some((header, rows)) = rows.split_first() else {
        bail!("{}: empty", path.display());
    };
    let col = |want: &str| {
        header
            .iter()
            .position(|h| h == want)
            .with_context(|| format!("{}: no {want} column", path.display()))
    };
    let (content, event) = (col("Content")?, col("EventId")?);
    let mut out = Labelled {
        name: name.to_string(),
        messages: Vec::with_capacity(rows.len()),
        events: Vec::with_capacity(rows.len()),
    };
    for (i, row) in rows.iter().enumerate() {
        let (Some(m), Some(e)) = (row.get(content), row.get(event)) else {
            bail!("{}: line {}: missing columns", path.display(), i + 2);
        };
        out.messages.push(m.clone());
        out.events.push(e.clone());
    }
    Ok(out)
}

/// Every dataset of [`LOGHUB_2K`] under `dir`.
pub fn read_loghub(dir: &Path) -> Result<Vec<Labelled>> {
    LOGHUB_2K
        .iter()
        .map(|name| read_structured(&loghub_file(dir, name), name))
        .collect()
}

/// RFC 4180: fields separated by commas, quoted with `"` (doubled inside),
/// quoted fields may hold commas and newlines.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c)
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if quoted {
        bail!("line {line}: unterminated quote");
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Loghub's grouping accuracy: a message counts as correct when the set of
/// messages in its predicted group is exactly the set in its ground-truth
/// group. `predicted` and `truth` are one label per message.
pub fn grouping_accuracy<P, T>(predicted: &[P], truth: &[T]) -> f64
where
    P: std::hash::Hash + Eq,
    T: std::hash::Hash + Eq,
{
    assert_eq!(predicted.len(), truth.len(), "one label each");
    if truth.is_empty() {
        return 1.0;
    }
    let mut truth_size: HashMap<&T, usize> = HashMap::new();
    for t in truth {
        *truth_size.entry(t).or_default() += 1;
    }
    // Per predicted group: its size and its ground-truth label, or `None`
    // once two labels were seen.
    let mut groups: HashMap<&P, (usize, Option<&T>)> = HashMap::new();
    for (p, t) in predicted.iter().zip(truth) {
        let g = groups.entry(p).or_insert((0, Some(t)));
        g.0 += 1;
        if g.1 != Some(t) {
            g.1 = None;
        }
    }
    let correct: usize = groups
        .values()
        .filter_map(|&(size, label)| label.filter(|t| truth_size[t] == size).map(|_| size))
        .sum();
    correct as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_only_exact_groups() {
        // Truth: {0,1,2} a, {3,4} b, {5} c.
        let truth = ["a", "a", "a", "b", "b", "c"];
        assert_eq!(grouping_accuracy(&[1, 1, 1, 2, 2, 3], &truth), 1.0);
        // b split: b's two messages wrong.
        assert_eq!(grouping_accuracy(&[1, 1, 1, 2, 4, 3], &truth), 4.0 / 6.0);
        // b and c merged: both wrong.
        assert_eq!(grouping_accuracy(&[1, 1, 1, 2, 2, 2], &truth), 3.0 / 6.0);
        // Labels need not be the same names.
        assert_eq!(
            grouping_accuracy(&["x", "x", "x", "y", "y", "z"], &truth),
            1.0
        );
    }

    #[test]
    fn csv_quotes_commas_and_newlines() {
        let rows = parse_csv("a,b\n\"x, \"\"y\"\"\",2\r\n\"multi\nline\",3").expect("parses");
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["x, \"y\"".to_string(), "2".to_string()],
                vec!["multi\nline".to_string(), "3".to_string()],
            ]
        );
        assert!(parse_csv("\"open").is_err());
    }
}
