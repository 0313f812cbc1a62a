//! A rule's per-key state: a hash table with exact least-recently-used
//! eviction, looked up with a hash the caller computed once per line.
//!
//! Why not `lru::LruCache`: with 100 rules it was the largest item of the
//! profile. Each hit re-linked the entry into a doubly linked list (two
//! more cache misses on the neighbours, which are random entries of a large
//! table), and each rule hashed the same key again. Here a hit writes a
//! stamp (kept in a dense array beside the slots, so the compaction
//! below reads that array, not the cold slots) and appends `(stamp, slot)`
//! to a queue: the queue's
//! tail is always in cache, and stale queue entries (a key touched again
//! later) are skipped when the front is popped, or dropped in bulk when the
//! queue outgrows twice the keys. Eviction order is exactly the LRU order.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// The hash of a state key; the same for every rule, so rules keyed on the
/// same fields share one computation per line.
pub fn hash_key(key: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6e69_6768_746f_776c).hash_one(key)
}

/// Bytes of a key kept inside its slot: `tenant, SEP, client_ip` and most
/// other keys fit, so comparing the key reads the cache line the hash was
/// read from instead of following a pointer to the heap.
const INLINE: usize = 46;

#[derive(Debug)]
enum KeyText {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

impl KeyText {
    fn new(key: &str) -> KeyText {
        if key.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..key.len()].copy_from_slice(key.as_bytes());
            KeyText::Inline {
                len: key.len() as u8,
                buf,
            }
        } else {
            KeyText::Heap(key.into())
        }
    }

    #[inline]
    fn as_str(&self) -> &str {
        match self {
            // Only ever filled from a whole `&str` (`new`).
            KeyText::Inline { len, buf } => {
                std::str::from_utf8(&buf[..*len as usize]).unwrap_or_default()
            }
            KeyText::Heap(s) => s,
        }
    }

    #[inline]
    fn eq(&self, key: &str) -> bool {
        match self {
            KeyText::Inline { len, buf } => &buf[..*len as usize] == key.as_bytes(),
            KeyText::Heap(s) => &**s == key,
        }
    }
}

impl Default for KeyText {
    fn default() -> Self {
        KeyText::Inline {
            len: 0,
            buf: [0; INLINE],
        }
    }
}

/// `repr(C)`: hash and key first, in the slot's first cache line.
#[derive(Debug)]
#[repr(C)]
struct Slot<V> {
    hash: u64,
    key: KeyText,
    value: V,
}

/// What [`KeyMap::prefetch`] found: the slot whose tag matched the hash,
/// or [`NO_SLOT`]. Valid only until the map changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint(u32);

const NO_SLOT: u32 = u32::MAX;

impl Hint {
    /// No slot's tag matched: the key is surely not in the map.
    pub fn absent(self) -> bool {
        self.0 == NO_SLOT
    }
}

/// Admission at a full key map, for rules no single line can fire (a
/// burn rate needs `min_requests`): a key the map does not hold gets state
/// only when seen a second time among about the last `cap` keys turned
/// away. Without it, a long tail of keys seen once (request paths with
/// slugs, a scan of random paths) evicts a key on nearly every line, and
/// with it the state of keys that do repeat but less often than the cap
/// cycles (TinyLFU's doorkeeper, minus the sketch). Below the cap every
/// key is admitted at once, so counts are exact while keys fit.
#[derive(Debug)]
pub struct Doorkeeper {
    bits: Vec<u64>,
    mask: u64,
    seen: usize,
    cap: usize,
}

impl Doorkeeper {
    /// 16 bits per key of `cap`, two set per key: one new key in a few
    /// hundred is taken for seen. Allocated when the map first fills.
    pub fn new(cap: usize) -> Doorkeeper {
        let bits = (cap.max(64) * 16).next_power_of_two();
        Doorkeeper {
            bits: Vec::new(),
            mask: bits as u64 - 1,
            seen: 0,
            cap: cap.max(1),
        }
    }

    /// Whether the key of `hash` was turned away before (since the last
    /// reset); marks it seen either way.
    pub fn admit(&mut self, hash: u64) -> bool {
        if self.bits.is_empty() {
            self.bits = vec![0; (self.mask as usize + 1) / 64];
        }
        let a = (hash.rotate_left(21) & self.mask) as usize;
        let b = (hash.rotate_left(43) & self.mask) as usize;
        let was = self.bits[a / 64] >> (a % 64) & 1 == 1 && self.bits[b / 64] >> (b % 64) & 1 == 1;
        if was {
            return true;
        }
        self.seen += 1;
        if self.seen > self.cap {
            // Forget old sightings so the filter does not fill up.
            self.bits.fill(0);
            self.seen = 1;
        }
        self.bits[a / 64] |= 1 << (a % 64);
        self.bits[b / 64] |= 1 << (b % 64);
        false
    }
}

#[derive(Debug)]
pub struct KeyMap<V> {
    index: HashTable<u32>,
    slots: Vec<Slot<V>>,
    /// High half of each slot's hash, apart from the slots: what
    /// [`KeyMap::prefetch`] probes without touching the (cold) slots.
    tags: Vec<u32>,
    /// Per slot: stamp of its last touch; 0 for a free slot.
    stamps: Vec<u64>,
    free: Vec<u32>,
    /// Touches, oldest first; an entry is live iff its stamp is its slot's.
    order: VecDeque<(u64, u32)>,
    clock: u64,
}

impl<V: Default> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap {
            index: HashTable::new(),
            slots: Vec::new(),
            tags: Vec::new(),
            stamps: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            clock: 0,
        }
    }
}

impl<V: Default> KeyMap<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && s.key.eq(key)
            })
            .copied()
    }

    fn touch(&mut self, i: u32) {
        self.clock += 1;
        self.stamps[i as usize] = self.clock;
        self.order.push_back((self.clock, i));
        if self.order.len() > 2 * self.index.len() + 64 {
            let stamps = &self.stamps;
            self.order.retain(|&(s, i)| stamps[i as usize] == s);
        }
    }

    /// Inserts a new key; without a `value` it gets what its free slot
    /// holds (a default, or what [`KeyMap::evict_lru`] recycled) or, in a
    /// new slot, `V::default()`.
    fn insert_new(&mut self, hash: u64, key: &str, value: Option<V>) -> u32 {
        let i = match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                slot.hash = hash;
                slot.key = KeyText::new(key);
                if let Some(v) = value {
                    slot.value = v;
                }
                self.tags[i as usize] = tag(hash);
                i
            }
            None => {
                self.slots.push(Slot {
                    hash,
                    key: KeyText::new(key),
                    value: value.unwrap_or_default(),
                });
                self.tags.push(tag(hash));
                self.stamps.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
        self.touch(i);
        i
    }

    /// Starts loading the slot of the key with this hash into the cache, if
    /// there is one: the engine calls it for every rule a line reaches
    /// before it updates any of them, so their cache misses overlap instead
    /// of coming one after the other. Nothing changes; the [`Hint`] it
    /// returns spares [`KeyMap::get_or_insert_hinted`] a second probe.
    pub fn prefetch(&self, hash: u64) -> Hint {
        let (tags, slots) = (&self.tags, &self.slots);
        let t = tag(hash);
        match self.index.find(hash, |&i| tags[i as usize] == t) {
            Some(&i) => {
                let p = (&slots[i as usize] as *const Slot<V>).cast::<u8>();
                for line in 0..std::mem::size_of::<Slot<V>>().div_ceil(64).min(6) {
                    prefetch_line(p.wrapping_add(line * 64));
                }
                Hint(i)
            }
            None => Hint(NO_SLOT),
        }
    }

    /// The key's value, made the most recently used; a new key gets
    /// `V::default()`. The flag tells whether the key was new.
    pub fn get_or_insert(&mut self, hash: u64, key: &str) -> (&mut V, bool) {
        let found = self.find(hash, key);
        self.get_or_insert_found(hash, key, found)
    }

    /// [`KeyMap::get_or_insert`] with what [`KeyMap::prefetch`] of the same
    /// hash found, when the map has not changed since: a slot whose tag
    /// matched is checked, and no such slot means the key is absent (its
    /// own slot would have matched), so a hit or a new key costs no second
    /// probe of the index.
    pub fn get_or_insert_hinted(&mut self, hash: u64, key: &str, hint: Hint) -> (&mut V, bool) {
        let found = if hint.0 == NO_SLOT {
            None
        } else {
            let i = hint.0 as usize;
            match self.slots.get(i) {
                Some(s) if self.stamps[i] != 0 && s.hash == hash && s.key.eq(key) => Some(hint.0),
                _ => self.find(hash, key),
            }
        };
        self.get_or_insert_found(hash, key, found)
    }

    #[inline]
    fn get_or_insert_found(&mut self, hash: u64, key: &str, found: Option<u32>) -> (&mut V, bool) {
        let (i, new) = match found {
            Some(i) => {
                self.touch(i);
                (i, false)
            }
            None => (self.insert_new(hash, key, None), true),
        };
        (&mut self.slots[i as usize].value, new)
    }

    /// Inserts (or replaces) a key as the most recently used.
    pub fn push(&mut self, key: &str, value: V) {
        let hash = hash_key(key);
        match self.find(hash, key) {
            Some(i) => {
                self.slots[i as usize].value = value;
                self.touch(i);
            }
            None => {
                self.insert_new(hash, key, Some(value));
            }
        }
    }

    /// Takes slot `i` out of the index and the LRU order; its key and
    /// value stay until the slot is reused.
    fn unlink(&mut self, i: u32) {
        let hash = self.slots[i as usize].hash;
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        self.stamps[i as usize] = 0;
        self.free.push(i);
    }

    fn remove_slot(&mut self, i: u32) -> (String, V) {
        self.unlink(i);
        let s = &mut self.slots[i as usize];
        let key = std::mem::take(&mut s.key);
        (key.as_str().to_string(), std::mem::take(&mut s.value))
    }

    fn lru(&mut self) -> Option<u32> {
        while let Some((s, i)) = self.order.pop_front() {
            if self.stamps[i as usize] == s {
                return Some(i);
            }
        }
        None
    }

    /// Removes and returns the least recently used key. The engine evicts
    /// with [`KeyMap::evict_lru`]; this form is for the tests of the order.
    #[cfg(test)]
    pub fn pop_lru(&mut self) -> Option<(String, V)> {
        let i = self.lru()?;
        Some(self.remove_slot(i))
    }

    /// Removes every key `doomed` says yes to; returns how many went.
    pub fn remove_where(&mut self, mut doomed: impl FnMut(&str) -> bool) -> usize {
        let victims: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                let s = &self.slots[i as usize];
                self.stamps[i as usize] != 0 && doomed(s.key.as_str())
            })
            .collect();
        for &i in &victims {
            self.remove_slot(i);
        }
        if !victims.is_empty() {
            let stamps = &self.stamps;
            self.order.retain(|&(s, i)| stamps[i as usize] == s);
        }
        victims.len()
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.tags.clear();
        self.stamps.clear();
        self.free.clear();
        self.order.clear();
    }

    /// Live keys, least recently used first.
    pub fn iter_lru_first(&self) -> impl Iterator<Item = (&str, &V)> {
        self.order.iter().filter_map(|&(s, i)| {
            let slot = &self.slots[i as usize];
            (self.stamps[i as usize] == s).then_some((slot.key.as_str(), &slot.value))
        })
    }

    /// Calls `f` on every live key, most recently used first, without
    /// changing the order.
    pub fn for_each_mru_first(&mut self, mut f: impl FnMut(&str, &mut V)) {
        for k in (0..self.order.len()).rev() {
            let (s, i) = self.order[k];
            if self.stamps[i as usize] == s {
                let slot = &mut self.slots[i as usize];
                f(slot.key.as_str(), &mut slot.value);
            }
        }
    }
}

/// A value whose memory can serve another key once its own key is evicted.
pub trait Recycle {
    /// Makes the value what a new key starts with, keeping what it
    /// allocated where that is worth keeping.
    fn recycle(&mut self);
}

impl<V: Default + Recycle> KeyMap<V> {
    /// Evicts the least recently used key without building its key
    /// string or freeing its value: the value is recycled in its free
    /// slot, which the next new key takes. A cap-bound rule under a churn
    /// of keys so costs no allocation per new key.
    pub fn evict_lru(&mut self) -> bool {
        let Some(i) = self.lru() else {
            return false;
        };
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        slot.key = KeyText::default();
        slot.value.recycle();
        true
    }
}

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doorkeeper_admits_a_second_sighting_and_forgets_old_ones() {
        let mut door = Doorkeeper::new(100);
        let hashes: Vec<u64> = (0..100).map(|i| hash_key(&format!("/p/{i}"))).collect();
        let first = hashes.iter().filter(|&&h| door.admit(h)).count();
        assert!(first <= 1, "{first} of 100 new keys taken for seen");
        assert!(
            hashes.iter().all(|&h| door.admit(h)),
            "all seen once before"
        );
        // A hundred more new keys fill it: it starts over, so the first
        // hundred count as new again.
        for i in 0..101 {
            door.admit(hash_key(&format!("/q/{i}")));
        }
        let again = hashes.iter().filter(|&&h| door.admit(h)).count();
        assert!(again <= 1, "{again} of 100 forgotten keys still seen");
    }

    fn keys(m: &KeyMap<u32>) -> Vec<String> {
        m.iter_lru_first().map(|(k, _)| k.to_string()).collect()
    }

    #[test]
    fn evicts_exactly_in_lru_order_through_compactions() {
        // A reference LRU: a Vec, least recently used first.
        let mut reference: Vec<String> = Vec::new();
        let mut m: KeyMap<u32> = KeyMap::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 97);
            let h = hash_key(&key);
            let (v, new) = if step % 2 == 0 {
                m.get_or_insert(h, &key)
            } else {
                let hint = m.prefetch(h);
                m.get_or_insert_hinted(h, &key, hint)
            };
            *v += 1;
            let pos = reference.iter().position(|k| *k == key);
            assert_eq!(new, pos.is_none(), "step {step}");
            if let Some(p) = pos {
                reference.remove(p);
            }
            reference.push(key);
            if reference.len() > 40 {
                let (k, _) = m.pop_lru().expect("a key to evict");
                assert_eq!(k, reference.remove(0), "step {step}");
            }
            assert_eq!(m.len(), reference.len());
        }
        assert_eq!(keys(&m), reference);
        assert!(m.order.len() <= 2 * m.len() + 65);
        let n = m.remove_where(|k| k.ends_with('1'));
        reference.retain(|k| !k.ends_with('1'));
        assert_eq!(n, 40 - reference.len());
        assert_eq!(keys(&m), reference);
        let mut mru = Vec::new();
        m.for_each_mru_first(|k, _| mru.push(k.to_string()));
        mru.reverse();
        assert_eq!(mru, reference);
    }

    #[test]
    fn a_hint_of_another_key_with_the_same_hash_is_checked() {
        let mut m: KeyMap<u32> = KeyMap::default();
        let h = 0x1234_5678_9abc_def0;
        *m.get_or_insert(h, "a").0 = 1;
        let hint = m.prefetch(h);
        let (v, new) = m.get_or_insert_hinted(h, "b", hint);
        assert!(new);
        *v = 2;
        let hint = m.prefetch(h);
        assert_eq!(m.get_or_insert_hinted(h, "a", hint), (&mut 1, false));
        let hint = m.prefetch(h);
        assert_eq!(m.get_or_insert_hinted(h, "b", hint), (&mut 2, false));
        let hint = m.prefetch(h ^ 1);
        assert_eq!(m.get_or_insert_hinted(h ^ 1, "c", hint), (&mut 0, true));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn push_restores_order_and_replaces() {
        let mut m: KeyMap<u32> = KeyMap::default();
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            m.push(k, v);
        }
        m.push("a", 10);
        assert_eq!(keys(&m), ["b", "c", "a"]);
        let (v, new) = m.get_or_insert(hash_key("a"), "a");
        assert_eq!((*v, new), (10, false));
        assert_eq!(m.pop_lru(), Some(("b".into(), 2)));
        // Long keys live on the heap and compare the same way.
        let long = "x".repeat(100);
        m.push(&long, 7);
        assert_eq!(m.get_or_insert(hash_key(&long), &long), (&mut 7, false));
        m.clear();
        assert!(m.is_empty() && m.pop_lru().is_none());
    }

    #[derive(Default, Debug)]
    struct Buf(Vec<u8>);

    impl Recycle for Buf {
        fn recycle(&mut self) {
            self.0.clear();
        }
    }

    #[test]
    fn an_evicted_keys_memory_serves_the_next_new_key_emptied() {
        let mut m: KeyMap<Buf> = KeyMap::default();
        m.get_or_insert(hash_key("a"), "a")
            .0
             .0
            .extend_from_slice(&[7; 100]);
        m.get_or_insert(hash_key("b"), "b");
        assert!(m.evict_lru());
        assert_eq!(m.len(), 1);
        let (v, new) = m.get_or_insert(hash_key("c"), "c");
        assert!(new);
        assert!(v.0.is_empty(), "a new key starts empty");
        assert!(v.0.capacity() >= 100, "and keeps the evicted key's memory");
        // The evicted key is gone, the others stay, in LRU order.
        let lru: Vec<&str> = m.iter_lru_first().map(|(k, _)| k).collect();
        assert_eq!(lru, ["b", "c"]);
        assert!(m.get_or_insert(hash_key("a"), "a").1);
    }
}
