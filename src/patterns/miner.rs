//! The template miner: one message in, the pattern it belongs to out.
//!
//! Three lookups, from cheapest to rarest:
//!
//! 1. The exact signature: the hash of the message's masked tokens. Almost
//!    every line of a steady stream is a signature seen before; this path
//!    tokenizes into a reused buffer and probes one hash table.
//! 2. For a new signature, its loose forms: the same tokens with the
//!    punctuation around variables ignored, and its *skeleton*, the loose
//!    tokens without the pure variables (so `3 bytes sent` and
//!    `3 bytes (1.2 KB) sent` are one pattern: variables may be missing or
//!    span several tokens). A skeleton needs `min_context` words to count.
//! 3. Slot families: the patterns of the same length that are equal except
//!    at one slot. A word slot becomes a variable when `family_values`
//!    different words were seen there (user names, host names), or when a
//!    pattern with a variable there already exists and the word is rare
//!    next to it (`device lo` beside `device eth0`).
//!
//! Why not Drain's similarity threshold: in real logs two statements often
//! differ by one word (`VM Started` / `VM Paused`, `session opened` /
//! `session closed`), and a threshold merges them; what tells a variable
//! from a constant word is that it varies, so a word slot is only opened
//! on evidence. Drain's parse tree (length, then leading tokens) becomes
//! hash tables keyed on the whole sequence with one slot blanked, which
//! finds the same neighbours without assuming the first tokens are
//! constants.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use smallvec::SmallVec;

use super::token::{tokenize, Token, TokenHasher, WILD};

/// One configuration for every log: the defaults are the product.
#[derive(Debug, Clone)]
pub struct Config {
    /// Words a skeleton or a slot family needs around the slot before it
    /// may merge patterns: short messages (`running`, `LOOKING`) are each
    /// their own statement.
    pub min_context: usize,
    /// Different words seen in one slot of a family that make it a
    /// variable.
    pub family_values: usize,
    /// A word pattern joins a variable one in its slot family when its
    /// count is at most `rare_factor * variable count + rare_factor`.
    pub rare_factor: u64,
    /// Live patterns kept; beyond, the quarter least recently seen are
    /// dropped (counted in [`Miner::evicted`]).
    pub max_patterns: usize,
    /// Message shapes remembered for the fast path; beyond, the memory of
    /// shapes starts over (a shape seen again finds its pattern through the
    /// slower lookups).
    pub max_shapes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_context: 3,
            family_values: 6,
            rare_factor: 4,
            max_patterns: 5_000,
            max_shapes: 100_000,
        }
    }
}

impl Config {
    /// No eviction: indexes returned by [`Miner::add`] stay valid for the
    /// miner's life (a bounded input, as `patterns mine --assign` reads).
    pub fn unbounded() -> Config {
        Config {
            max_patterns: usize::MAX,
            ..Config::default()
        }
    }
}

/// A pattern as the miner holds it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Stable id: the hash of the pattern's loose tokens (its template's
    /// shape), so a statement gets the same id in every miner that sees
    /// it, whatever order its lines came in. A slot opening into a
    /// variable changes the template, and so the id; the old one becomes
    /// an alias.
    pub id: u64,
    /// Loose token hashes; `WILD` for `<*>`.
    loose: Vec<u64>,
    /// The template: each token's display text, joined by single spaces
    /// (a token never holds one). One allocation per pattern, not one per
    /// token: a stream of new statements opens patterns all the time.
    template: Box<str>,
    /// Punctuation tokens: never opened into variables.
    fixed: Vec<bool>,
    /// Ids of the patterns merged into this one, oldest first (at most
    /// `MAX_ALIASES`): lines indexed under them belong here now.
    aliases: Vec<u64>,
    pub count: u64,
    /// The miner's message counter when a message last joined it.
    last_seen: u64,
    /// The cluster this one was merged into (`NONE`: it is live).
    parent: u32,
}

const NONE: u32 = u32::MAX;

impl Cluster {
    /// The template: tokens joined by single spaces, variables as `<*>`.
    pub fn template(&self) -> String {
        self.template.to_string()
    }

    /// The id as printed and indexed: 12 hex digits.
    pub fn id_hex(&self) -> String {
        id_hex(self.id)
    }

    /// Ids of the patterns merged into this one.
    pub fn aliases(&self) -> &[u64] {
        &self.aliases
    }
}

/// A pattern id as printed and indexed: 12 hex digits.
pub fn id_hex(id: u64) -> String {
    format!("{:012x}", id >> 16)
}

/// Aliases kept per pattern: a slot that opens late may have absorbed
/// dozens of early patterns, a pattern absorbing hundreds is a pattern
/// that keeps splitting, and its oldest lines are found by their own ids.
const MAX_ALIASES: usize = 64;

/// Identity hasher for keys that are already hashes.
#[derive(Default, Clone, Copy)]
struct PreHashed;
#[derive(Default)]
struct PreHasher(u64);
impl std::hash::Hasher for PreHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}
impl std::hash::BuildHasher for PreHashed {
    type Hasher = PreHasher;
    fn build_hasher(&self) -> PreHasher {
        PreHasher(0)
    }
}

type Map<V> = HashMap<u64, V, PreHashed>;

/// Multiplier of the position-weighted sum that keys slot families: the
/// key with slot `i` blanked is computed from the full sum in O(1).
const MUL: u64 = 0x2545_f491_4f6c_dd1d;
/// Stands for the blanked slot.
const BLANK: u64 = 0x5851_f42d_4c95_7f2d;

/// A pattern in a slot family: the pattern and its token in that slot.
#[derive(Debug, Clone, Copy)]
struct Member {
    cluster: u32,
    slot: u64,
    fixed: bool,
}

pub struct Miner {
    cfg: Config,
    hasher: TokenHasher,
    toks: Vec<Token>,
    /// Exact signature -> cluster (may be merged since: resolve).
    sigs: Map<u32>,
    /// Loose signature -> cluster.
    loose: Map<u32>,
    /// Skeleton -> cluster.
    skeletons: Map<u32>,
    /// Family key (length, slot, the rest) -> patterns in it.
    /// Most families of a stream of new statements hold one pattern: kept
    /// inline, no allocation.
    families: Map<SmallVec<[Member; 1]>>,
    clusters: Vec<Cluster>,
    /// Scratch: the loose hashes of the message being placed.
    scratch: Vec<u64>,
    /// Scratch: which of its tokens are punctuation, never opened.
    fixed: Vec<bool>,
    /// Messages mined.
    tick: u64,
    /// Live clusters.
    live: usize,
    /// Patterns dropped by the `max_patterns` cap.
    evicted: u64,
    /// Ids of patterns that absorbed others since [`Miner::take_merged`].
    merged: Vec<u64>,
    /// Clusters whose slots opened while placing the current message:
    /// renamed after their template (`rename_reshaped`) once it is final.
    reshaped: Vec<u32>,
}

impl Default for Miner {
    fn default() -> Self {
        Miner::new(Config::default())
    }
}

impl Miner {
    pub fn new(cfg: Config) -> Miner {
        Miner {
            cfg,
            hasher: TokenHasher::default(),
            toks: Vec::with_capacity(64),
            sigs: Map::with_hasher(PreHashed),
            loose: Map::with_hasher(PreHashed),
            skeletons: Map::with_hasher(PreHashed),
            families: Map::with_hasher(PreHashed),
            clusters: Vec::new(),
            scratch: Vec::with_capacity(64),
            fixed: Vec::with_capacity(64),
            tick: 0,
            live: 0,
            evicted: 0,
            merged: Vec::new(),
            reshaped: Vec::new(),
        }
    }

    /// Mines one message; returns the index of the cluster it joined. The
    /// index is valid until the next call when the miner evicts (see
    /// [`Config::max_patterns`]); without eviction, [`Miner::resolve`] gives
    /// where it is after later merges.
    pub fn add(&mut self, msg: &[u8]) -> u32 {
        self.tick += 1;
        tokenize(msg, &self.hasher, &mut self.toks);
        let sig = self.hasher.sequence(self.toks.iter().map(|t| t.hash));
        let c = match self.sigs.get_mut(&sig) {
            Some(c) => {
                let live = resolve_in(&self.clusters, *c);
                *c = live;
                live
            }
            None => {
                let c = self.place(msg);
                if self.sigs.len() >= self.cfg.max_shapes {
                    self.sigs.clear();
                }
                self.sigs.insert(sig, c);
                c
            }
        };
        let cluster = &mut self.clusters[c as usize];
        cluster.count += 1;
        cluster.last_seen = self.tick;
        if self.live > self.cfg.max_patterns {
            return self.evict(c);
        }
        c
    }

    /// The live cluster `c` ended in.
    pub fn resolve(&self, c: u32) -> u32 {
        resolve_in(&self.clusters, c)
    }

    /// Live patterns.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Patterns dropped by the cap so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Patterns that absorbed others since the last call, with all their
    /// aliases: `(id, aliases)`. Merges are rare; this is not the hot path.
    pub fn take_merged(&mut self) -> Vec<(u64, Vec<u64>)> {
        let ids = std::mem::take(&mut self.merged);
        ids.into_iter()
            .filter_map(|id| self.live_pattern(id).map(|c| (c.id, c.aliases.clone())))
            .collect()
    }

    /// The live pattern with id `id`.
    pub fn live_pattern(&self, id: u64) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.id == id && c.parent == NONE)
    }

    /// Whether [`Miner::take_merged`] has something.
    #[inline]
    pub fn has_merged(&self) -> bool {
        !self.merged.is_empty()
    }

    /// Every live pattern with aliases: `(id, aliases)`.
    pub fn all_aliases(&self) -> impl Iterator<Item = (u64, &[u64])> {
        self.clusters
            .iter()
            .filter(|c| c.parent == NONE && !c.aliases.is_empty())
            .map(|c| (c.id, c.aliases.as_slice()))
    }

    pub fn cluster(&self, c: u32) -> &Cluster {
        &self.clusters[c as usize]
    }

    /// Live clusters, most frequent first.
    pub fn patterns(&self) -> Vec<&Cluster> {
        let mut v: Vec<&Cluster> = self.clusters.iter().filter(|c| c.parent == NONE).collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
        v
    }

    /// The slow path: a message whose exact signature was never seen.
    fn place(&mut self, msg: &[u8]) -> u32 {
        let c = self.find_or_open(msg);
        if !self.reshaped.is_empty() {
            self.rename_reshaped();
        }
        c
    }

    /// Names every pattern whose slots opened after its new template, so
    /// two miners that opened the same slot of a statement, each after its
    /// own history (another first user name, another survivor), name it
    /// alike: a Kafka partition moving to another indexer, a rule's miner
    /// beside the index's. The old id stays an alias: lines indexed under
    /// it are the pattern's. A template whose id another live pattern
    /// holds already keeps its own (ids stay unique). Rare: once per slot
    /// opened.
    #[cold]
    fn rename_reshaped(&mut self) {
        let mut reshaped = std::mem::take(&mut self.reshaped);
        reshaped.sort_unstable();
        reshaped.dedup();
        for c in reshaped {
            let c = c as usize;
            if self.clusters[c].parent != NONE {
                continue; // merged into another since: that one is named
            }
            let id = self.hasher.sequence(self.clusters[c].loose.iter().copied());
            let old = self.clusters[c].id;
            if id == old
                || self
                    .clusters
                    .iter()
                    .any(|other| other.parent == NONE && other.id == id)
            {
                continue;
            }
            let cluster = &mut self.clusters[c];
            cluster.id = id;
            cluster.aliases.push(old);
            if cluster.aliases.len() > MAX_ALIASES {
                let extra = cluster.aliases.len() - MAX_ALIASES;
                cluster.aliases.drain(..extra);
            }
            self.merged.retain(|&m| m != old);
            self.note_merged(id);
        }
    }

    /// Records that live pattern `id` has new aliases.
    fn note_merged(&mut self, id: u64) {
        if !self.merged.contains(&id) {
            // Nobody reads them (`patterns mine`): do not let them pile up.
            if self.merged.len() >= 4096 {
                self.merged.clear();
            }
            self.merged.push(id);
        }
    }

    /// The live pattern of a new signature: found by its loose forms or
    /// its slot families, else opened.
    fn find_or_open(&mut self, msg: &[u8]) -> u32 {
        self.scratch.clear();
        self.scratch.extend(self.toks.iter().map(|t| t.loose));
        self.fixed.clear();
        self.fixed
            .extend(self.toks.iter().map(|t| t.is_punctuation(msg)));
        let loose = self.hasher.sequence(self.scratch.iter().copied());
        if let Some(&c) = self.loose.get(&loose) {
            return self.resolve(c);
        }
        let skeleton = self.skeleton_key(&self.scratch);
        if let Some(c) = skeleton.and_then(|k| self.skeletons.get(&k)) {
            let c = self.resolve(*c);
            self.remember_loose(loose, c);
            return c;
        }
        if let Some(c) = self.join_family() {
            self.remember_loose(loose, c);
            return c;
        }
        let c = self.clusters.len() as u32;
        let cluster = Cluster {
            id: loose,
            loose: self.scratch.clone(),
            template: {
                let mut template = String::with_capacity(msg.len() + 8);
                for (i, t) in self.toks.iter().enumerate() {
                    if i > 0 {
                        template.push(' ');
                    }
                    t.masked_into(msg, &mut template);
                }
                template.into_boxed_str()
            },
            fixed: self.fixed.clone(),
            aliases: Vec::new(),
            count: 0,
            last_seen: self.tick,
            parent: NONE,
        };
        self.clusters.push(cluster);
        self.live += 1;
        self.register(c);
        self.open_slots_for_variable(c);
        c
    }

    /// Maps a loose signature to cluster `c`. Beyond `max_shapes`, the
    /// shapes that joined patterns are forgotten but every live pattern's
    /// own shape is kept: without it, a short statement (no skeleton, no
    /// family) seen again would start a second pattern with the same id.
    fn remember_loose(&mut self, key: u64, c: u32) {
        if self.loose.len() >= self.cfg.max_shapes && self.loose.len() > 2 * self.live {
            self.loose.clear();
            for (i, cluster) in self.clusters.iter().enumerate() {
                if cluster.parent == NONE {
                    self.loose.insert(
                        self.hasher.sequence(cluster.loose.iter().copied()),
                        i as u32,
                    );
                }
            }
        }
        self.loose.insert(key, c);
    }

    /// The skeleton's key, when it has enough words to stand for a
    /// statement.
    fn skeleton_key(&self, loose: &[u64]) -> Option<u64> {
        let words = loose.iter().filter(|&&h| h != WILD).count();
        (words >= self.cfg.min_context).then(|| {
            self.hasher
                .sequence(loose.iter().copied().filter(|&h| h != WILD))
        })
    }

    /// Family keys of `loose`, one per slot, with the words outside it.
    fn family_keys(loose: &[u64]) -> impl Iterator<Item = (usize, u64)> + '_ {
        let n = loose.len() as u64;
        let mut weight = 1u64;
        let mut sum = n.wrapping_mul(BLANK);
        for &h in loose {
            weight = weight.wrapping_mul(MUL);
            sum = sum.wrapping_add(h.wrapping_mul(weight));
        }
        // Slot i's weight is MUL^(i+1), as in the sum: kept running.
        let mut weight = 1u64;
        loose.iter().enumerate().map(move |(i, &h)| {
            weight = weight.wrapping_mul(MUL);
            (
                i,
                sum.wrapping_sub(h.wrapping_mul(weight))
                    .wrapping_add(BLANK.wrapping_mul(weight)),
            )
        })
    }

    /// Words of `loose` outside slot `i`.
    fn context(loose: &[u64], i: usize) -> usize {
        loose.iter().filter(|&&h| h != WILD).count() - usize::from(loose[i] != WILD)
    }

    /// Indexes live cluster `c` under its loose signature, skeleton and
    /// slot families.
    fn register(&mut self, c: u32) {
        let key = self
            .hasher
            .sequence(self.clusters[c as usize].loose.iter().copied());
        // Before the sets are taken out: it may re-read every pattern's.
        self.remember_loose(key, c);
        // Taken out and put back, not cloned: this runs for every new
        // pattern.
        let loose = std::mem::take(&mut self.clusters[c as usize].loose);
        let fixed = std::mem::take(&mut self.clusters[c as usize].fixed);
        if let Some(k) = self.skeleton_key(&loose) {
            self.skeletons.entry(k).or_insert(c);
        }
        for (i, key) in Self::family_keys(&loose) {
            if Self::context(&loose, i) < self.cfg.min_context {
                continue;
            }
            self.families.entry(key).or_default().push(Member {
                cluster: c,
                slot: loose[i],
                fixed: fixed[i],
            });
        }
        let cluster = &mut self.clusters[c as usize];
        cluster.loose = loose;
        cluster.fixed = fixed;
    }

    /// A new signature with a word where a family has a variable, or the
    /// word that makes a slot's words many: the pattern it joins.
    fn join_family(&mut self) -> Option<u32> {
        let loose = std::mem::take(&mut self.scratch);
        let mut joined = None;
        for (i, key) in Self::family_keys(&loose) {
            if loose[i] == WILD || self.fixed[i] || Self::context(&loose, i) < self.cfg.min_context
            {
                continue;
            }
            let Some(members) = self.families.get(&key) else {
                continue;
            };
            // A variable in this slot: a word joins it (its count is zero,
            // rare by any measure).
            if let Some(m) = members
                .iter()
                .find(|m| m.slot == WILD && self.clusters[m.cluster as usize].parent == NONE)
            {
                joined = Some(m.cluster);
                break;
            }
            let mut words: Vec<u32> = Vec::new();
            let mut values: Vec<u64> = vec![loose[i]];
            for m in members.iter().filter(|m| !m.fixed) {
                let c = self.resolve(m.cluster);
                if !values.contains(&m.slot) {
                    values.push(m.slot);
                }
                if !words.contains(&c) {
                    words.push(c);
                }
            }
            if values.len() >= self.cfg.family_values {
                let keep = words[0];
                for &w in &words[1..] {
                    self.merge(w, keep);
                }
                self.open_slot(keep, i);
                joined = Some(keep);
                break;
            }
        }
        self.scratch = loose;
        joined
    }

    /// A new pattern `c` with pure variables: rare word patterns of its slot
    /// families are the same statement with a word in the variable's place.
    fn open_slots_for_variable(&mut self, c: u32) {
        let loose = self.clusters[c as usize].loose.clone();
        let var_count = self.clusters[c as usize].count.max(1);
        for (i, key) in Self::family_keys(&loose) {
            if loose[i] != WILD || Self::context(&loose, i) < self.cfg.min_context {
                continue;
            }
            let Some(members) = self.families.get(&key) else {
                continue;
            };
            let rare: Vec<u32> = members
                .iter()
                .filter(|m| m.slot != WILD && !m.fixed)
                .map(|m| self.resolve(m.cluster))
                .filter(|&w| {
                    w != c
                        && self.clusters[w as usize].count
                            <= self.cfg.rare_factor * var_count + self.cfg.rare_factor
                })
                .collect();
            for w in rare {
                if self.resolve(w) != c {
                    self.merge(self.resolve(w), c);
                }
            }
        }
    }

    /// Folds live cluster `from` into live cluster `into`: same-length
    /// templates generalize where they differ.
    fn merge(&mut self, from: u32, into: u32) {
        if from == into {
            return;
        }
        let (a, b) = (from as usize, into as usize);
        let (count, seen) = (self.clusters[a].count, self.clusters[a].last_seen);
        let mut moved = std::mem::take(&mut self.clusters[a].aliases);
        moved.push(self.clusters[a].id);
        self.clusters[a].parent = into;
        let survivor = &mut self.clusters[b];
        survivor.count += count;
        survivor.last_seen = survivor.last_seen.max(seen);
        survivor.aliases.extend(moved);
        if survivor.aliases.len() > MAX_ALIASES {
            let extra = survivor.aliases.len() - MAX_ALIASES;
            survivor.aliases.drain(..extra);
        }
        let survivor_id = survivor.id;
        self.note_merged(survivor_id);
        self.live -= 1;
        if self.clusters[a].loose.len() == self.clusters[b].loose.len() {
            let differing: Vec<usize> = (0..self.clusters[b].loose.len())
                .filter(|&i| self.clusters[a].loose[i] != self.clusters[b].loose[i])
                .collect();
            for i in differing {
                self.open_slot(into, i);
            }
        }
    }

    /// Makes slot `i` of live cluster `c` a variable, and indexes the
    /// generalized pattern.
    fn open_slot(&mut self, c: u32, i: usize) {
        let cl = &mut self.clusters[c as usize];
        if cl.loose[i] == WILD {
            return;
        }
        cl.loose[i] = WILD;
        cl.template = cl
            .template
            .split(' ')
            .enumerate()
            .map(|(j, text)| if j == i { "<*>" } else { text })
            .collect::<Vec<_>>()
            .join(" ")
            .into_boxed_str();
        self.reshaped.push(c);
        self.register(c);
    }
}

/// The saved form of a miner: its live patterns. The fast-path memory of
/// shapes is not saved; it fills again from the first lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerState {
    tick: u64,
    patterns: Vec<PatternState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PatternState {
    id: u64,
    count: u64,
    last_seen: u64,
    loose: Vec<u64>,
    texts: Vec<String>,
    fixed: Vec<bool>,
    #[serde(default)]
    aliases: Vec<u64>,
}

impl Miner {
    pub fn state(&self) -> MinerState {
        MinerState {
            tick: self.tick,
            patterns: self
                .clusters
                .iter()
                .filter(|c| c.parent == NONE)
                .map(|c| PatternState {
                    id: c.id,
                    count: c.count,
                    last_seen: c.last_seen,
                    loose: c.loose.clone(),
                    texts: c.template.split(' ').map(str::to_string).collect(),
                    fixed: c.fixed.clone(),
                    aliases: c.aliases.clone(),
                })
                .collect(),
        }
    }

    /// A miner holding `state`'s patterns.
    pub fn from_state(cfg: Config, state: MinerState) -> Result<Miner, String> {
        let mut m = Miner::new(cfg);
        m.tick = state.tick;
        for p in state.patterns {
            if p.texts.len() != p.loose.len()
                || p.fixed.len() != p.loose.len()
                || p.texts.iter().any(|t| t.is_empty() || t.contains(' '))
            {
                return Err(format!(
                    "pattern {:016x}: token lists differ in length, or a token is empty or holds a space",
                    p.id
                ));
            }
            m.clusters.push(Cluster {
                id: p.id,
                loose: p.loose,
                template: p.texts.join(" ").into_boxed_str(),
                fixed: p.fixed,
                aliases: p.aliases,
                count: p.count,
                last_seen: p.last_seen,
                parent: NONE,
            });
        }
        m.live = m.clusters.len();
        for c in 0..m.clusters.len() as u32 {
            m.register(c);
        }
        Ok(m)
    }

    /// Drops the quarter least recently seen live patterns (never `hot`, the
    /// one just joined) and forgets merged ones. Returns `hot`'s new index.
    /// Rare: once per `max_patterns / 4` new patterns. (A tenth made a
    /// stream of new statements evict 2.5 times as often, each eviction
    /// walking every map.)
    ///
    /// The indexes are renumbered in place rather than rebuilt from the
    /// survivors: a stream where nearly every line is a new statement (a
    /// scanner's random paths) stays at the cap and evicts all the time, and
    /// re-registering thousands of patterns, with the exact-shape memory
    /// wiped each time, was a fifth of the collector's CPU. Entries of merged
    /// patterns move to the pattern that absorbed them, as `resolve` would.
    fn evict(&mut self, hot: u32) -> u32 {
        let mut live: Vec<(u64, u32)> = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(i, c)| c.parent == NONE && *i as u32 != hot)
            .map(|(i, c)| (c.last_seen, i as u32))
            .collect();
        let drop = (self.cfg.max_patterns / 4).clamp(1, live.len());
        live.select_nth_unstable(drop - 1);
        let mut remap = vec![0u32; self.clusters.len()];
        for &(_, i) in &live[..drop] {
            remap[i as usize] = NONE;
        }
        self.evicted += drop as u64;
        let mut next = 0u32;
        for (i, c) in self.clusters.iter().enumerate() {
            if c.parent == NONE && remap[i] != NONE {
                remap[i] = next;
                next += 1;
            }
        }
        for i in 0..self.clusters.len() {
            if self.clusters[i].parent != NONE {
                remap[i] = remap[resolve_in(&self.clusters, i as u32) as usize];
            }
        }
        let mut index = 0;
        self.clusters.retain(|c| {
            let kept = c.parent == NONE && remap[index] != NONE;
            index += 1;
            kept
        });
        self.live = self.clusters.len();
        let renumber = |c: &mut u32| {
            *c = remap[*c as usize];
            *c != NONE
        };
        self.sigs.retain(|_, c| renumber(c));
        self.loose.retain(|_, c| renumber(c));
        self.skeletons.retain(|_, c| renumber(c));
        self.families.retain(|_, members| {
            members.retain_mut(|m| renumber(&mut m.cluster));
            !members.is_empty()
        });
        remap[hot as usize]
    }
}

fn resolve_in(clusters: &[Cluster], mut c: u32) -> u32 {
    while clusters[c as usize].parent != NONE {
        c = clusters[c as usize].parent;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(lines: &[&str]) -> Vec<u32> {
        let mut m = Miner::default();
        let raw: Vec<u32> = lines.iter().map(|l| m.add(l.as_bytes())).collect();
        raw.iter().map(|&c| m.resolve(c)).collect()
    }

    #[test]
    fn one_word_apart_stays_apart() {
        let g = groups(&[
            "session opened for user root",
            "session closed for user root",
            "VM Started (Lifecycle Event)",
            "VM Paused (Lifecycle Event)",
        ]);
        assert_ne!(g[0], g[1]);
        assert_ne!(g[2], g[3]);
    }

    #[test]
    fn many_words_in_one_slot_are_a_variable() {
        let users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
        let lines: Vec<String> = users
            .iter()
            .map(|u| format!("Invalid user {u} from 10.0.0.1"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let g = groups(&refs);
        assert!(g.iter().all(|&c| c == g[0]), "{g:?}");
    }

    #[test]
    fn optional_variables_and_units() {
        let g = groups(&[
            "host:80 close, 0 bytes sent, 0 bytes received, lifetime 00:01",
            "host:80 close, 1033 bytes (1.00 KB) sent, 46810 bytes (45.7 KB) received, lifetime <1 sec",
            "Block b1 stored (estimated size 5.2 KB, free 1 KB)",
            "Block b2 stored (estimated size 80 B, free 1 KB)",
        ]);
        assert_eq!(g[0], g[1]);
        assert_eq!(g[2], g[3]);
        assert_ne!(g[0], g[2]);
    }

    #[test]
    fn a_rare_word_joins_the_variable_beside_it() {
        let g = groups(&[
            "not allocating buffer for device eth0",
            "not allocating buffer for device lo",
            "running",
            "blocked",
        ]);
        assert_eq!(g[0], g[1]);
        assert_ne!(g[2], g[3], "single words are each their own statement");
    }

    #[test]
    fn the_cap_drops_the_coldest_patterns_and_counts_them() {
        let mut m = Miner::new(Config {
            max_patterns: 20,
            ..Config::default()
        });
        let hot = m.add(b"heartbeat from scheduler ok");
        let hot_id = m.cluster(hot).id;
        for i in 0..200 {
            // A new statement each time (no word in common with any
            // other), and the hot one in between.
            let w: String = [i / 26, i % 26]
                .iter()
                .map(|&d| char::from(b'a' + d as u8))
                .collect();
            let text = format!("{w}a {w}b {w}c {w}d");
            let c = m.add(text.as_bytes());
            assert!(m.len() <= 20 + 1);
            assert!(!m.cluster(m.resolve(c)).template().is_empty());
            let h = m.add(b"heartbeat from scheduler ok");
            assert_eq!(m.cluster(h).id, hot_id, "the hot pattern survives");
        }
        assert!(m.evicted() > 0);
        assert!(m.len() <= 21);
        let c = m.add(b"heartbeat from scheduler ok");
        assert_eq!(m.cluster(c).count, 202, "its count survives every eviction");
    }

    #[test]
    fn eviction_renumbers_without_changing_what_recurring_lines_are() {
        // Recurring statements whose user slot opens in the first rounds,
        // then bursts of one-off statements that keep the capped miner
        // evicting: every recurring line, through the exact shapes kept for
        // the patterns merged away, gets the id and template the unbounded
        // miner gives it.
        let mut capped = Miner::new(Config {
            max_patterns: 30,
            ..Config::default()
        });
        let mut unbounded = Miner::new(Config::unbounded());
        let users = ["ann", "bo", "cy", "di", "ed", "flo", "gus", "hal"];
        let mut one_off = 0u32;
        for round in 0..40 {
            for (k, verb) in ["opened", "closed", "renewed", "locked"].iter().enumerate() {
                let user = users[(round + k) % users.len()];
                let line = format!("session {verb} for user {user} by sshd");
                let (a, b) = (capped.add(line.as_bytes()), unbounded.add(line.as_bytes()));
                let (a, b) = (capped.resolve(a), unbounded.resolve(b));
                assert_eq!(capped.cluster(a).id, unbounded.cluster(b).id, "{line}");
                assert_eq!(
                    capped.cluster(a).template(),
                    unbounded.cluster(b).template()
                );
            }
            for _ in 0..if round < 8 { 0 } else { 12 } {
                one_off += 1;
                let w: String = [one_off / 676, one_off / 26 % 26, one_off % 26]
                    .iter()
                    .map(|&d| char::from(b'a' + d as u8))
                    .collect();
                capped.add(format!("{w}a {w}b {w}c {w}d").as_bytes());
            }
        }
        assert!(capped.evicted() > 300, "it evicted {}", capped.evicted());
    }

    #[test]
    fn a_merge_keeps_the_old_ids_as_aliases() {
        let mut m = Miner::default();
        let mut first = Vec::new();
        for u in ["ann", "bo", "cy", "di", "ed", "flo"] {
            let c = m.add(format!("Invalid user {u} from 10.0.0.1").as_bytes());
            first.push(m.cluster(c).id);
        }
        assert!(m.has_merged());
        let merged = m.take_merged();
        assert_eq!(merged.len(), 1);
        let (id, aliases) = &merged[0];
        assert!(
            !first[..5].contains(id),
            "the opened pattern is named after its new template"
        );
        assert_eq!(first[5], *id, "the sixth line joined it");
        let mut expected: Vec<u64> = first[..5].to_vec();
        expected.sort();
        let mut got = aliases.clone();
        got.sort();
        assert_eq!(got, expected, "the five word patterns became aliases");
        assert!(!m.has_merged());
        let back = Miner::from_state(Config::default(), m.state()).expect("restores");
        assert_eq!(back.all_aliases().count(), 1);
    }

    /// Two indexers learning one source's statement each from their own
    /// lines (a Kafka partition that moved) name it alike, and every
    /// early id either of them indexed is an alias.
    #[test]
    fn an_opened_slot_gets_the_same_id_whatever_came_first() {
        let users = ["ann", "bo", "cy", "di", "ed", "flo", "gus", "hal"];
        let line = |u: &str| format!("session opened for user {u} by sshd");
        let mine = |order: &[&str]| {
            let mut m = Miner::default();
            let mut ids = Vec::new();
            let mut last = 0;
            for u in order {
                last = m.add(line(u).as_bytes());
                ids.push(m.cluster(last).id);
            }
            m.take_merged();
            let c = m.cluster(last);
            (c.id, c.template(), c.aliases().to_vec(), ids)
        };
        let (a, a_template, a_aliases, a_ids) = mine(&users);
        let mut reversed = users;
        reversed.reverse();
        let (b, b_template, b_aliases, b_ids) = mine(&reversed[..7]);
        assert_eq!(a_template, "session opened for user <*> by sshd");
        assert_eq!(a_template, b_template);
        assert_eq!(a, b, "one template, one id");
        // Every id a miner named a line with before the slot opened is an
        // alias of the opened pattern, and a word pattern both saw early
        // has one id in both.
        for (aliases, ids) in [(&a_aliases, &a_ids), (&b_aliases, &b_ids)] {
            for id in ids.iter().filter(|&&id| id != a) {
                assert!(aliases.contains(id), "{id:x} not an alias");
            }
        }
        let shared: Vec<&u64> = a_aliases
            .iter()
            .filter(|id| b_aliases.contains(id))
            .collect();
        assert!(
            !shared.is_empty(),
            "the users both saw early have one id each"
        );
    }

    #[test]
    fn forgetting_shapes_never_splits_a_pattern() {
        let mut m = Miner::new(Config {
            max_shapes: 8,
            ..Config::default()
        });
        let ok = m.add(b"ok");
        let ok_id = m.cluster(ok).id;
        for i in 0..100u32 {
            // Short statements: no skeleton, no family to find them by.
            let w: String = [i / 26, i % 26]
                .iter()
                .map(|&d| char::from(b'a' + d as u8))
                .collect();
            m.add(w.as_bytes());
            m.add(format!("{w} {w}").as_bytes());
        }
        let again = m.add(b"ok");
        assert_eq!(m.cluster(again).id, ok_id);
        assert_eq!(
            m.cluster(again).count,
            2,
            "one pattern, not two with one id"
        );
        let mut ids: Vec<u64> = m.patterns().iter().map(|p| p.id).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "ids are unique");
    }
}
