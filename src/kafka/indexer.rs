//! `nightowl indexer --kafka BROKERS`: a member of the indexers' consumer
//! group. Each assigned partition is a shard with its own [`Indexer`]
//! (its own tantivy indexes, `<day>.p<N>/`, its own checkpoint and rule
//! state), so the WAL's checkpoint contract holds per partition with the
//! Kafka offset as the position:
//!
//! - a shard's tantivy commits carry the next offset they cover; after
//!   them the same offset is committed to the group (auto-commit is off);
//! - on assignment a shard starts at the group's committed offset, after
//!   deleting what its own index holds from there on (it committed its
//!   index but not the group's offset: a crash between the two, or a
//!   commit refused); with no group offset, at its own checkpoint;
//! - before it reads, it records its start in the ownership topic
//!   (`ownership.rs`); every other indexer that holds lines of that
//!   partition from that offset on deletes them (`index::rollback`): at
//!   its start before it serves, or as soon as it reads the message;
//! - on revocation (a rebalance) a shard commits both before the partition
//!   is given away, so the next owner starts where it stopped.
//!
//! The consumer runs on one thread, with the shards behind a mutex that the
//! rebalance callback (run by librdkafka inside `poll`) also takes: never
//! held across a `poll`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::alert::service::FiringSink;
use crate::detect::live::FiringOut;
use crate::detect::reload::RuleSet;
use crate::detect::reload::{self, RulesStatus};
use crate::detect::snapshot::DecodeError;
use crate::detect::{Engine, EngineOptions, RecentFirings, Routing, RuleSpec};
use crate::index::rollback;
use crate::index::writer::{
    forget_patterns, save_patterns_if_due, Checkpoint, Downstream, LiveRules,
};
use crate::index::{Catalog, Indexer};
use crate::ingest::{self, Durable, IngestRecord};
use crate::kafka::ownership::OwnershipLog;
use crate::kafka::rekey::{self, RekeyProducer};
use crate::kafka::state::{self, Mark, StateStore};
use crate::parse::{parse_text, Event, Format, ParseContext};
use crate::patterns::SharedPatterns;
use crate::telemetry::Metrics;
use crate::wal::cipher::WalCipher;

/// One partition's engine for `specs` (already checked by the loader).
fn compile(specs: &[RuleSpec], options: EngineOptions) -> Result<Engine> {
    Engine::with_options(specs, options)
        .map_err(|(id, e)| anyhow::anyhow!("compiling rule {id:?}: {}", e.message))
}

/// Everything a shard is built from.
pub(crate) struct ShardFactory {
    pub(crate) catalog: Arc<Catalog>,
    /// The node's data dir: shards keep their checkpoints under `kafka/`.
    pub(crate) data_dir: PathBuf,
    pub(crate) index: crate::index::IndexConfig,
    pub(crate) kafka: super::KafkaConfig,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) recent: Arc<RecentFirings>,
    pub(crate) firings: Option<FiringSink>,
    /// The rules every shard runs: the last set loaded (at start or by a
    /// hot reload), so a partition assigned later runs the same rules as
    /// the others whatever the files say by then.
    pub(crate) rules: Option<(Arc<Vec<RuleSpec>>, EngineOptions)>,
    pub(crate) rules_status: Arc<RulesStatus>,
    /// Partitions of the rekey topic (0: rules keyed across sources are
    /// evaluated per partition, `[kafka] rekey = false`).
    pub(crate) rekey_partitions: u32,
    /// The node's pattern store, shared by every shard: a partition that
    /// moves away leaves its tenants' patterns here, where a purge finds
    /// them, not in a file of its own.
    pub(crate) patterns: Option<SharedPatterns>,
}

struct Shard {
    indexer: Indexer,
    /// The offset last committed to the group for this partition.
    group_committed: i64,
    /// Its rule state in the lines-state changelog (`state.rs`), when its
    /// rules keep any ([`Shard::rules_keep_state`]).
    mark: Mark,
}

impl Shard {
    /// Whether the shard's rules keep state of their own to save: some run
    /// in the shard (keyed by `source`, kept local, or everything with
    /// `rekey = false`). A shard whose rules all go to owners saves
    /// nothing and commits its group offset as its index.
    fn rules_keep_state(&self) -> bool {
        self.indexer
            .rules()
            .is_some_and(|r| r.engine.local_rules() > 0)
    }
}

/// A rekey partition: the keys of rules keyed across sources that hash to
/// it, with their state, fed by every line shard (`rekey.rs`).
struct Owner {
    rules: Option<LiveRules>,
    /// Per lines-topic partition, the last record whose lines were
    /// evaluated here: a shard replaying after a crash sends them again.
    seen: HashMap<i32, i64>,
    /// The next rekey offset to read.
    next: i64,
    group_committed: i64,
    /// Its state in the changelog (`state.rs`).
    mark: Mark,
}

pub(crate) struct Shards {
    factory: ShardFactory,
    topic: String,
    open: BTreeMap<i32, Shard>,
    rekey_topic: String,
    rekey: Option<RekeyProducer>,
    /// The owners' changelog.
    state: Option<StateStore>,
    /// The line shards' changelog (with rules).
    lines_state: Option<StateStore>,
    /// How often owners and shards write to their changelogs while lines
    /// flow (`[kafka] state_interval_ms`).
    state_every: Duration,
    owners: BTreeMap<i32, Owner>,
    /// Owners revoked in a rebalance, kept in case the partition comes
    /// back to this indexer with nothing read in between (a rebalance
    /// revokes every partition before it assigns them again).
    parked: BTreeMap<i32, Owner>,
    /// A failure inside a rebalance callback, which cannot return one.
    failed: Option<anyhow::Error>,
    /// Unix nanos of the last look for partitions past their retention.
    retention_checked: i64,
    /// Who indexes which partition from where (`ownership.rs`).
    ownership: OwnershipLog,
    /// Test-only fault in the group commit (`NIGHTOWL_FAULT_GROUP_COMMIT`).
    fault: Option<Fault>,
    /// Commit rounds that committed lines, for [`Fault::ExitAt`].
    rounds: u32,
    /// Whether [`Shards::follow_ownership`] runs (`NIGHTOWL_FAULT_FOLLOW`).
    follow: bool,
}

/// A fault injected between the tantivy commit and the group commit, for
/// the tests of the window between them (docs/kafka.md, "Tests"):
/// `NIGHTOWL_FAULT_GROUP_COMMIT=exit:N` exits at once, as a `kill -9`
/// would, after the index commit of the N-th round that committed lines;
/// `skip` never commits the group's offsets, as a member whose commits the
/// group refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    ExitAt(u32),
    Skip,
}

impl Fault {
    pub(crate) fn from_env() -> Result<Option<Fault>> {
        let Some(value) = std::env::var_os("NIGHTOWL_FAULT_GROUP_COMMIT") else {
            return Ok(None);
        };
        let value = value.to_string_lossy();
        let fault = match value.split_once(':') {
            None if value == "skip" => Fault::Skip,
            Some(("exit", n)) => Fault::ExitAt(n.parse().with_context(|| {
                format!("NIGHTOWL_FAULT_GROUP_COMMIT={value}: exit:N with N a round number")
            })?),
            _ => anyhow::bail!("NIGHTOWL_FAULT_GROUP_COMMIT={value}: `skip` or `exit:N`"),
        };
        tracing::warn!(?fault, "fault injection in the group commit (tests only)");
        Ok(Some(fault))
    }
}

/// Test-only: `NIGHTOWL_FAULT_START_GATE=FILE` holds an indexer's start
/// after it read the ownership topic and before it rolls back
/// ([`Shards::repair_at_start`]), until FILE exists; it creates
/// `FILE.reached` when it gets there. For the test of a next owner that
/// records its start and commits in that moment (docs/kafka.md, "Tests").
pub(crate) fn hold_at_start_gate() {
    let Some(gate) = std::env::var_os("NIGHTOWL_FAULT_START_GATE").map(PathBuf::from) else {
        return;
    };
    tracing::warn!(gate = %gate.display(), "start held until the gate file exists (tests only)");
    let mut reached = gate.clone().into_os_string();
    reached.push(".reached");
    if let Err(e) = std::fs::write(&reached, b"") {
        tracing::warn!(error = %e, "cannot mark the start gate reached");
    }
    while !gate.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Test-only: `NIGHTOWL_FAULT_FOLLOW=off` stops an indexer from following
/// the ownership topic while it runs, so that what it serves after its
/// start is what its start left (docs/kafka.md, "Tests").
fn follows_ownership() -> bool {
    let off = std::env::var_os("NIGHTOWL_FAULT_FOLLOW").is_some_and(|v| v == "off");
    if off {
        tracing::warn!("not following the ownership topic (tests only)");
    }
    !off
}

impl ShardFactory {
    fn dir(&self, partition: i32) -> PathBuf {
        self.data_dir.join("kafka").join(format!("p{partition}"))
    }

    /// Opens partition `partition`'s shard at the larger of its own
    /// checkpoint and `group_committed`, its rules from their state in the
    /// changelog (`saved`) if that state holds every record below the
    /// start.
    fn open(
        &self,
        partition: i32,
        group_committed: Option<i64>,
        saved: Option<&[u8]>,
    ) -> Result<Shard> {
        let dir = self.dir(partition);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let own = Checkpoint::load(&dir)?.unwrap_or_default();
        let group = group_committed.unwrap_or(0).max(0) as u64;
        // The caller rolled the index back to the group's offset when it
        // was ahead (`Shards::take`): the start is the group's, or with
        // none, this index's own.
        let start = Checkpoint {
            wal_position: own.wal_position.max(group),
            // Offsets from an older turn of this partition are at or below
            // the true ones: dedup stays correct, only less complete.
            sources: own.sources,
            source_positions: own.source_positions,
        };
        let mut rules = self.rules_for(Routing::Forward {
            partitions: self.rekey_partitions,
        })?;
        let from = start.wal_position as i64;
        let mut mark = Mark::new(from);
        if let Some(bytes) = saved {
            self.restore_shard(partition, from, bytes, rules.as_mut(), &mut mark);
        }
        let alerts = self
            .firings
            .clone()
            .map(|sink| Box::new(sink) as Box<dyn crate::detect::live::FiringOut>);
        let indexer = Indexer::new(
            Arc::clone(&self.catalog),
            self.index.clone(),
            dir,
            start,
            Arc::new(AtomicU64::new(0)),
            Arc::clone(&self.metrics),
            Downstream {
                rules,
                alerts,
                patterns: self.patterns.clone(),
                shard: super::shard_of(partition),
            },
        );
        tracing::info!(
            partition,
            start = indexer.consumed(),
            own = own.wal_position,
            group,
            "partition assigned"
        );
        Ok(Shard {
            // The group's own value, not the start: when the index is ahead
            // (a crash between the two commits), the next round brings the
            // group up to it even if no new message ever arrives, so a
            // later owner does not start below what this index holds.
            group_committed: group as i64,
            indexer,
            mark,
        })
    }

    /// Restores a line shard starting at `start` from its saved state, if
    /// that state covers exactly the records below `start`, or more:
    ///
    /// - saved at `start`: restored as is;
    /// - saved ahead of `start` (the state was written, then the index or
    ///   group commit did not follow: a crash or a refused commit): the
    ///   state already holds `start..next`, which the shard reads again
    ///   for its index; restored, and the rules skip those records;
    /// - saved behind `start` (no group offset and an index of its own
    ///   further on, or earlier owners whose rules kept no state): the
    ///   records in between are in no state; the windows start empty
    ///   rather than miss them.
    fn restore_shard(
        &self,
        partition: i32,
        start: i64,
        bytes: &[u8],
        rules: Option<&mut LiveRules>,
        mark: &mut Mark,
    ) {
        let Some(rules) = rules else {
            return;
        };
        let unreadable = |e: DecodeError| {
            tracing::warn!(partition, error = %e, "the saved rule state of the partition is unreadable: its rules start empty");
        };
        let saved = match state::decode_rules(bytes) {
            Ok(saved) if saved.next < start => {
                tracing::warn!(
                    partition,
                    start,
                    saved = saved.next,
                    "the saved rule state of the partition is behind its start: its rules start empty"
                );
                return;
            }
            Ok(saved) => saved,
            Err(e) => return unreadable(e),
        };
        if let Err(e) = saved.restore_into(Some(&mut *rules)) {
            return unreadable(e);
        }
        rules.evaluate_from = saved.next as u64;
        mark.saved = saved.next;
        self.metrics.kafka_line_state_restored.inc();
        tracing::info!(
            partition,
            start,
            state = saved.next,
            "partition rule state restored from the changelog"
        );
    }
}

impl ShardFactory {
    fn live_rules(&self, engine: Engine) -> LiveRules {
        LiveRules {
            engine,
            recent: Arc::clone(&self.recent),
            scratch: Vec::new(),
            live: None,
            routed: Default::default(),
            evaluate_from: 0,
        }
    }

    /// The rules of a line shard or a rekey owner under `routing`; none
    /// without rules.
    fn rules_for(&self, routing: Routing) -> Result<Option<LiveRules>> {
        let Some((specs, options)) = &self.rules else {
            return Ok(None);
        };
        let mut engine = compile(specs, *options)?;
        engine.keep_local(&self.kafka.rekey_except);
        engine.set_routing(routing);
        Ok(Some(self.live_rules(engine)))
    }

    /// Opens rekey partition `partition`'s owner: from its state in the
    /// changelog (`saved`) when there is one, where that state stopped;
    /// else empty, at `group_committed`.
    fn open_owner(
        &self,
        partition: i32,
        group_committed: Option<i64>,
        saved: Option<&[u8]>,
    ) -> Result<Owner> {
        let mut rules = self.rules_for(Routing::Own {
            partitions: self.rekey_partitions,
            mine: partition.unsigned_abs(),
        })?;
        let group = group_committed.unwrap_or(0).max(0);
        let mut owner = Owner {
            rules: None,
            seen: HashMap::new(),
            next: group,
            group_committed: group,
            mark: Mark::new(group),
        };
        let restored = saved.map(|bytes| {
            let saved = state::decode_rules(bytes)?;
            saved.restore_into(rules.as_mut())?;
            Ok::<_, DecodeError>(saved)
        });
        match restored {
            Some(Ok(saved)) => {
                owner.next = saved.next;
                owner.mark.saved = saved.next;
                owner.seen = saved.seen;
                self.metrics.kafka_rule_state_restored.inc();
                tracing::info!(
                    partition,
                    start = owner.next,
                    group,
                    "rekey partition assigned, rule state restored"
                );
            }
            Some(Err(e)) => {
                // The windows start empty rather than misread.
                tracing::warn!(partition, error = %e, "rekey partition assigned; its saved rule state is unreadable");
            }
            None => tracing::info!(partition, start = group, "rekey partition assigned"),
        }
        owner.rules = rules;
        Ok(owner)
    }
}

impl Shards {
    /// No partition assigned yet.
    pub(crate) fn new(
        factory: ShardFactory,
        topic: String,
        rekey_topic: String,
        ownership: OwnershipLog,
        fault: Option<Fault>,
    ) -> Shards {
        let state_every = Duration::from_millis(factory.kafka.state_interval_ms);
        Shards {
            ownership,
            fault,
            follow: follows_ownership(),
            rounds: 0,
            factory,
            topic,
            rekey_topic,
            rekey: None,
            state: None,
            lines_state: None,
            state_every,
            owners: BTreeMap::new(),
            parked: BTreeMap::new(),
            open: BTreeMap::new(),
            failed: None,
            retention_checked: i64::MIN,
        }
    }

    /// Deletes what lines partition `partition`'s shard holds from offset
    /// `cut` on and moves its checkpoint back there: another indexer reads
    /// it from `cut` (`index::rollback`). The shard is not open here.
    fn roll_back(&self, partition: i32, cut: i64) -> Result<()> {
        let cut = cut.max(0) as u64;
        let shard = super::shard_of(partition);
        let done = rollback::rollback_shard(&self.factory.catalog, shard, cut)
            .with_context(|| format!("rolling partition {partition} back to offset {cut}"))?;
        let moved = Checkpoint::roll_back(&self.factory.dir(partition), cut)
            .with_context(|| format!("moving the checkpoint of partition {partition} back"))?;
        if !done.without_positions.is_empty() {
            tracing::warn!(
                partition,
                offset = cut,
                index_partitions = ?done.without_positions,
                "index partitions created before lines recorded their offset cannot be rolled back; lines there may be held by another indexer too"
            );
        }
        if done.partitions > 0 || moved {
            let metrics = &self.factory.metrics;
            metrics.kafka_rollbacks.inc();
            metrics.kafka_rollback_lines.add(done.lines);
            tracing::info!(
                partition,
                offset = cut,
                lines = done.lines,
                "partition rolled back: another indexer reads it from this offset"
            );
        }
        Ok(())
    }

    /// Lines partitions this indexer holds lines or a checkpoint of.
    fn local_partitions(&self) -> std::collections::BTreeSet<i32> {
        let mut local: std::collections::BTreeSet<i32> = self
            .factory
            .catalog
            .all()
            .iter()
            .filter(|p| p.shard > 0)
            .map(|p| p.shard as i32 - 1)
            .collect();
        let dir = self.factory.data_dir.join("kafka");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if let Some(p) = name
                .to_str()
                .and_then(|n| n.strip_prefix('p'))
                .and_then(|n| n.parse::<i32>().ok())
            {
                local.insert(p);
            }
        }
        local
    }

    /// Where this indexer's lines of `partition` must stop: where another
    /// indexer started after it (as the tail last read the ownership
    /// topic), or the group's offset `group`, where whoever reads it next
    /// starts. The lower.
    fn cut(&self, partition: i32, group: Option<i64>) -> Option<i64> {
        let superseded = self
            .ownership
            .latest(partition)
            .and_then(|o| o.cut_for(self.ownership.me()));
        lowest(superseded, group)
    }

    /// [`Shards::cut`] with the ownership topic read now, not as the tail
    /// last saw it. `group` must have been read before this call: a
    /// partition's group offset moves only after its new owner recorded
    /// its start, so an offset that already counts the new owner's first
    /// commit comes with that owner's record, and the record lowers the
    /// cut to its start. Read the other way round (a snapshot, then the
    /// offset), the cut could be the new owner's committed offset, and the
    /// interval it indexed again was served by both until the tail caught
    /// up.
    fn cut_now(&self, partition: i32, group: Option<i64>) -> Result<Option<i64>> {
        let ownership = self.ownership.load(partition)?;
        Ok(lowest(ownership.cut_for(self.ownership.me()), group))
    }

    /// Before the API serves: each partition this indexer holds lines of
    /// is rolled back to where it must stop ([`Shards::cut_now`]), so that it
    /// never serves lines another indexer indexed again, whether that
    /// happened while it was down or happens once it is back.
    pub(crate) fn repair_at_start(
        &mut self,
        consumer: &BaseConsumer<IndexerContext>,
    ) -> Result<()> {
        let local = self.local_partitions();
        if local.is_empty() {
            return Ok(());
        }
        // Without the group's offsets the cut would be the ownership
        // topic's alone, and a partition nobody took yet would keep lines
        // its next owner reads again: no start rather than that.
        let groups = self
            .group_offsets(consumer, local.iter().copied())
            .context("reading the group's offsets before serving (the brokers must answer)")?;
        for partition in local {
            if let Some(cut) = self.cut_now(partition, groups.get(&partition).copied())? {
                self.roll_back(partition, cut)?;
            }
        }
        Ok(())
    }

    /// The group's committed offsets of `partitions` that it has.
    fn group_offsets(
        &self,
        consumer: &BaseConsumer<IndexerContext>,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let _ = tpl.add_partition_offset(&self.topic, p, Offset::Invalid);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(30))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// Takes lines partition `partition`, whose group offset is `group`:
    /// rolls its own index back to where it must stop, opens its shard
    /// (at `group`, else at its own checkpoint) and records that start in
    /// the ownership topic before a line is read. Returns the start.
    fn take(&mut self, partition: i32, group: Option<i64>) -> Result<i64> {
        // Read now, not as the tail last saw it: the previous owner may
        // have written it a moment ago.
        let ownership = self.ownership.load(partition)?;
        if let Some(cut) = lowest(ownership.cut_for(self.ownership.me()), group) {
            self.roll_back(partition, cut)?;
        }
        // The state saved for the partition, read after the rollback, so
        // that it matches the start (`ShardFactory::restore_shard`).
        let saved = self
            .lines_state
            .as_ref()
            .and_then(|s| s.load_or_none(partition));
        let shard = self.factory.open(partition, group, saved.as_deref())?;
        let start = shard.indexer.consumed() as i64;
        let taken = ownership.taken_by(self.ownership.me(), start);
        self.ownership
            .record(partition, taken)
            .with_context(|| format!("recording the start of partition {partition}"))?;
        self.open.insert(partition, shard);
        Ok(start)
    }

    /// After revoking `partitions`, whose last group commit failed: each is
    /// rolled back to where it must stop, so the next owner's start is not
    /// below lines this indexer serves.
    fn settle(
        &mut self,
        consumer: &BaseConsumer<IndexerContext>,
        partitions: &[i32],
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let groups = self
            .group_offsets(consumer, partitions.iter().copied())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading the group's offsets; lines past them are kept until another indexer records its start");
                BTreeMap::new()
            });
        for &partition in partitions {
            if let Some(cut) = self.cut_now(partition, groups.get(&partition).copied())? {
                self.roll_back(partition, cut)?;
            }
        }
        Ok(())
    }

    /// Ownership messages that arrived: a partition this indexer does not
    /// hold open, taken by another at an offset below lines this indexer
    /// has, is rolled back now.
    fn follow_ownership(&mut self) -> Result<()> {
        if !self.follow {
            return Ok(());
        }
        for partition in self.ownership.poll() {
            if self.open.contains_key(&partition) {
                continue; // revoked at the next poll, and settled then
            }
            if let Some(cut) = self.cut(partition, None) {
                self.roll_back(partition, cut)?;
            }
        }
        Ok(())
    }

    /// Sends the lines of rules keyed across sources to their owners from
    /// now on (`[kafka] rekey`), over a rekey topic of `partitions`.
    pub(crate) fn rekey_to(&mut self, producer: RekeyProducer, state: StateStore) {
        self.factory.rekey_partitions = producer.partitions;
        self.rekey = Some(producer);
        self.state = Some(state);
    }

    /// Saves the line shards' rule state to `store` from now on, and
    /// restores it when a partition is assigned.
    pub(crate) fn keep_line_state(&mut self, store: StateStore) {
        self.lines_state = Some(store);
    }

    /// Writes the state of every owner that moved to the changelog: all of
    /// them with `force` (before a rebalance or a stop), else those whose
    /// last write is older than `state_every`.
    fn save_owners(&mut self, force: bool) {
        let Some(store) = &self.state else {
            return;
        };
        for (&partition, owner) in self.owners.iter_mut() {
            let Owner {
                rules,
                seen,
                next,
                mark,
                ..
            } = owner;
            mark.save_if_due(
                store,
                partition,
                *next,
                (force, self.state_every),
                &self.factory.metrics.kafka_rule_state_saved,
                || state::encode_rules(*next, seen, rules.as_ref()),
            );
        }
    }

    /// The same for the line shards whose rules keep state: each as of the
    /// records it read (or, re-reading records its restored state holds
    /// already, as of the end of those).
    fn save_shards(&mut self, force: bool) {
        let Some(store) = &self.lines_state else {
            return;
        };
        let none = HashMap::new();
        for (&partition, shard) in self.open.iter_mut() {
            if !shard.rules_keep_state() {
                continue;
            }
            let rules = shard.indexer.rules();
            let next = shard
                .indexer
                .consumed()
                .max(rules.map_or(0, |r| r.evaluate_from)) as i64;
            shard.mark.save_if_due(
                store,
                partition,
                next,
                (force, self.state_every),
                &self.factory.metrics.kafka_line_state_saved,
                || state::encode_rules(next, &none, rules),
            );
        }
    }

    /// Commits every shard that moved (tantivy first, then the group), so
    /// the group's offset is never ahead of an index on disk.
    fn commit(&mut self, consumer: &BaseConsumer<IndexerContext>, force: bool) -> Result<()> {
        self.save_owners(force);
        let moved = self
            .open
            .values()
            .any(|s| s.indexer.consumed() as i64 > s.group_committed);
        if let (true, Some(rekey)) = (moved, &self.rekey) {
            // The lines sent to owners are on the brokers before any
            // offset passes their record: a shard restarting from its
            // checkpoint does not send them again.
            if let Err(e) = rekey.flush() {
                tracing::warn!(error = %format!("{e:#}"), "rekey topic not flushed; offsets stay where they are");
                return Ok(());
            }
        }
        // After the flush (a state as of offset S says the routed lines of
        // the records below S reached their owners) and before the index
        // commits (nothing more between those and the group commit).
        self.save_shards(force);
        let mut offsets = TopicPartitionList::new();
        for (&partition, owner) in self.owners.iter_mut() {
            if let Some(rules) = &mut owner.rules {
                rules.before_checkpoint(0, &self.factory.metrics, None);
            }
            // Only as far as the state saved: the group offset and the
            // changelog agree where a new owner starts.
            if owner.mark.saved > owner.group_committed {
                offsets
                    .add_partition_offset(
                        &self.rekey_topic,
                        partition,
                        Offset::Offset(owner.mark.saved),
                    )
                    .context("building the offsets to commit")?;
            }
        }
        let saves_state = self.lines_state.is_some();
        for (&partition, shard) in self.open.iter_mut() {
            let keeps = saves_state && shard.rules_keep_state();
            let consumed = shard.indexer.consumed() as i64;
            if consumed <= shard.group_committed {
                continue;
            }
            shard
                .indexer
                .commit()
                .with_context(|| format!("committing the index of partition {partition}"))?;
            // With rules that keep state, only as far as the state saved
            // (which may be ahead of the index while it reads again what
            // a restored state holds): a new owner restores a state at or
            // past its start.
            let to = if keeps {
                consumed.min(shard.mark.saved)
            } else {
                consumed
            };
            if to > shard.group_committed {
                offsets
                    .add_partition_offset(&self.topic, partition, Offset::Offset(to))
                    .context("building the offsets to commit")?;
            }
        }
        if offsets.count() == 0 {
            return Ok(());
        }
        if offsets.elements().iter().any(|e| e.topic() == self.topic) {
            self.rounds += 1;
        }
        match self.fault {
            Some(Fault::Skip) => return Ok(()),
            Some(Fault::ExitAt(n)) if self.rounds >= n => {
                tracing::warn!(
                    round = self.rounds,
                    "fault injection: exiting between the index and the group commit"
                );
                // SAFETY: _exit(2) ends the process at once, like a kill -9:
                // nothing after the index commit runs.
                unsafe { libc::_exit(86) }
            }
            _ => {}
        }
        match consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => {
                for element in offsets.elements() {
                    let Offset::Offset(offset) = element.offset() else {
                        continue;
                    };
                    if element.topic() == self.rekey_topic {
                        if let Some(owner) = self.owners.get_mut(&element.partition()) {
                            owner.group_committed = offset;
                        }
                    } else if let Some(shard) = self.open.get_mut(&element.partition()) {
                        shard.group_committed = offset;
                    }
                }
            }
            // The indexes hold the lines: the next round retries, and a
            // restart starts from the indexes' own checkpoints.
            Err(e) => tracing::warn!(error = %e, "committing offsets to the group"),
        }
        // After the group commit, not between it and the index commits.
        // The store may be behind the indexes after a crash: lines mined
        // again get the ids they had.
        if let Some(patterns) = &self.factory.patterns {
            save_patterns_if_due(patterns, &self.factory.metrics)?;
        }
        Ok(())
    }

    /// Swaps a reloaded rule set into every open shard, between two
    /// messages, carrying each shard's state of unchanged rules; shards
    /// opened later compile the same set.
    fn reload(&mut self, set: RuleSet) {
        let specs = Arc::new(set.specs);
        let mut carried = None;
        let mut fresh = Some(set.engine);
        for (partition, shard) in self.open.iter_mut() {
            let engine = match fresh.take() {
                Some(engine) => engine,
                None => match compile(&specs, set.options) {
                    Ok(engine) => engine,
                    Err(e) => {
                        // The loader compiled the same specs already.
                        tracing::error!(partition, error = %format!("{e:#}"), "rule reload failed for a partition; it keeps its rules");
                        continue;
                    }
                },
            };
            let kept = shard.indexer.swap_rules(engine);
            carried = carried.or(kept);
        }
        for (partition, owner) in self.owners.iter_mut() {
            let Some(rules) = &mut owner.rules else {
                continue;
            };
            match compile(&specs, set.options) {
                // Takes the owner's routing over with its state.
                Ok(engine) => {
                    let kept = rules.swap(engine);
                    carried = carried.or(Some(kept));
                }
                Err(e) => {
                    tracing::error!(partition, error = %format!("{e:#}"), "rule reload failed for a rekey partition; it keeps its rules")
                }
            }
        }
        self.parked.clear();
        self.factory.rules = Some((specs, set.options));
        reload::reloaded(
            &self.factory.rules_status,
            &self.factory.metrics,
            set.rules,
            &carried.unwrap_or_default(),
        );
    }

    /// Purges and retention for every shard at once: a tenant's days are
    /// deleted whole, every shard's writers of them closed first.
    fn maintain(&mut self) -> Result<()> {
        let Shards {
            factory,
            open,
            owners,
            parked,
            retention_checked,
            ..
        } = self;
        use crate::index::lifecycle::{self, WriterStep};
        lifecycle::maintain(&factory.catalog, retention_checked, |step| {
            // A shard commits its index as it closes writers; its group
            // offset follows in the next commit round.
            match step {
                WriterStep::Commit => {}
                WriterStep::Close(tenant, before) => {
                    for shard in open.values_mut() {
                        shard.indexer.close_writers(tenant, before)?;
                    }
                }
                WriterStep::CloseDay(tenant, day, shard_id) => {
                    for shard in open.values_mut() {
                        shard.indexer.close_day(tenant, day, shard_id)?;
                    }
                }
                WriterStep::ForgetRules(tenant, removed) => {
                    // Here, not only through the shards: the store holds
                    // the patterns of partitions no longer open here.
                    if let Some(patterns) = &factory.patterns {
                        forget_patterns(patterns, &factory.catalog, tenant)?;
                    }
                    // The changelogs forget the tenant's keys at the next
                    // commit round, not at the next line.
                    for shard in open.values_mut() {
                        *removed += shard.indexer.forget_tenant_rules(tenant)?;
                        shard.mark.dirty = true;
                    }
                    parked.clear();
                    for owner in owners.values_mut() {
                        if let Some(rules) = &mut owner.rules {
                            *removed += rules.forget_tenant(tenant);
                            owner.mark.dirty = true;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Closes rekey partitions: their owners are parked until the next
    /// assignment.
    fn close_owners(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if let Some(owner) = self.owners.remove(partition) {
                self.parked.insert(*partition, owner);
            }
        }
    }

    /// Flatline rules of the owners (a quiet input).
    fn idle_owners(&mut self) {
        let out = self.factory.firings.as_ref().map(|s| s as &dyn FiringOut);
        for rules in self.owners.values_mut().filter_map(|o| o.rules.as_mut()) {
            rules.idle(&self.factory.metrics, out);
        }
    }

    fn close(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if let Some(shard) = self.open.remove(partition) {
                if let Err(e) = shard.indexer.finish() {
                    self.failed
                        .get_or_insert(e.context(format!("closing partition {partition}")));
                }
            }
        }
        // Once for all the shards closed (a rebalance, a stop).
        if let Some(patterns) = &self.factory.patterns {
            if let Err(e) = patterns.lock().save_if_dirty() {
                self.failed
                    .get_or_insert(e.context("saving the pattern state"));
            }
        }
    }
}

pub(crate) struct IndexerContext {
    pub(crate) shards: Arc<Mutex<Shards>>,
}

fn lock(shards: &Mutex<Shards>) -> MutexGuard<'_, Shards> {
    // A panic while holding it already ends the process's consumer thread;
    // the state inside is still the best there is for a last commit.
    shards
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for IndexerContext {}

impl ConsumerContext for IndexerContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let mut shards = lock(&self.shards);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let started = Instant::now();
                let committed = consumer
                    .committed_offsets(partitions.clone(), Duration::from_secs(30))
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "reading the group's offsets; using the indexes' own");
                        TopicPartitionList::new()
                    });
                let mut assigned = TopicPartitionList::new();
                for element in partitions.elements() {
                    let partition = element.partition();
                    let group = committed
                        .find_partition(element.topic(), partition)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    if element.topic() == shards.rekey_topic {
                        let saved = shards
                            .state
                            .as_ref()
                            .and_then(|s| s.load_or_none(partition));
                        let saved_next = saved
                            .as_deref()
                            .and_then(|b| state::decode_rules(b).ok())
                            .map(|s| s.next);
                        let opened = match shards.parked.remove(&partition) {
                            // Nobody read it since this indexer gave it up
                            // with its state saved.
                            Some(owner)
                                if owner.next == owner.mark.saved
                                    && saved_next.unwrap_or(owner.mark.saved)
                                        == owner.mark.saved
                                    && group.unwrap_or(0).max(0) <= owner.mark.saved =>
                            {
                                Ok(owner)
                            }
                            _ => shards
                                .factory
                                .open_owner(partition, group, saved.as_deref()),
                        };
                        match opened {
                            Ok(owner) => {
                                let _ = assigned.add_partition_offset(
                                    element.topic(),
                                    partition,
                                    Offset::Offset(owner.next),
                                );
                                shards.owners.insert(partition, owner);
                            }
                            Err(e) => {
                                shards.failed.get_or_insert(e);
                            }
                        }
                        continue;
                    }
                    let opened = match shards.open.get(&partition) {
                        Some(shard) => Ok(shard.indexer.consumed() as i64),
                        None => shards.take(partition, group),
                    };
                    match opened {
                        Ok(start) => {
                            let _ = assigned.add_partition_offset(
                                element.topic(),
                                partition,
                                Offset::Offset(start),
                            );
                        }
                        Err(e) => {
                            shards.failed.get_or_insert(e);
                        }
                    }
                }
                // Every member waits for the slowest one's callbacks.
                tracing::info!(partitions = assigned.count(), elapsed = ?started.elapsed(), "partitions assigned");
                shards
                    .factory
                    .metrics
                    .kafka_partitions_assigned
                    .set(shards.open.len() as i64);
                if let Err(e) = consumer.assign(&assigned) {
                    shards
                        .failed
                        .get_or_insert(anyhow::anyhow!("assigning partitions: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let started = Instant::now();
                if let Err(e) = shards.commit(consumer, true) {
                    shards.failed.get_or_insert(e);
                }
                let rekey_topic = shards.rekey_topic.clone();
                let (mut owned, mut revoked) = (Vec::new(), Vec::new());
                for e in partitions.elements() {
                    if e.topic() == rekey_topic {
                        owned.push(e.partition());
                    } else {
                        revoked.push(e.partition());
                    }
                }
                let unsettled: Vec<i32> = revoked
                    .iter()
                    .copied()
                    .filter(|p| {
                        shards
                            .open
                            .get(p)
                            .is_some_and(|s| s.indexer.consumed() as i64 > s.group_committed)
                    })
                    .collect();
                shards.close(&revoked);
                if let Err(e) = shards.settle(consumer, &unsettled) {
                    shards.failed.get_or_insert(e);
                }
                shards.close_owners(&owned);
                shards
                    .factory
                    .metrics
                    .kafka_partitions_assigned
                    .set(shards.open.len() as i64);
                tracing::info!(partitions = ?revoked, elapsed = ?started.elapsed(), "partitions revoked");
                let _ = consumer.unassign();
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

/// The lower of two offsets either may be missing (never below 0).
fn lowest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    [a, b].into_iter().flatten().min().map(|o| o.max(0))
}

/// How often the consumer thread reads the ownership topic: well within
/// a commit interval, so a partition taken by another indexer is rolled
/// back here before the other one's first commit makes its copy visible.
const OWNERSHIP_EVERY: Duration = Duration::from_millis(50);

pub(crate) fn consume(
    consumer: BaseConsumer<IndexerContext>,
    shards: Arc<Mutex<Shards>>,
    cipher: Option<Arc<WalCipher>>,
    reloads: std::sync::mpsc::Receiver<RuleSet>,
    stop: Arc<AtomicBool>,
    commit_every: Duration,
) -> Result<()> {
    let mut next_commit = Instant::now() + commit_every;
    let mut next_ownership = Instant::now();
    let outcome = (|| -> Result<()> {
        while !stop.load(Ordering::Acquire) {
            let polled = consumer.poll(Duration::from_millis(100));
            let mut state = lock(&shards);
            if let Some(e) = state.failed.take() {
                return Err(e);
            }
            match polled {
                Some(Ok(message)) if message.topic() == state.rekey_topic => {
                    owner_message(&mut state, &message)
                }
                Some(Ok(message)) => index_message(&mut state, &message, cipher.as_deref())?,
                Some(Err(e)) => tracing::warn!(error = %e, "reading from Kafka"),
                None => {
                    for shard in state.open.values_mut() {
                        shard.indexer.idle()?;
                    }
                    state.idle_owners();
                }
            }
            if let Some(set) = reloads.try_iter().last() {
                state.reload(set);
            }
            state.maintain()?;
            if Instant::now() >= next_ownership {
                state.follow_ownership()?;
                next_ownership = Instant::now() + OWNERSHIP_EVERY;
            }
            if Instant::now() >= next_commit {
                state.commit(&consumer, false)?;
                next_commit = Instant::now() + commit_every;
            }
        }
        Ok(())
    })();
    let mut state = lock(&shards);
    let committed = state.commit(&consumer, true);
    let all: Vec<i32> = state.open.keys().copied().collect();
    state.close(&all);
    state.owners.clear();
    state.parked.clear();
    let failed = state.failed.take();
    drop(state);
    // Closing leaves the group at once (a revoke with nothing left to
    // commit), so the others take the partitions without a session timeout.
    drop(consumer);
    outcome?;
    committed?;
    failed.map_or(Ok(()), Err)
}

/// One Kafka message: a WAL record's payload, deduplicated against the
/// shard's source offsets, then indexed at position `offset`.
fn index_message(
    shards: &mut Shards,
    message: &BorrowedMessage<'_>,
    cipher: Option<&WalCipher>,
) -> Result<()> {
    let partition = message.partition();
    let offset = message.offset();
    let Some(shard) = shards.open.get_mut(&partition) else {
        return Ok(()); // revoked while this message was on its way
    };
    let payload = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
    shards.factory.metrics.kafka_lines_records.inc();
    shards
        .factory
        .metrics
        .kafka_lines_bytes
        .add(payload.len() as u64);
    let decoded = crate::wal::cipher::open_payload(cipher, payload)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|p| IngestRecord::decode(p).map_err(|e| anyhow::anyhow!(e)));
    let mut record = match decoded {
        Ok(record) => record,
        Err(e) => {
            // Not ours, or sealed with another key: skipped, named, counted.
            tracing::error!(partition, offset, error = %format!("{e:#}"), "skipping an unreadable message");
            shards.factory.metrics.lines_unparsed.inc();
            return Ok(());
        }
    };
    if ingest::admit(shard.indexer.source_offsets(), &mut record).is_some() {
        shards.factory.metrics.batches_duplicate.inc();
        record.lines = bytes::Bytes::new();
    }
    // Only the header is read after indexing (the lines are shared).
    let origin = shards.rekey.is_some().then(|| record.clone());
    shard.indexer.index(Durable {
        start: offset as u64,
        end: offset as u64 + 1,
        record,
        received: Some(Instant::now()),
    })?;
    if let Some(routed) = shard.indexer.routed() {
        if let (Some(rekey), Some(origin)) = (&mut shards.rekey, &origin) {
            if !routed.is_empty() {
                rekey.send(origin, partition, offset, routed, &shards.factory.metrics);
            }
        }
        routed.clear();
    }
    Ok(())
}

/// One rekey message: lines of rules keyed across sources, sent by a line
/// shard, evaluated for the keys this partition owns.
fn owner_message(shards: &mut Shards, message: &BorrowedMessage<'_>) {
    let partition = message.partition();
    let Some(owner) = shards.owners.get_mut(&partition) else {
        return; // revoked while this message was on its way
    };
    owner.next = message.offset() + 1;
    let Some(rules) = &mut owner.rules else {
        return;
    };
    let metrics = &shards.factory.metrics;
    let m = match rekey::decode(message.payload().unwrap_or_default()) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(partition, offset = message.offset(), error = %e, "skipping an unreadable rekey message");
            return;
        }
    };
    match owner.seen.get(&m.origin_partition) {
        Some(&last) if m.origin_offset <= last => {
            metrics.kafka_rekey_duplicate.inc();
            return;
        }
        _ => {}
    }
    owner.seen.insert(m.origin_partition, m.origin_offset);
    rules.begin_record(&[m.tenant, m.agent_id, m.source_id], m.received_unix_nanos);
    let hint = m.format.parse::<Format>().unwrap_or_default();
    let ctx = ParseContext {
        now_nanos: m.received_unix_nanos,
    };
    let unparsed = Event::default();
    for &(ts, raw) in &m.lines {
        let parsed = parse_text(raw, hint, &ctx).ok();
        rules.line(
            parsed.as_ref().unwrap_or(&unparsed),
            raw,
            m.source,
            ts,
            m.tenant,
        );
    }
    let out = shards.factory.firings.as_ref().map(|s| s as &dyn FiringOut);
    rules.end_record(0, true, metrics, out);
}
