//! Grouping accuracy of `nightowl patterns mine` on Loghub's sixteen 2k
//! datasets, one configuration for all.
//!
//! `NIGHTOWL_LOGHUB=DIR cargo run --release --example patterns_loghub [-- --errors NAME]`
//! (see benches/loghub.md for DIR).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nightowl::patterns::{eval, Miner};

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::var_os("NIGHTOWL_LOGHUB").context("set NIGHTOWL_LOGHUB (benches/loghub.md)")?,
    );
    let args: Vec<String> = std::env::args().collect();
    let errors_for = args
        .iter()
        .position(|a| a == "--errors")
        .and_then(|i| args.get(i + 1).cloned());
    let sets = eval::read_loghub(&dir)?;
    let mut sum = 0.0;
    for set in &sets {
        let mut miner = Miner::default();
        let raw: Vec<u32> = set
            .messages
            .iter()
            .map(|m| miner.add(m.as_bytes()))
            .collect();
        let pred: Vec<u32> = raw.iter().map(|&c| miner.resolve(c)).collect();
        let acc = eval::grouping_accuracy(&pred, &set.events);
        sum += acc;
        println!(
            "{:<12} {:.3}  ({} patterns, {} events)",
            set.name,
            acc,
            miner.patterns().len(),
            set.events
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
        if errors_for.as_deref() == Some(set.name.as_str()) || errors_for.as_deref() == Some("all")
        {
            print_errors(&miner, &pred, set);
        }
    }
    println!("{:<12} {:.4}", "average", sum / sets.len() as f64);
    // A rough single-core rate (the criterion bench `patterns` is the
    // measurement): every dataset mined by a fresh miner, as a new source.
    let lines: usize = sets.iter().map(|s| s.messages.len()).sum();
    let rounds = 20;
    let start = Cpu::now();
    for _ in 0..rounds {
        for set in &sets {
            let mut miner = Miner::default();
            for m in &set.messages {
                std::hint::black_box(miner.add(m.as_bytes()));
            }
        }
    }
    let secs = start.elapsed();
    println!(
        "rate         {:.0} lines/s (cold miners, {} lines x {rounds})",
        (lines * rounds) as f64 / secs,
        lines
    );
    let mut warm: Vec<Miner> = sets.iter().map(|_| Miner::default()).collect();
    for (miner, set) in warm.iter_mut().zip(&sets) {
        for m in &set.messages {
            miner.add(m.as_bytes());
        }
    }
    let start = Cpu::now();
    for _ in 0..rounds {
        for (miner, set) in warm.iter_mut().zip(&sets) {
            for m in &set.messages {
                std::hint::black_box(miner.add(m.as_bytes()));
            }
        }
    }
    let secs = start.elapsed();
    println!(
        "rate         {:.0} lines/s (warm miners: every signature seen before)",
        (lines * rounds) as f64 / secs
    );
    Ok(())
}

/// Each ground-truth event that is not exactly one predicted group: the
/// predicted groups its messages went to, and what else those hold.
fn print_errors(miner: &Miner, pred: &[u32], set: &eval::Labelled) {
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_pred: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (p, t)) in pred.iter().zip(&set.events).enumerate() {
        by_truth.entry(t).or_default().push(i);
        by_pred.entry(*p).or_default().push(i);
    }
    let mut events: Vec<_> = by_truth.into_iter().collect();
    events.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (event, members) in events {
        let mut preds: HashMap<u32, usize> = HashMap::new();
        for &i in &members {
            *preds.entry(pred[i]).or_default() += 1;
        }
        let exact = preds.len() == 1 && by_pred[&pred[members[0]]].len() == members.len();
        if exact {
            continue;
        }
        println!(
            "  truth {event} ({} msgs) e.g. {:?}",
            members.len(),
            set.messages[members[0]]
        );
        for (p, n) in preds {
            let others = by_pred[&p].len() - n;
            println!(
                "     {n:>4} -> [{p}] {}{}",
                miner.cluster(p).template(),
                if others > 0 {
                    format!("   (+{others} from other events)")
                } else {
                    String::new()
                }
            );
        }
    }
}

/// Thread CPU time: the machine may be shared, wall time would be noise.
struct Cpu(i64);
impl Cpu {
    fn now() -> Cpu {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer to a timespec on the stack.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        Cpu(t.tv_sec * 1_000_000_000 + t.tv_nsec)
    }
    fn elapsed(&self) -> f64 {
        (Cpu::now().0 - self.0) as f64 / 1e9
    }
}
