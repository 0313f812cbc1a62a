//! Event-time window state with bounded memory.

use std::collections::VecDeque;

use super::snapshot::{Dec, DecodeError, Enc};

/// Slots per window: lines closer together than `window / SLOTS` share a
/// slot, so a key's memory is bounded whatever its line rate, at the price
/// of a window edge that is exact only to 1/64 of its length.
const SLOTS: i64 = 64;

/// Count and sum of lines in a sliding event-time window.
#[derive(Debug, Clone, Default)]
pub struct Sliding {
    /// (slot start, count, sum, earliest line), oldest first.
    slots: VecDeque<(i64, u64, f64, i64)>,
    count: u64,
    sum: f64,
    /// Newest timestamp added; with `slots.front()`, the firing's span.
    pub last_ts: i64,
}

impl Sliding {
    /// Adds a line at `ts` and drops what fell out of `(ts - window, ts]`.
    pub fn add(&mut self, ts: i64, window: i64, value: f64) {
        let width = (window / SLOTS).max(1);
        let slot = ts - ts.rem_euclid(width);
        // Lines within the allowed lateness may arrive out of order: put
        // them in their slot, not at the back.
        match self.slots.iter().rposition(|s| s.0 <= slot) {
            Some(i) if self.slots[i].0 == slot => {
                self.slots[i].1 += 1;
                self.slots[i].2 += value;
                self.slots[i].3 = self.slots[i].3.min(ts);
            }
            Some(i) => self.slots.insert(i + 1, (slot, 1, value, ts)),
            None => self.slots.push_front((slot, 1, value, ts)),
        }
        self.count += 1;
        self.sum += value;
        self.last_ts = self.last_ts.max(ts);
        self.expire(self.last_ts, window);
    }

    pub fn expire(&mut self, now: i64, window: i64) {
        while let Some(&(start, c, s, _)) = self.slots.front() {
            // A slot counts while any part of it is inside the window.
            let width = (window / SLOTS).max(1);
            if start + width > now - window {
                break;
            }
            self.slots.pop_front();
            self.count -= c;
            self.sum -= s;
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn first_ts(&self) -> i64 {
        self.slots.front().map_or(self.last_ts, |s| s.3)
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.count = 0;
        self.sum = 0.0;
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.slots.len() as u64);
        for &(start, count, sum, first) in &self.slots {
            e.i64(start);
            e.u64(count);
            e.f64(sum);
            e.i64(first);
        }
        e.u64(self.count);
        e.f64(self.sum);
        e.i64(self.last_ts);
    }

    /// The running sum is stored as is (recomputing it from the slots could
    /// round differently from the live value); the count is checked
    /// against the slots, as a layout mistake would break it first.
    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Sliding, DecodeError> {
        let n = d.len()?;
        let mut w = Sliding::default();
        let mut total = 0u64;
        for _ in 0..n {
            let slot = (d.i64()?, d.u64()?, d.f64()?, d.i64()?);
            total = total.saturating_add(slot.1);
            w.slots.push_back(slot);
        }
        w.count = d.u64()?;
        if w.count != total {
            return Err(DecodeError(format!(
                "window count {} but its slots hold {total}",
                w.count
            )));
        }
        w.sum = d.f64()?;
        w.last_ts = d.i64()?;
        Ok(w)
    }
}

/// Up to five sample lines, each cut to a bounded length, so a firing can
/// show what it saw without a key's memory growing with its traffic.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    lines: Vec<Box<str>>,
}

pub const MAX_SAMPLES: usize = 5;
const MAX_SAMPLE_BYTES: usize = 512;

impl Samples {
    pub fn push(&mut self, line: &str) {
        if self.lines.len() >= MAX_SAMPLES {
            return;
        }
        let mut end = line.len().min(MAX_SAMPLE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        self.lines.push(line[..end].into());
    }

    pub fn take(&mut self) -> Vec<String> {
        self.lines.drain(..).map(String::from).collect()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.lines.len() as u64);
        for l in &self.lines {
            e.str(l);
        }
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Samples, DecodeError> {
        let n = d.len()?;
        let mut s = Samples::default();
        for _ in 0..n {
            // push() re-applies the bounds, whatever the file says.
            s.push(d.str()?);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn sliding_counts_inside_window() {
        let mut w = Sliding::default();
        let win = 60 * S;
        for i in 0..10 {
            w.add(i * S, win, 1.0);
        }
        assert_eq!(w.count(), 10);
        w.add(65 * S, win, 2.0);
        // Lines at 0..=4 s are out of (5 s, 65 s].
        assert_eq!(w.count(), 6);
        assert_eq!(w.sum(), 7.0);
        w.add(200 * S, win, 1.0);
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn sliding_late_line_goes_to_its_slot() {
        let mut w = Sliding::default();
        let win = 64 * S;
        w.add(10 * S, win, 1.0);
        w.add(30 * S, win, 1.0);
        w.add(20 * S, win, 1.0);
        assert_eq!(w.count(), 3);
        assert_eq!(w.first_ts(), 10 * S);
        w.add(80 * S, win, 1.0);
        // 10 s fell out (80 - 64 = 16), 20 and 30 stay.
        assert_eq!(w.count(), 3);
    }

    #[test]
    fn memory_bounded_by_slots() {
        let mut w = Sliding::default();
        for i in 0..100_000 {
            w.add(i * 1_000_000, 60 * S, 1.0);
        }
        assert!(w.slots.len() <= 65, "{}", w.slots.len());
    }

    #[test]
    fn sliding_and_samples_round_trip_through_a_snapshot() {
        let mut w = Sliding::default();
        let win = 64 * S;
        for i in [3, 10, 10, 40, 5] {
            w.add(i * S, win, i as f64 * 0.1);
        }
        let mut s = Samples::default();
        s.push("a line");
        s.push("another");
        let mut e = Enc::default();
        w.encode(&mut e);
        s.encode(&mut e);
        let mut d = Dec::new(&e.buf);
        let mut w2 = Sliding::decode(&mut d).unwrap();
        let mut s2 = Samples::decode(&mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!(w2.slots, w.slots);
        assert_eq!((w2.count(), w2.last_ts, w2.first_ts()), (5, 40 * S, 3 * S));
        assert_eq!(w2.sum().to_bits(), w.sum().to_bits());
        assert_eq!(s2.take(), vec!["a line".to_string(), "another".into()]);
        // The restored window keeps sliding like the original.
        w.add(70 * S, win, 1.0);
        w2.add(70 * S, win, 1.0);
        assert_eq!(w2.count(), w.count());
    }

    #[test]
    fn samples_bounded() {
        let mut s = Samples::default();
        for _ in 0..10 {
            s.push(&"é".repeat(1000));
        }
        let v = s.take();
        assert_eq!(v.len(), MAX_SAMPLES);
        assert!(v[0].len() <= MAX_SAMPLE_BYTES);
    }
}
