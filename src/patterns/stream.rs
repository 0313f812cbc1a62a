//! Miners per tenant and source, as the collector runs them on every line:
//! what part of a line is mined, the bounds, purge, and the state saved
//! across restarts.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::miner::{id_hex, Config, Miner, MinerState};
use super::templates::PatternTemplates;
use crate::parse::Event;

/// The part of a line that names its statement: the message of syslog and
/// JSON lines, the method and path shape of access-log lines (so
/// `/api/v1/items/123` and `/api/v1/items/456` are one pattern; the query
/// string is left out), the whole line otherwise. `scratch` holds the path
/// shape.
pub fn message<'a>(event: Option<&'a Event<'_>>, raw: &'a str, scratch: &'a mut String) -> &'a str {
    let Some(e) = event else { return raw };
    if let Some(path) = e.path.as_deref() {
        scratch.clear();
        if let Some(method) = e.method.as_deref() {
            scratch.push_str(method);
        }
        let path = path.split(['?', '#']).next().unwrap_or_default();
        // One token per segment: each is masked on its own.
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            scratch.push_str(" /");
            scratch.push_str(segment);
        }
        if path.ends_with('/') || path.is_empty() {
            scratch.push_str(" /");
        }
        return scratch;
    }
    e.message.as_deref().unwrap_or(raw)
}

/// Bounds of the collector's pattern state.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Miners kept, over every tenant and source; beyond, the least
    /// recently used one is dropped.
    pub max_streams: usize,
    /// The miner of each stream.
    pub miner: Config,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_streams: 10_000,
            miner: Config {
                max_patterns: 2_000,
                max_shapes: 20_000,
                ..Config::default()
            },
        }
    }
}

struct Stream {
    miner: Miner,
    last_used: u64,
}

/// Every tenant's and source's miner.
pub struct Streams {
    limits: StreamLimits,
    tenants: HashMap<String, HashMap<String, Stream>>,
    streams: usize,
    tick: u64,
    scratch: String,
    /// Streams dropped by `max_streams`.
    dropped_streams: u64,
    /// Patterns evicted from miners since dropped (their counters went
    /// with them).
    evicted_before: u64,
    /// Merges since [`Streams::take_merges`].
    merges: Vec<Merge>,
    /// Where new and changed templates are published, when set.
    templates: Option<Arc<PatternTemplates>>,
}

/// Pattern `id` of `tenant` absorbed others: lines indexed under `aliases`
/// are its lines now. Ids as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub tenant: String,
    pub id: String,
    pub aliases: Vec<String>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams::new(StreamLimits::default())
    }
}

/// What [`Streams::pattern`] names for a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternId(pub u64);

impl PatternId {
    /// The id as printed and indexed, without allocating.
    pub fn hex(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        // The 48 bits printed are the low six bytes of `id >> 16`.
        let bytes = (self.0 >> 16).to_be_bytes();
        if hex::encode_to_slice(&bytes[2..], &mut out).is_err() {
            unreachable!("six bytes are twelve hex digits");
        }
        out
    }
}

impl std::fmt::Display for PatternId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:012x}", self.0 >> 16)
    }
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Streams {
        Streams {
            limits,
            tenants: HashMap::new(),
            streams: 0,
            tick: 0,
            scratch: String::with_capacity(256),
            dropped_streams: 0,
            evicted_before: 0,
            merges: Vec::new(),
            templates: None,
        }
    }

    /// Publishes every live template to `templates` now, and new and
    /// changed ones from now on.
    pub fn publish_templates(&mut self, templates: Arc<PatternTemplates>) {
        for (tenant, sources) in &self.tenants {
            for stream in sources.values() {
                for c in stream.miner.patterns() {
                    templates.set(tenant, c.id, || c.template());
                }
            }
        }
        self.templates = Some(templates);
    }

    /// Mines one line of `tenant`'s `source`; returns its pattern's id.
    pub fn pattern(
        &mut self,
        tenant: &str,
        source: &str,
        event: Option<&Event<'_>>,
        raw: &str,
    ) -> PatternId {
        self.tick += 1;
        let tick = self.tick;
        if !self
            .tenants
            .get(tenant)
            .is_some_and(|t| t.contains_key(source))
        {
            self.open(tenant, source);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let id = match self.tenants.get_mut(tenant).and_then(|t| t.get_mut(source)) {
            Some(stream) => {
                stream.last_used = tick;
                let msg = message(event, raw, &mut scratch);
                let c = stream.miner.add(msg.as_bytes());
                let cluster = stream.miner.cluster(c);
                let id = cluster.id;
                if let (Some(t), 1) = (&self.templates, cluster.count) {
                    t.set(tenant, cluster.id, || cluster.template());
                }
                if stream.miner.has_merged() {
                    for (id, aliases) in stream.miner.take_merged() {
                        if let (Some(t), Some(c)) = (&self.templates, stream.miner.live_pattern(id))
                        {
                            t.set(tenant, c.id, || c.template());
                        }
                        self.merges.push(Merge {
                            tenant: tenant.to_string(),
                            id: id_hex(id),
                            aliases: aliases.into_iter().map(id_hex).collect(),
                        });
                    }
                }
                id
            }
            // `open` just made it; unreachable, but no line goes unnamed.
            None => 0,
        };
        self.scratch = scratch;
        PatternId(id)
    }

    fn open(&mut self, tenant: &str, source: &str) {
        if self.streams >= self.limits.max_streams {
            self.drop_coldest();
        }
        self.tenants.entry_ref(tenant).or_default().insert(
            source.to_string(),
            Stream {
                miner: Miner::new(self.limits.miner.clone()),
                last_used: self.tick,
            },
        );
        self.streams += 1;
    }

    fn drop_coldest(&mut self) {
        let coldest = self
            .tenants
            .iter()
            .flat_map(|(t, s)| s.iter().map(move |(src, st)| (st.last_used, t, src)))
            .min()
            .map(|(_, t, s)| (t.clone(), s.clone()));
        if let Some((tenant, source)) = coldest {
            if let Some(sources) = self.tenants.get_mut(&tenant) {
                if let Some(stream) = sources.remove(&source) {
                    self.evicted_before += stream.miner.evicted() + stream.miner.len() as u64;
                }
                if sources.is_empty() {
                    self.tenants.remove(&tenant);
                }
            }
            self.streams -= 1;
            self.dropped_streams += 1;
        }
    }

    /// Whether `tenant` has a stream.
    pub fn holds_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// Drops `tenant`'s state (a purge); returns the patterns it held.
    pub fn forget_tenant(&mut self, tenant: &str) -> usize {
        if let Some(t) = &self.templates {
            t.forget_tenant(tenant);
        }
        let Some(sources) = self.tenants.remove(tenant) else {
            return 0;
        };
        self.streams -= sources.len();
        sources.values().map(|s| s.miner.len()).sum()
    }

    /// Patterns dropped by the bounds so far (evicted from a miner, or
    /// with a dropped stream).
    pub fn evicted(&self) -> u64 {
        self.evicted_before
            + self
                .tenants
                .values()
                .flat_map(|s| s.values())
                .map(|s| s.miner.evicted())
                .sum::<u64>()
    }

    /// Merges since the last call, oldest first.
    pub fn take_merges(&mut self) -> Vec<Merge> {
        std::mem::take(&mut self.merges)
    }

    /// Every live pattern with aliases, as merges (for a restart).
    pub fn all_aliases(&self) -> Vec<Merge> {
        let mut all = Vec::new();
        for (tenant, sources) in &self.tenants {
            for stream in sources.values() {
                for (id, aliases) in stream.miner.all_aliases() {
                    all.push(Merge {
                        tenant: tenant.clone(),
                        id: id_hex(id),
                        aliases: aliases.iter().copied().map(id_hex).collect(),
                    });
                }
            }
        }
        all
    }

    /// Streams dropped by `max_streams` so far.
    pub fn dropped_streams(&self) -> u64 {
        self.dropped_streams
    }

    /// Live patterns over every stream.
    pub fn patterns(&self) -> usize {
        self.tenants
            .values()
            .flat_map(|s| s.values())
            .map(|s| s.miner.len())
            .sum()
    }

    /// The state to save: every stream's live patterns.
    pub fn snapshot(&self) -> StreamsState {
        let mut streams: Vec<StreamState> = self
            .tenants
            .iter()
            .flat_map(|(tenant, sources)| {
                sources.iter().map(move |(source, s)| StreamState {
                    tenant: tenant.clone(),
                    source: source.clone(),
                    last_used: s.last_used,
                    miner: s.miner.state(),
                })
            })
            .collect();
        streams.sort_by(|a, b| (&a.tenant, &a.source).cmp(&(&b.tenant, &b.source)));
        StreamsState {
            version: STATE_VERSION,
            tick: self.tick,
            streams,
        }
    }

    /// Streams as saved by [`Streams::snapshot`], under `limits`.
    pub fn restore(limits: StreamLimits, state: StreamsState) -> Result<Streams, String> {
        if state.version != STATE_VERSION {
            return Err(format!(
                "pattern state version {} (this build reads {STATE_VERSION})",
                state.version
            ));
        }
        let mut streams = Streams::new(limits);
        streams.tick = state.tick;
        for s in state.streams {
            let miner = Miner::from_state(streams.limits.miner.clone(), s.miner)
                .map_err(|e| format!("{}/{}: {e}", s.tenant, s.source))?;
            if streams.streams >= streams.limits.max_streams {
                streams.drop_coldest();
            }
            streams.tenants.entry(s.tenant).or_default().insert(
                s.source,
                Stream {
                    miner,
                    last_used: s.last_used,
                },
            );
            streams.streams += 1;
        }
        Ok(streams)
    }
}

const STATE_VERSION: u32 = 1;

/// The saved form of [`Streams`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamsState {
    version: u32,
    tick: u64,
    streams: Vec<StreamState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamState {
    tenant: String,
    source: String,
    last_used: u64,
    miner: MinerState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_line, Format, ParseContext};

    const CTX: ParseContext = ParseContext {
        now_nanos: 1_730_000_000_000_000_000,
    };

    #[test]
    fn the_hex_id_is_the_printed_one() {
        for id in [0, 1 << 16, u64::MAX, 0x0123_4567_89ab_cdef, 0xffff] {
            let p = PatternId(id);
            assert_eq!(std::str::from_utf8(&p.hex()).unwrap(), p.to_string());
        }
    }

    #[test]
    fn access_lines_are_mined_by_path_shape_and_syslog_by_message() {
        let mut s = Streams::default();
        let line = |i: u32| {
            format!(
                "10.0.0.{i} - - [10/Oct/2024:13:55:36 +0000] \"GET /api/v1/items/{i}?page={i} HTTP/1.1\" 200 {i} \"-\" \"curl/8\""
            )
        };
        let mut ids = Vec::new();
        for i in 1..5 {
            let raw = line(i);
            let ev = parse_line(raw.as_bytes(), Format::Auto, &CTX).expect("parses");
            ids.push(s.pattern("t", "nginx", Some(&ev), &raw));
        }
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
        let raw = "10.0.0.1 - - [10/Oct/2024:13:55:36 +0000] \"POST /api/v1/login HTTP/1.1\" 200 5 \"-\" \"curl/8\"";
        let ev = parse_line(raw.as_bytes(), Format::Auto, &CTX).expect("parses");
        assert_ne!(s.pattern("t", "nginx", Some(&ev), raw), ids[0]);

        let mut scratch = String::new();
        let raw = "<34>1 2024-10-11T22:14:15.003Z host app 42 - - disk /dev/sda1 is 91% full";
        let ev = parse_line(raw.as_bytes(), Format::Auto, &CTX).expect("parses");
        assert_eq!(
            message(Some(&ev), raw, &mut scratch),
            "disk /dev/sda1 is 91% full"
        );
        assert_eq!(message(None, "as is", &mut scratch), "as is");
    }

    #[test]
    fn templates_are_published_when_new_and_after_a_merge_and_purged() {
        let templates = Arc::new(PatternTemplates::default());
        let mut s = Streams::default();
        let before = s.pattern("t", "app", None, "cache warmed in 3 ms");
        s.publish_templates(Arc::clone(&templates));
        let get = |id: PatternId| templates.get("t", &id.to_string());
        assert_eq!(get(before).as_deref(), Some("cache warmed in <*>"));
        // Six user names open the slot: the survivor's template changes.
        let mut id = before;
        for user in ["ann", "bo", "cy", "di", "ed", "flo"] {
            id = s.pattern(
                "t",
                "app",
                None,
                &format!("session opened for user {user} by sshd"),
            );
        }
        assert_eq!(
            get(id).as_deref(),
            Some("session opened for user <*> by sshd")
        );
        s.forget_tenant("t");
        assert_eq!(get(before), None);
    }

    #[test]
    fn streams_are_apart_bounded_purged_and_restored() {
        let mut s = Streams::new(StreamLimits {
            max_streams: 3,
            ..StreamLimits::default()
        });
        let a = s.pattern("t1", "app", None, "job 1 done in 5 ms");
        assert_eq!(a, s.pattern("t1", "app", None, "job 2 done in 7 ms"));
        // The same statement elsewhere is the same pattern id (the id is
        // the statement's), but counted in its own stream.
        assert_eq!(a, s.pattern("t2", "app", None, "job 3 done in 1 ms"));
        s.pattern("t1", "db", None, "checkpoint complete");
        assert_eq!(s.patterns(), 3);
        // A fourth stream drops the least recently used: t1/app.
        s.pattern("t3", "app", None, "hello there world");
        assert_eq!(s.dropped_streams(), 1);
        assert_eq!(s.patterns(), 3);

        let saved = serde_json::to_string(&s.snapshot()).expect("serializes");
        let state: StreamsState = serde_json::from_str(&saved).expect("parses");
        let mut back = Streams::restore(StreamLimits::default(), state).expect("restores");
        assert_eq!(back.patterns(), 3);
        assert_eq!(back.pattern("t2", "app", None, "job 9 done in 2 ms"), a);

        assert_eq!(back.forget_tenant("t2"), 1);
        assert_eq!(back.forget_tenant("t2"), 0);
        assert!(!serde_json::to_string(&back.snapshot())
            .expect("serializes")
            .contains("t2"));
    }
}
