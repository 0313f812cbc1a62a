//! Event-time window state with bounded memory.

use std::collections::VecDeque;

use super::snapshot::{Dec, DecodeError, Enc};

/// Slots per window: lines closer together than `window / SLOTS` share a
/// slot, so a key's memory is bounded whatever its line rate, at the price
/// of a window edge that is exact only to 1/64 of its length.
const SLOTS: i64 = 64;

type Slot = (i64, u64, f64, i64);

/// Count and sum of lines in a sliding event-time window.
///
/// The newest slot is kept inline (`head`) and the start of the oldest one
/// is cached (`oldest`): most lines of a key land in the slot of its
/// previous line and expire nothing, and then an update reads no heap
/// memory. With thousands of keys per rule the slot deques are cold, and
/// following them was a cache miss per rule per line.
#[derive(Debug, Clone, Default)]
pub struct Sliding {
    /// (slot start, count, sum, earliest line), oldest first; all before
    /// `head`, and empty when `head` is `None`.
    slots: VecDeque<Slot>,
    head: Option<Slot>,
    /// Start of the oldest slot (the deque's front, or `head`); meaningless
    /// when `head` is `None`.
    oldest: i64,
    count: u64,
    sum: f64,
    /// Newest timestamp added; with the oldest slot, the firing's span.
    pub last_ts: i64,
}

impl Sliding {
    /// Adds a line at `ts` and drops what fell out of `(ts - window, ts]`.
    pub fn add(&mut self, ts: i64, window: i64, value: f64) {
        let width = (window / SLOTS).max(1);
        let slot = ts - ts.rem_euclid(width);
        match &mut self.head {
            None => {
                self.head = Some((slot, 1, value, ts));
                self.oldest = slot;
            }
            Some(h) if h.0 == slot => {
                h.1 += 1;
                h.2 += value;
                h.3 = h.3.min(ts);
            }
            Some(h) if h.0 < slot => {
                let prev = std::mem::replace(h, (slot, 1, value, ts));
                self.slots.push_back(prev);
            }
            // Lines within the allowed lateness may arrive out of order:
            // put them in their slot, not at the back.
            Some(_) => match self.slots.iter().rposition(|s| s.0 <= slot) {
                Some(i) if self.slots[i].0 == slot => {
                    self.slots[i].1 += 1;
                    self.slots[i].2 += value;
                    self.slots[i].3 = self.slots[i].3.min(ts);
                }
                Some(i) => self.slots.insert(i + 1, (slot, 1, value, ts)),
                None => {
                    self.slots.push_front((slot, 1, value, ts));
                    self.oldest = slot;
                }
            },
        }
        self.count += 1;
        self.sum += value;
        self.last_ts = self.last_ts.max(ts);
        self.expire(self.last_ts, window);
    }

    pub fn expire(&mut self, now: i64, window: i64) {
        // A slot counts while any part of it is inside the window.
        let width = (window / SLOTS).max(1);
        while self.head.is_some() && self.oldest + width <= now - window {
            let (_, c, s, _) = match self.slots.pop_front() {
                Some(front) => front,
                None => self.head.take().unwrap_or_default(),
            };
            self.count -= c;
            self.sum -= s;
            if let Some(h) = &self.head {
                self.oldest = self.slots.front().map_or(h.0, |f| f.0);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn first_ts(&self) -> i64 {
        match (self.slots.front(), &self.head) {
            (Some(s), _) | (None, Some(s)) => s.3,
            (None, None) => self.last_ts,
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.head = None;
        self.count = 0;
        self.sum = 0.0;
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64((self.slots.len() + usize::from(self.head.is_some())) as u64);
        for &(start, count, sum, first) in self.slots.iter().chain(&self.head) {
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
        w.head = w.slots.pop_back();
        if let Some(h) = &w.head {
            w.oldest = w.slots.front().map_or(h.0, |f| f.0);
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
        assert_eq!(
            (&w2.slots, w2.head, w2.oldest),
            (&w.slots, w.head, w.oldest)
        );
        assert_eq!((w2.count(), w2.last_ts, w2.first_ts()), (5, 40 * S, 3 * S));
        assert_eq!(w2.sum().to_bits(), w.sum().to_bits());
        assert_eq!(s2.take(), vec!["a line".to_string(), "another".into()]);
        // The restored window keeps sliding like the original.
        w.add(70 * S, win, 1.0);
        w2.add(70 * S, win, 1.0);
        assert_eq!(w2.count(), w.count());
    }

    /// The window as it was before the inline head: every slot in one deque.
    #[derive(Default)]
    struct Plain {
        slots: VecDeque<Slot>,
        count: u64,
        sum: f64,
        last_ts: i64,
    }

    impl Plain {
        fn add(&mut self, ts: i64, window: i64, value: f64) {
            let width = (window / SLOTS).max(1);
            let slot = ts - ts.rem_euclid(width);
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

        fn expire(&mut self, now: i64, window: i64) {
            while let Some(&(start, c, s, _)) = self.slots.front() {
                let width = (window / SLOTS).max(1);
                if start + width > now - window {
                    break;
                }
                self.slots.pop_front();
                self.count -= c;
                self.sum -= s;
            }
        }
    }

    #[test]
    fn sliding_matches_the_plain_deque_on_random_late_lines() {
        let win = 64 * S;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let (mut w, mut p) = (Sliding::default(), Plain::default());
        let mut t = 0i64;
        for i in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly forward in small steps, sometimes late, sometimes a gap.
            t += match x % 100 {
                0 => 200 * S,
                1..=10 => -((x >> 8) as i64 % (20 * S)),
                _ => (x >> 8) as i64 % (2 * S),
            };
            let v = (x >> 40) as f64 / 7.0;
            if i % 97 == 0 {
                w.expire(t, win);
                p.expire(t, win);
            } else if i % 1999 == 0 {
                w.clear();
                p = Plain {
                    last_ts: p.last_ts,
                    ..Plain::default()
                };
            } else {
                w.add(t, win, v);
                p.add(t, win, v);
            }
            let all: Vec<Slot> = w.slots.iter().chain(&w.head).copied().collect();
            assert_eq!(all, Vec::from(p.slots.clone()), "step {i}");
            assert_eq!((w.count(), w.last_ts), (p.count, p.last_ts), "step {i}");
            assert_eq!(w.sum().to_bits(), p.sum.to_bits(), "step {i}");
            let first = p.slots.front().map_or(p.last_ts, |s| s.3);
            assert_eq!(w.first_ts(), first, "step {i}");
        }
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
