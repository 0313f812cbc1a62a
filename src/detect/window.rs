//! Event-time window state with bounded memory.

use std::collections::VecDeque;

use super::snapshot::{Dec, DecodeError, Enc};

/// Slots per window: lines closer together than `window / SLOTS` share a
/// slot, so a key's memory is bounded whatever its line rate, at the price
/// of a window edge that is exact only to 1/64 of its length.
const SLOTS: i64 = 64;

type Slot = (i64, u64, f64, i64);

/// Count and sum of lines in a sliding event-time window, and the slots
/// that slid out of it less than a grace ago.
///
/// The newest slot is kept inline (`head`) and the start of the oldest one
/// is cached (`oldest`): most lines of a key land in the slot of its
/// previous line and expire nothing, and then an update reads no heap
/// memory. With thousands of keys per rule the slot deques are cold, and
/// following them was a cache miss per rule per line.
///
/// History (the grace): a line arriving late, from a source behind the
/// others, belongs to the windows that contain it, which may have ended
/// already. Slots stay for `grace` after leaving the window so such a line
/// is still counted with its neighbours ([`Sliding::windows_containing`]);
/// the running count and sum cover the current window only.
#[derive(Debug, Clone, Default)]
pub struct Sliding {
    /// (slot start, count, sum, earliest line), oldest first; all before
    /// `head`. The first `hist` are history, the rest are in the window;
    /// when `head` is `None` every one is history.
    slots: VecDeque<Slot>,
    head: Option<Slot>,
    /// Start of the oldest slot in the window (`slots[hist]`, or `head`);
    /// meaningless when `head` is `None`.
    oldest: i64,
    /// History slots at the front of `slots`.
    hist: u32,
    count: u64,
    sum: f64,
    /// Newest timestamp added; with the oldest slot, the firing's span.
    pub last_ts: i64,
}

impl Sliding {
    /// Empties the window for another key, keeping its slot memory unless
    /// a long history made it large.
    pub fn reset(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        if slots.capacity() > 2 * SLOTS as usize {
            slots = VecDeque::new();
        }
        *self = Sliding {
            slots,
            ..Sliding::default()
        };
    }

    /// Adds a line at `ts` and moves what fell out of `(ts - window, ts]`
    /// into history, which keeps `grace` more.
    pub fn add(&mut self, ts: i64, window: i64, grace: i64, value: f64) {
        let width = (window / SLOTS).max(1);
        let slot = ts - ts.rem_euclid(width);
        match &mut self.head {
            Some(h) if h.0 == slot => {
                h.1 += 1;
                h.2 += value;
                h.3 = h.3.min(ts);
                self.count += 1;
                self.sum += value;
            }
            Some(h) if h.0 < slot => {
                let prev = std::mem::replace(h, (slot, 1, value, ts));
                self.slots.push_back(prev);
                self.count += 1;
                self.sum += value;
            }
            // After everything slid into history (the head is in the
            // window whenever there is one).
            None if self.slots.back().is_none_or(|b| b.0 < slot)
                && slot + width > self.last_ts.max(ts) - window =>
            {
                self.head = Some((slot, 1, value, ts));
                self.oldest = slot;
                self.count += 1;
                self.sum += value;
            }
            // Out of order: within the window or its grace (the caller
            // checked), put it in its slot, not at the back.
            _ => self.insert_late(slot, ts, width, window, value),
        }
        self.last_ts = self.last_ts.max(ts);
        self.expire(self.last_ts, window, grace);
    }

    #[cold]
    fn insert_late(&mut self, slot: i64, ts: i64, width: i64, window: i64, value: f64) {
        let in_window = slot + width > self.last_ts.max(ts) - window;
        let hist = self.hist as usize;
        match self.slots.iter().rposition(|s| s.0 <= slot) {
            Some(i) if self.slots[i].0 == slot => {
                let s = &mut self.slots[i];
                s.1 += 1;
                s.2 += value;
                s.3 = s.3.min(ts);
                if i >= hist {
                    self.count += 1;
                    self.sum += value;
                }
            }
            found => {
                let at = found.map_or(0, |i| i + 1);
                self.slots.insert(at, (slot, 1, value, ts));
                // Slots are in start order and history is what left the
                // window, so the time decides which side `at` is on.
                if in_window && at >= hist {
                    if at == hist {
                        self.oldest = slot;
                    }
                    self.count += 1;
                    self.sum += value;
                } else {
                    self.hist += 1;
                }
            }
        }
    }

    /// Moves slots out of `(now - window, now]` into history and then
    /// drops history older than `grace` before that. History is trimmed
    /// only when a slot leaves the window, so a line that moves nothing
    /// reads no more than before history existed; what stays a little
    /// longer is real lines, bounded by the slots a window and its grace
    /// hold.
    pub fn expire(&mut self, now: i64, window: i64, grace: i64) {
        // A slot counts while any part of it is inside the window.
        let width = (window / SLOTS).max(1);
        let edge = now - window;
        if self.head.is_none() || self.oldest + width > edge {
            return;
        }
        while self.head.is_some() && self.oldest + width <= edge {
            let h = self.hist as usize;
            let (_, c, s, _) = match self.slots.get(h) {
                Some(&front) => front,
                None => {
                    let last = self.head.take().unwrap_or_default();
                    self.slots.push_back(last);
                    last
                }
            };
            self.hist += 1;
            self.count -= c;
            self.sum -= s;
            if let Some(hd) = &self.head {
                self.oldest = self.slots.get(h + 1).map_or(hd.0, |f| f.0);
            }
        }
        let limit = edge.saturating_sub(grace);
        while self.hist > 0 {
            match self.slots.front() {
                Some(f) if f.0 + width <= limit => {
                    self.slots.pop_front();
                    self.hist -= 1;
                }
                _ => break,
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
        match (self.slots.get(self.hist as usize), &self.head) {
            (Some(s), _) | (None, Some(s)) => s.3,
            (None, None) => self.last_ts,
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.head = None;
        self.hist = 0;
        self.count = 0;
        self.sum = 0.0;
    }

    fn len_all(&self) -> usize {
        self.slots.len() + usize::from(self.head.is_some())
    }

    fn at(&self, i: usize) -> Slot {
        match self.slots.get(i) {
            Some(&s) => s,
            None => self.head.unwrap_or_default(),
        }
    }

    /// Count, sum and earliest line of `(end - window, end]`, history
    /// included, to the same slot precision as the running window.
    pub fn window_at(&self, end: i64, window: i64) -> (u64, f64, i64) {
        let mut c = Cursor::new(self, window);
        c.to(end);
        (c.count, c.sum, c.first())
    }

    /// Calls `f(count, sum, earliest line, end)` for the windows
    /// `(end - window, end]` that contain `ts`, history included: the one
    /// ending at `ts`, then those ending at each later slot's first line,
    /// until `f` returns true (and then returns true). A late line can
    /// complete any of them, not only the one ending at the newest line;
    /// a count changes only where a slot enters, so these are all the
    /// windows there are at slot precision.
    pub fn windows_containing(
        &self,
        ts: i64,
        window: i64,
        mut f: impl FnMut(u64, f64, i64, i64) -> bool,
    ) -> bool {
        let mut c = Cursor::new(self, window);
        c.to(ts);
        if f(c.count, c.sum, c.first(), ts) {
            return true;
        }
        let n = self.len_all();
        while c.hi < n {
            let end = self.at(c.hi).3.max(ts);
            if end >= ts.saturating_add(window) {
                break;
            }
            c.to(end);
            if f(c.count, c.sum, c.first(), end) {
                return true;
            }
        }
        false
    }

    /// [`Sliding::windows_containing`] over a denominator (`self`) and its
    /// numerator `num` (same window, a subset of its lines): `f(numerator
    /// count, denominator count, earliest line, end)`.
    pub fn ratio_windows_containing(
        &self,
        num: &Sliding,
        ts: i64,
        window: i64,
        mut f: impl FnMut(u64, u64, i64, i64) -> bool,
    ) -> bool {
        let mut n = Cursor::new(num, window);
        self.windows_containing(ts, window, |d, _, first, end| {
            n.to(end);
            f(n.count, d, first, end)
        })
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.len_all() as u64);
        for &(start, count, sum, first) in self.slots.iter().chain(&self.head) {
            e.i64(start);
            e.u64(count);
            e.f64(sum);
            e.i64(first);
        }
        e.u32(self.hist);
        e.u64(self.count);
        e.f64(self.sum);
        e.i64(self.last_ts);
    }

    /// The running sum is stored as is (recomputing it from the slots could
    /// round differently from the live value); the count is checked
    /// against the slots, as a layout mistake would break it first.
    /// `version` 1 had no history.
    pub(crate) fn decode(d: &mut Dec<'_>, version: u32) -> Result<Sliding, DecodeError> {
        let n = d.len()?;
        let mut w = Sliding::default();
        for _ in 0..n {
            let slot = (d.i64()?, d.u64()?, d.f64()?, d.i64()?);
            w.slots.push_back(slot);
        }
        w.hist = if version >= 2 { d.u32()? } else { 0 };
        if w.hist as usize > n {
            return Err(DecodeError(format!(
                "window history of {} slots but {n} slots",
                w.hist
            )));
        }
        if w.hist as usize != n {
            w.head = w.slots.pop_back();
        }
        if let Some(h) = &w.head {
            w.oldest = w.slots.get(w.hist as usize).map_or(h.0, |f| f.0);
        }
        let total: u64 = w
            .slots
            .iter()
            .skip(w.hist as usize)
            .chain(&w.head)
            .fold(0u64, |t, s| t.saturating_add(s.1));
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

/// A window sliding forward over a [`Sliding`]'s slots, history included:
/// `to(end)` takes in the slots that start at or before `end` and lets go
/// of those wholly at or before `end - window`. Ends must not decrease.
struct Cursor<'a> {
    w: &'a Sliding,
    width: i64,
    window: i64,
    lo: usize,
    hi: usize,
    count: u64,
    sum: f64,
}

impl<'a> Cursor<'a> {
    fn new(w: &'a Sliding, window: i64) -> Cursor<'a> {
        Cursor {
            w,
            width: (window / SLOTS).max(1),
            window,
            lo: 0,
            hi: 0,
            count: 0,
            sum: 0.0,
        }
    }

    fn to(&mut self, end: i64) {
        let n = self.w.len_all();
        while self.hi < n {
            let s = self.w.at(self.hi);
            if s.0 > end {
                break;
            }
            self.count += s.1;
            self.sum += s.2;
            self.hi += 1;
        }
        while self.lo < self.hi {
            let s = self.w.at(self.lo);
            if s.0 + self.width > end.saturating_sub(self.window) {
                break;
            }
            self.count -= s.1;
            self.sum -= s.2;
            self.lo += 1;
        }
    }

    fn first(&self) -> i64 {
        if self.lo < self.hi {
            self.w.at(self.lo).3
        } else {
            i64::MAX
        }
    }
}

/// Up to five sample lines, each cut to a bounded length, so a firing can
/// show what it saw without a key's memory growing with its traffic. The
/// lines share one buffer, so a recycled key state (`KeyMap`'s eviction)
/// keeps it and a new key's samples allocate nothing.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    text: String,
    /// End of each line in `text`.
    ends: [u16; MAX_SAMPLES],
    len: u8,
}

pub const MAX_SAMPLES: usize = 5;
const MAX_SAMPLE_BYTES: usize = 512;

impl Samples {
    pub fn push(&mut self, line: &str) {
        if self.len() >= MAX_SAMPLES {
            return;
        }
        let mut end = line.len().min(MAX_SAMPLE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&line[..end]);
        // At most 5 × 512 bytes.
        self.ends[self.len()] = self.text.len() as u16;
        self.len += 1;
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> + '_ {
        let ends = &self.ends[..self.len()];
        let starts = std::iter::once(0).chain(ends.iter().map(|&e| e as usize));
        starts
            .zip(ends)
            .map(|(start, &end)| &self.text[start..end as usize])
    }

    pub fn take(&mut self) -> Vec<String> {
        let lines = self.lines().map(String::from).collect();
        self.clear();
        lines
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn encode(&self, e: &mut Enc) {
        e.u64(self.len() as u64);
        for l in self.lines() {
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
            w.add(i * S, win, 0, 1.0);
        }
        assert_eq!(w.count(), 10);
        w.add(65 * S, win, 0, 2.0);
        // Lines at 0..=4 s are out of (5 s, 65 s].
        assert_eq!(w.count(), 6);
        assert_eq!(w.sum(), 7.0);
        w.add(200 * S, win, 0, 1.0);
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn sliding_late_line_goes_to_its_slot() {
        let mut w = Sliding::default();
        let win = 64 * S;
        w.add(10 * S, win, 0, 1.0);
        w.add(30 * S, win, 0, 1.0);
        w.add(20 * S, win, 0, 1.0);
        assert_eq!(w.count(), 3);
        assert_eq!(w.first_ts(), 10 * S);
        w.add(80 * S, win, 0, 1.0);
        // 10 s fell out (80 - 64 = 16), 20 and 30 stay.
        assert_eq!(w.count(), 3);
    }

    #[test]
    fn memory_bounded_by_slots() {
        let mut w = Sliding::default();
        for i in 0..100_000 {
            w.add(i * 1_000_000, 60 * S, 0, 1.0);
        }
        assert!(w.slots.len() <= 65, "{}", w.slots.len());
        // With a grace of two windows, three windows' worth at most.
        for i in 0..100_000 {
            w.add(100 * S + i * 1_000_000, 60 * S, 120 * S, 1.0);
        }
        assert!(w.slots.len() <= 3 * 64 + 2, "{}", w.slots.len());
        // A minute of lines, plus the part of the oldest slot before it.
        assert!(
            (60_000..=60_000 + 938).contains(&w.count()),
            "{}",
            w.count()
        );
    }

    #[test]
    fn history_keeps_the_grace_and_a_late_line_finds_its_windows() {
        let win = 64 * S;
        let grace = 64 * S;
        let mut w = Sliding::default();
        // Three lines early on, then the key moves 100 s on.
        for t in [10, 11, 12] {
            w.add(t * S, win, grace, 1.0);
        }
        w.add(110 * S, win, grace, 1.0);
        assert_eq!(w.count(), 1, "the early lines left the window");
        assert_eq!(w.first_ts(), 110 * S);
        // A late line at 13 s: in history, not in the running window...
        w.add(13 * S, win, grace, 1.0);
        assert_eq!(w.count(), 1);
        // ...but counted with its neighbours in the windows around it.
        let mut seen = Vec::new();
        w.windows_containing(13 * S, win, |c, _, first, end| {
            seen.push((c, first / S, end / S));
            false
        });
        assert_eq!(seen, vec![(4, 10, 13)]);
        assert_eq!(w.window_at(110 * S, win).0, 1);
        assert_eq!(w.window_at(70 * S, win).0, 4);
        // A line 30 s late lands in the running window too.
        w.add(80 * S, win, grace, 1.0);
        assert_eq!(w.count(), 2);
        let mut best = 0;
        w.windows_containing(80 * S, win, |c, _, _, _| {
            best = best.max(c);
            false
        });
        assert_eq!(best, 2);
        // History older than the grace goes.
        w.add(250 * S, win, grace, 1.0);
        assert_eq!(w.window_at(13 * S, win).0, 0);
        assert!(w.slots.len() <= 3, "{:?}", w.slots);
    }

    #[test]
    fn sliding_and_samples_round_trip_through_a_snapshot() {
        let mut w = Sliding::default();
        let win = 64 * S;
        for i in [3, 10, 10, 40, 5, 100] {
            w.add(i * S, win, win, i as f64 * 0.1);
        }
        let mut s = Samples::default();
        s.push("a line");
        s.push("another");
        let mut e = Enc::default();
        w.encode(&mut e);
        s.encode(&mut e);
        let mut d = Dec::new(&e.buf);
        let mut w2 = Sliding::decode(&mut d, 2).unwrap();
        let mut s2 = Samples::decode(&mut d).unwrap();
        assert!(d.is_empty());
        assert_eq!(
            (&w2.slots, w2.head, w2.oldest, w2.hist),
            (&w.slots, w.head, w.oldest, w.hist)
        );
        assert!(w.hist > 0, "the test should carry history");
        assert_eq!(
            (w2.count(), w2.last_ts, w2.first_ts()),
            (2, 100 * S, 40 * S)
        );
        assert_eq!(w2.sum().to_bits(), w.sum().to_bits());
        assert_eq!(s2.take(), vec!["a line".to_string(), "another".into()]);
        // The restored window keeps sliding like the original.
        w.add(70 * S, win, win, 1.0);
        w2.add(70 * S, win, win, 1.0);
        assert_eq!(w2.count(), w.count());
    }

    /// The window as a plain list of every slot, history included, each
    /// marked in the window or not, with the running count and sum kept
    /// the obvious way: what [`Sliding`] must agree with.
    #[derive(Default)]
    struct Plain {
        slots: Vec<(Slot, bool)>,
        count: u64,
        sum: f64,
        last_ts: i64,
    }

    impl Plain {
        fn add(&mut self, ts: i64, window: i64, grace: i64, value: f64) {
            let width = (window / SLOTS).max(1);
            let slot = ts - ts.rem_euclid(width);
            let in_window = slot + width > self.last_ts.max(ts) - window;
            match self.slots.iter().rposition(|s| s.0 .0 <= slot) {
                Some(i) if self.slots[i].0 .0 == slot => {
                    let (s, counted) = &mut self.slots[i];
                    s.1 += 1;
                    s.2 += value;
                    s.3 = s.3.min(ts);
                    if *counted {
                        self.count += 1;
                        self.sum += value;
                    }
                }
                found => {
                    let at = found.map_or(0, |i| i + 1);
                    self.slots.insert(at, ((slot, 1, value, ts), in_window));
                    if in_window {
                        self.count += 1;
                        self.sum += value;
                    }
                }
            }
            self.last_ts = self.last_ts.max(ts);
            self.expire(self.last_ts, window, grace);
        }

        fn expire(&mut self, now: i64, window: i64, grace: i64) {
            let width = (window / SLOTS).max(1);
            let mut moved = false;
            for (s, counted) in self.slots.iter_mut() {
                if *counted && s.0 + width <= now - window {
                    *counted = false;
                    moved = true;
                    self.count -= s.1;
                    self.sum -= s.2;
                }
            }
            // History is trimmed when a slot leaves the window.
            if moved {
                self.slots
                    .retain(|(s, counted)| *counted || s.0 + width > now - window - grace);
            }
        }
    }

    #[test]
    fn sliding_matches_the_plain_list_on_random_late_lines() {
        let win = 64 * S;
        for grace in [0, 20 * S, 3 * win] {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let (mut w, mut p) = (Sliding::default(), Plain::default());
            let mut t = 0i64;
            for i in 0..50_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly forward in small steps, sometimes late (within the
                // window and grace: the engine sends older lines elsewhere),
                // sometimes a gap.
                t += match x % 100 {
                    0 => 200 * S,
                    1..=10 => -((x >> 8) as i64 % (20 * S)),
                    _ => (x >> 8) as i64 % (2 * S),
                };
                let ts = t.max(p.last_ts - win - grace + S);
                let v = (x >> 40) as f64 / 7.0;
                if i % 97 == 0 {
                    w.expire(ts, win, grace);
                    p.expire(ts, win, grace);
                } else if i % 1999 == 0 {
                    w.clear();
                    p = Plain {
                        last_ts: p.last_ts,
                        ..Plain::default()
                    };
                } else {
                    w.add(ts, win, grace, v);
                    p.add(ts, win, grace, v);
                }
                let all: Vec<Slot> = w.slots.iter().chain(&w.head).copied().collect();
                let plain: Vec<Slot> = p.slots.iter().map(|s| s.0).collect();
                assert_eq!(all, plain, "step {i} grace {grace}");
                let hist = p.slots.iter().take_while(|s| !s.1).count();
                assert_eq!(w.hist as usize, hist, "step {i} grace {grace}");
                assert!(p.slots[hist..].iter().all(|s| s.1), "step {i}");
                assert_eq!((w.count(), w.last_ts), (p.count, p.last_ts), "step {i}");
                assert_eq!(w.sum().to_bits(), p.sum.to_bits(), "step {i}");
                let first = p.slots.get(hist).map_or(p.last_ts, |s| s.0 .3);
                assert_eq!(w.first_ts(), first, "step {i}");
                // The windows around a line agree with a count from scratch.
                if i % 13 == 0 {
                    let width = win / SLOTS;
                    let direct = |end: i64| -> u64 {
                        p.slots
                            .iter()
                            .filter(|(s, _)| s.0 <= end && s.0 + width > end - win)
                            .map(|(s, _)| s.1)
                            .sum()
                    };
                    w.windows_containing(ts, win, |c, _, _, end| {
                        assert_eq!(c, direct(end), "step {i} end {end}");
                        assert!(end >= ts && end < ts + win);
                        false
                    });
                }
            }
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
