//! `nightowl patterns mine [--assign] [FILE]`: the miner on a file or
//! stdin, one message per line, the way the collector runs it on every
//! line's message.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::{Config, Miner};
use crate::error::usage;

/// Mines `input` (stdin when `None`). With `assign`, prints one line per
/// input line, `ID<TAB>TEMPLATE`; without, one line per pattern,
/// `COUNT<TAB>ID<TAB>TEMPLATE`, most frequent first. An unreadable input is
/// bad input (exit 2).
pub fn mine(input: Option<&Path>, assign: bool) -> Result<()> {
    let what = input.map_or_else(|| "stdin".to_string(), |p| p.display().to_string());
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path).map_err(|e| usage(format!("reading {what}: {e}")))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = mine_stream(reader, &mut out, assign, &what).and_then(|()| {
        out.flush().context("writing stdout")?;
        Ok(())
    });
    match written {
        // `| head` closing the pipe is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Mines every line of `reader` and writes the result to `out`. Read errors
/// are usage errors naming `what` and the line.
pub fn mine_stream(
    mut reader: impl BufRead,
    out: &mut impl Write,
    assign: bool,
    what: &str,
) -> Result<()> {
    // Unbounded: the indexes kept for --assign must stay valid.
    let mut miner = Miner::new(Config::unbounded());
    // With --assign, the pattern a line joined; printed once the whole
    // input is mined, so every line names its pattern as it ends up (a
    // pattern that later absorbed another keeps one id for both).
    let mut joined: Vec<u32> = Vec::new();
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| usage(format!("reading {what} line {}: {e}", number + 1)))?;
        if n == 0 {
            break;
        }
        number += 1;
        let mut msg = &line[..];
        if let Some(rest) = msg.strip_suffix(b"\n") {
            msg = rest;
        }
        if let Some(rest) = msg.strip_suffix(b"\r") {
            msg = rest;
        }
        let c = miner.add(msg);
        if assign {
            joined.push(c);
        }
    }
    if assign {
        // Ids and templates of the final patterns, built once each.
        let mut shown: Vec<Option<String>> = Vec::new();
        for c in joined {
            let live = miner.resolve(c) as usize;
            if shown.len() <= live {
                shown.resize(live + 1, None);
            }
            let text = shown[live].get_or_insert_with(|| {
                let p = miner.cluster(live as u32);
                format!("{}\t{}\n", p.id_hex(), p.template())
            });
            out.write_all(text.as_bytes())?;
        }
    } else {
        for p in miner.patterns() {
            writeln!(out, "{}\t{}\t{}", p.count, p.id_hex(), p.template())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_prints_one_line_per_input_line_with_final_ids() {
        let mut input = String::new();
        for (i, user) in ["ann", "bo", "cy", "di", "ed", "flo", "gus"]
            .iter()
            .enumerate()
        {
            input.push_str(&format!("Invalid user {user} from 10.0.0.{i}\r\n"));
            input.push_str(&format!("Connection closed by 10.0.0.{i} port 22\n"));
        }
        input.push_str("no newline at the end");
        let mut out = Vec::new();
        mine_stream(input.as_bytes(), &mut out, true, "test").expect("mines");
        let out = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 15);
        // The first user line was mined before the slot opened; it still
        // names the pattern all seven ended in.
        assert_eq!(lines[0], lines[12]);
        assert_eq!(
            lines[0].split('\t').nth(1),
            Some("Invalid user <*> from <*>")
        );
        assert_eq!(
            lines[1].split('\t').nth(1),
            Some("Connection closed by <*> port <*>")
        );
        assert_ne!(lines[0].split('\t').next(), lines[1].split('\t').next());
        assert_eq!(lines[14].split('\t').nth(1), Some("no newline at the end"));

        let mut counts = Vec::new();
        mine_stream(input.as_bytes(), &mut counts, false, "test").expect("mines");
        let counts = String::from_utf8(counts).expect("utf-8");
        let first: Vec<&str> = counts
            .lines()
            .next()
            .expect("a pattern")
            .split('\t')
            .collect();
        assert_eq!(first[0], "7");
        assert_eq!(counts.lines().count(), 3);
    }
}
