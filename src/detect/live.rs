//! Detection on the ingest path: the indexer thread parses each line once
//! and hands it here, before indexing it; firings go to the recent list,
//! the log, a counter and the alert stage. The indexer only says where a
//! record starts and ends and when it commits; the rules' state, replay
//! suppression, reloads and publication live here (docs/rules-state.md).

use std::sync::Arc;

use super::reload::LiveState;
use super::{Carried, Engine, Firing, RecentFirings};
use crate::parse::Event;
use crate::telemetry::Metrics;
use crate::time::now_nanos;
use crate::wal::Position;

/// Where firings go after the recent list: the alert stage (implemented
/// there, so detection does not import the stage after it).
pub trait FiringOut: Send {
    fn send(&self, firing: Firing);
    /// Every firing of the WAL records ending at or below `end` has been
    /// sent.
    fn sent_through(&self, _end: Position) {}
    /// The highest `end` given to [`FiringOut::sent_through`] whose
    /// firings the stage has on disk; `None` for a stage that does not say
    /// (the high-water mark then follows what was sent).
    fn stored_through(&self) -> Option<Position> {
        None
    }
    /// Asks the stage to put on disk now what it was sent up to
    /// `through`.
    fn store_soon(&self, _through: Position) {}
}

/// The live rules of one indexer.
pub struct LiveRules {
    pub engine: Engine,
    pub recent: Arc<RecentFirings>,
    pub scratch: Vec<Firing>,
    /// Snapshots, replay suppression and hot reloads (docs/rules-state.md).
    /// `None` on a Kafka indexer: its rule state lives as long as its
    /// partition assignment (docs/kafka.md).
    pub live: Option<LiveState>,
    /// The lines of the record being evaluated that go to the owners of
    /// rules keyed across sources ([`super::Routing::Forward`]).
    pub routed: Routed,
    /// Records starting below this are not evaluated: the state restored
    /// holds them already (a Kafka shard whose state in the changelog is
    /// ahead of the offset it starts reading at; 0 elsewhere, where
    /// [`LiveState`] decides).
    pub evaluate_from: Position,
}

/// A record's lines for the owners of routed rules: each line once, and
/// which owner partitions it goes to.
#[derive(Debug, Default)]
pub struct Routed {
    /// (event time, line) in record order.
    pub lines: Vec<(i64, String)>,
    /// (owner partition, index into `lines`), in line order.
    pub targets: Vec<(u32, u32)>,
}

impl Routed {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.targets.clear();
    }
}

impl LiveRules {
    /// Whether the rules see the WAL record starting at `start`: live
    /// records always, replayed ones unless the restored state holds them.
    pub fn evaluates(&self, start: Position) -> bool {
        start >= self.evaluate_from && self.live.as_ref().is_none_or(|l| l.evaluates(start))
    }

    /// The lines that follow come from this source (tenant, agent, file)
    /// and reached the collector at `received` (unix nanos): each source
    /// keeps its own progress, so one behind the others is evaluated in
    /// its own time.
    pub fn begin_record(&mut self, source: &[&str], received: i64) {
        self.engine.set_origin(source, Some(received));
    }

    /// One parsed line (`Event::default()` for an unparsed one) at event
    /// time `ts`.
    pub fn line(&mut self, event: &Event<'_>, raw: &str, source: &str, ts: i64, tenant: &str) {
        self.engine
            .evaluate_source(event, raw, source, ts, tenant, &mut self.scratch);
        let routes = self.engine.routes();
        if !routes.is_empty() {
            let at = self.routed.lines.len() as u32;
            self.routed.lines.push((ts, raw.to_string()));
            self.routed
                .targets
                .extend(routes.iter().map(|&owner| (owner, at)));
        }
    }

    /// After a record's lines: drops the firings of a replayed record that
    /// paged before the restart, publishes the rest, and moves the
    /// high-water mark once they are out.
    pub fn end_record(
        &mut self,
        end: Position,
        live: bool,
        metrics: &Metrics,
        out: Option<&dyn FiringOut>,
    ) {
        let fired = match &mut self.live {
            Some(state) => state.after_record(end, live, &mut self.scratch),
            None => !self.scratch.is_empty(),
        };
        self.publish(metrics, out);
        if let Some(state) = &mut self.live {
            if fired {
                state.published(end, out);
            } else {
                state.follow_store(out);
            }
        }
    }

    /// Whether firings published are not yet in the alert store, so the
    /// high-water mark has to follow it.
    pub fn awaits_store(&self) -> bool {
        self.live.as_ref().is_some_and(LiveState::awaits_store)
    }

    /// Asks the alert stage to store every firing published and waits up
    /// to `wait`; whether they are all stored.
    pub fn wait_for_store(
        &mut self,
        out: Option<&dyn FiringOut>,
        wait: std::time::Duration,
    ) -> bool {
        match &mut self.live {
            Some(state) => state.wait_for_store(out, wait),
            None => true,
        }
    }

    /// Moves the high-water mark up to what the alert store has.
    pub fn follow_store(&mut self, out: Option<&dyn FiringOut>) {
        if let Some(state) = &mut self.live {
            state.follow_store(out);
        }
    }

    /// Hands every pending firing on.
    pub fn publish(&mut self, metrics: &Metrics, out: Option<&dyn FiringOut>) {
        for firing in self.scratch.drain(..) {
            metrics.rule_firings.inc();
            // A detection, not a fault of nightowl: INFO, under the rules'
            // name rather than the module that happens to run them.
            tracing::info!(
                target: "nightowl::rules",
                rule = %firing.rule_id,
                tenant = %firing.tenant,
                key = %firing.key,
                count = firing.count,
                "rule fired"
            );
            if let Some(out) = out {
                out.send(firing.clone());
            }
            self.recent.push(firing);
        }
    }

    /// Swaps in a reloaded rule set if one is waiting (between records).
    pub fn poll_reload(&mut self) {
        if let Some(state) = &mut self.live {
            state.poll_reload(&mut self.engine);
        }
    }

    /// A quiet input: reloads, then flatline rules, which fire on silence
    /// that only a clock sees.
    pub fn idle(&mut self, metrics: &Metrics, out: Option<&dyn FiringOut>) {
        self.poll_reload();
        self.engine.tick(now_nanos(), &mut self.scratch);
        self.publish(metrics, out);
        // The alert stage may have stored the last record's firings since.
        self.follow_store(out);
    }

    /// Swaps in `engine` (a hot reload where no [`LiveState`] does it:
    /// Kafka shards), carrying over the state of unchanged rules.
    pub fn swap(&mut self, mut engine: Engine) -> Carried {
        let carried = engine.adopt_state(&mut self.engine);
        self.engine = engine;
        carried
    }

    /// Drops `tenant`'s state and recent firings (a purge); the snapshot
    /// on disk is rewritten at the next commit. Returns the keys removed.
    pub fn forget_tenant(&mut self, tenant: &str) -> u64 {
        let removed = self.engine.forget_tenant(tenant);
        self.recent.forget_tenant(tenant);
        self.scratch.retain(|f| f.tenant != tenant);
        if let Some(state) = &mut self.live {
            state.rewrite_soon();
        }
        removed
    }

    /// At an index commit, before the checkpoint: snapshots the state as
    /// of `consumed` (the WAL floor is never above a snapshot on disk) and
    /// counts the lines found too late (a Kafka shard has no snapshot, but
    /// its counts go to the metrics all the same).
    pub fn before_checkpoint(
        &mut self,
        consumed: Position,
        metrics: &Metrics,
        out: Option<&dyn FiringOut>,
    ) {
        match &mut self.live {
            Some(state) => state.snapshot(&mut self.engine, consumed, out),
            None => {
                for (id, n) in self.engine.take_too_late() {
                    metrics.rules.lines_too_late.add(&id, n);
                }
            }
        }
    }

    /// The rule state as of `position`, as the snapshot file's bytes, for
    /// a backup's cut; `None` on a Kafka shard (no snapshot there).
    pub fn state_snapshot(&mut self, position: Position) -> Option<Vec<u8>> {
        self.live.as_ref()?;
        let mut enc = super::snapshot::Enc::default();
        self.engine.encode_state(&mut enc);
        let mut out = Vec::new();
        super::snapshot::encode(position, now_nanos(), &enc.buf, &mut out);
        Some(out)
    }

    /// After the checkpoint `checkpoint` is on disk: WAL segments may go up
    /// to it, but not past the snapshot.
    pub fn after_checkpoint(&self, checkpoint: Position) {
        if let Some(state) = &self.live {
            state.retain(checkpoint);
        }
    }
}
