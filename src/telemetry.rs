//! Counters and latency histograms, rendered in the Prometheus text format.
//!
//! One `Metrics` value is shared by every stage; each stage bumps its own
//! counters. Latencies go into hdrhistograms (microseconds, 3 significant
//! digits) and are exported as summaries with p50/p90/p99/p999.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        // 1 µs .. 1 hour; creation cannot fail for these bounds.
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid"));
        Latency(Mutex::new(hist))
    }
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let micros = (elapsed.as_micros() as u64).max(1);
        if let Ok(mut hist) = self.0.lock() {
            hist.saturating_record(micros);
        }
    }

    /// (count, sum seconds, [(quantile, seconds)])
    fn snapshot(&self) -> (u64, f64, Vec<(f64, f64)>) {
        let Ok(hist) = self.0.lock() else {
            return (0, 0.0, Vec::new());
        };
        let quantiles = [0.5, 0.9, 0.99, 0.999]
            .iter()
            .map(|&q| (q, hist.value_at_quantile(q) as f64 / 1e6))
            .collect();
        let sum = hist.mean() * hist.len() as f64 / 1e6;
        (hist.len(), sum, quantiles)
    }

    /// A Prometheus summary: the quantiles of [`Latency::snapshot`], sum
    /// and count.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let (count, sum, quantiles) = self.snapshot();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for (q, v) in quantiles {
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v}");
        }
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }

    pub fn quantile_secs(&self, q: f64) -> f64 {
        self.0
            .lock()
            .map(|h| h.value_at_quantile(q) as f64 / 1e6)
            .unwrap_or(0.0)
    }
}

/// One metric, `kind` `counter` or `gauge`, with its help line.
fn render_one(out: &mut String, kind: &str, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// `(name, help, counter)` rows.
fn render_counters(out: &mut String, counters: &[(&str, &str, &Counter)]) {
    for (name, help, counter) in counters {
        render_one(out, "counter", name, help, counter.get());
    }
}

/// `(name, help, gauge)` rows.
fn render_gauges(out: &mut String, gauges: &[(&str, &str, &Gauge)]) {
    for (name, help, gauge) in gauges {
        render_one(out, "gauge", name, help, gauge.get());
    }
}

/// The live detection rules' own metrics (reloads, state, snapshots).
#[derive(Default)]
pub struct RulesMetrics {
    pub loaded: Gauge,
    pub reloads: Counter,
    pub reload_failures: Counter,
    /// Unix seconds of the last reload attempt, good or bad.
    pub last_reload_unix: Gauge,
    /// 1 when the last reload attempt was applied, 0 when it was rejected.
    pub last_reload_success: Gauge,
    pub keys_evicted: Counter,
    pub replay_suppressed: Counter,
    pub snapshot_writes: Counter,
    pub snapshot_failures: Counter,
    /// Snapshots put off because the alert stage had not yet stored the
    /// firings published before them.
    pub snapshots_deferred: Counter,
    pub snapshot_bytes: Gauge,
    /// Lines too old for every window they could count in, by rule.
    pub lines_too_late: KindCounter,
    /// Sources heard from lately whose newest line is over a minute older
    /// than its arrival, and the largest such lag.
    pub sources_behind: Gauge,
    pub source_lag_max_secs: Gauge,
}

impl RulesMetrics {
    /// Counts a reload attempt: applied, or rejected (the previous rules
    /// stay active).
    pub fn reload_attempted(&self, applied: bool) {
        if applied {
            self.reloads.inc();
        } else {
            self.reload_failures.inc();
        }
        self.last_reload_success.set(i64::from(applied));
        self.last_reload_unix
            .set(crate::time::now_nanos() / 1_000_000_000);
    }

    fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &Counter); 7] = [
            (
                "nightowl_rules_reloads_total",
                "Rule reloads applied.",
                &self.reloads,
            ),
            (
                "nightowl_rules_reload_failures_total",
                "Rule reloads rejected (invalid files); the previous rules stayed.",
                &self.reload_failures,
            ),
            (
                "nightowl_rules_keys_evicted_total",
                "Rule state keys evicted by the per-rule key cap (LRU).",
                &self.keys_evicted,
            ),
            (
                "nightowl_rules_replay_suppressed_total",
                "Firings of replayed WAL records dropped: published before the restart.",
                &self.replay_suppressed,
            ),
            (
                "nightowl_rules_snapshot_writes_total",
                "Rule state snapshots written.",
                &self.snapshot_writes,
            ),
            (
                "nightowl_rules_snapshot_failures_total",
                "Rule state snapshots that could not be written or read.",
                &self.snapshot_failures,
            ),
            (
                "nightowl_rules_snapshots_deferred_total",
                "Rule state snapshots put off to the next commit: the alert stage had not stored the firings before them yet.",
                &self.snapshots_deferred,
            ),
        ];
        render_counters(out, &counters);
        self.lines_too_late.render(
            out,
            "nightowl_rules_lines_too_late_total",
            "rule",
            "Lines too old for every window of a rule (key window + grace, and their source's side window); stateless rules still saw them.",
        );
        let gauges: [(&str, &str, &Gauge); 6] = [
            (
                "nightowl_rules_sources_behind",
                "Sources heard from in the last 10 minutes whose newest line is over a minute older than its arrival.",
                &self.sources_behind,
            ),
            (
                "nightowl_rules_source_lag_max_seconds",
                "The largest lag of those sources: arrival minus event time of their newest line.",
                &self.source_lag_max_secs,
            ),
            (
                "nightowl_rules_loaded",
                "Detection rules active.",
                &self.loaded,
            ),
            (
                "nightowl_rules_last_reload_timestamp_seconds",
                "Unix time of the last rule reload attempt (0: none yet).",
                &self.last_reload_unix,
            ),
            (
                "nightowl_rules_last_reload_success",
                "1 if the last rule reload attempt was applied, 0 if rejected.",
                &self.last_reload_success,
            ),
            (
                "nightowl_rules_snapshot_bytes",
                "Size of the last rule state snapshot.",
                &self.snapshot_bytes,
            ),
        ];
        render_gauges(out, &gauges);
    }
}

/// A counter per label value (`kind="password"`), for the few metrics whose
/// label set is only known at run time. Locked once per batch that counts.
#[derive(Default)]
pub struct KindCounter(Mutex<std::collections::BTreeMap<String, u64>>);

impl KindCounter {
    pub fn add(&self, kind: &str, n: u64) {
        if let Ok(mut map) = self.0.lock() {
            match map.get_mut(kind) {
                Some(v) => *v += n,
                None => {
                    map.insert(kind.to_string(), n);
                }
            }
        }
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Summed over every label value.
    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(map) = self.0.lock() {
            for (value, n) in map.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        }
    }
}

/// Every metric the collector exports.
#[derive(Default)]
pub struct Metrics {
    pub connections_accepted: Counter,
    pub connections_active: Gauge,
    /// Kafka partitions this indexer holds (`nightowl indexer`).
    pub kafka_partitions_assigned: Gauge,
    /// Messages and bytes read from the lines topic, and produced to the
    /// rekey topic (lines of rules keyed across sources, docs/kafka.md).
    pub kafka_lines_records: Counter,
    pub kafka_lines_bytes: Counter,
    pub kafka_rekey_records: Counter,
    pub kafka_rekey_bytes: Counter,
    /// Rekey messages dropped as already evaluated (a shard's replay).
    pub kafka_rekey_duplicate: Counter,
    /// Rekey owners' rule state written to / restored from the changelog.
    pub kafka_rule_state_saved: Counter,
    pub kafka_rule_state_restored: Counter,
    /// Line shards' rule state (rules keyed by `source`, or all with
    /// `rekey = false`) written to / restored from their changelog.
    pub kafka_line_state_saved: Counter,
    pub kafka_line_state_restored: Counter,
    /// Lines partitions rolled back because another indexer indexed their
    /// last commit interval again, and the lines deleted (docs/kafka.md,
    /// "Exactly once").
    pub kafka_rollbacks: Counter,
    pub kafka_rollback_lines: Counter,
    pub handshakes_rejected: Counter,
    pub frames_rejected: Counter,
    pub batches_received: Counter,
    pub batches_duplicate: Counter,
    /// Batches received before a purge of their tenant, dropped unwritten.
    pub batches_purged: Counter,
    pub lines_received: Counter,
    pub bytes_received: Counter,
    pub wal_syncs: Counter,
    pub wal_bytes: Counter,
    pub lines_indexed: Counter,
    /// Of `lines_indexed`: lines received before this start, indexed
    /// again from the WAL (the index had not committed them).
    pub lines_replayed: Counter,
    pub lines_unparsed: Counter,
    /// Lines dated before their tenant's retention: acknowledged (they
    /// were durable), then left out of the index.
    pub lines_past_retention: Counter,
    pub syslog_rejected: Counter,
    pub index_commits: Counter,
    pub index_errors: Counter,
    /// The node's indexing memory budget and the part of it the open
    /// partition writers hold (`index/budget.rs`).
    pub index_memory_budget: Gauge,
    pub index_memory_reserved: Gauge,
    pub index_writers_open: Gauge,
    /// Writers committed and closed to make room for another's heap.
    pub index_writers_evicted: Counter,
    pub api_requests: Counter,
    pub rule_firings: Counter,
    pub rules: RulesMetrics,
    pub alerts: AlertMetrics,
    pub backup: BackupMetrics,
    pub ingest_to_ack: Latency,
    pub ingest_to_searchable: Latency,
    pub wal_sync_latency: Latency,
    pub search_latency: Latency,
    /// Secrets replaced before storage, by kind.
    pub redactions: KindCounter,
    /// API requests refused by a limit, by reason (docs/limits.md).
    pub api_limited: KindCounter,
    /// Expensive API requests (searches, exports, backtests) running.
    pub api_searches_running: Gauge,
    /// Log patterns (`src/patterns/`): live over every stream, dropped by
    /// the bounds since the start (evicted from a stream, or with a
    /// dropped stream), and streams dropped.
    pub patterns_live: Gauge,
    pub patterns_evicted: Gauge,
    pub pattern_streams_dropped: Gauge,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(4096);
        let out = &mut text;
        let counters: [(&str, &str, &Counter); 31] = [
            (
                "nightowl_kafka_rollbacks_total",
                "Lines partitions rolled back because another indexer indexed their last commit interval again.",
                &self.kafka_rollbacks,
            ),
            (
                "nightowl_kafka_rollback_lines_total",
                "Lines deleted by those rollbacks (each held by another indexer too).",
                &self.kafka_rollback_lines,
            ),
            (
                "nightowl_kafka_rule_state_saved_total",
                "Rekey owners' rule states written to the changelog topic.",
                &self.kafka_rule_state_saved,
            ),
            (
                "nightowl_kafka_rule_state_restored_total",
                "Rekey partitions whose rule state was restored from the changelog topic.",
                &self.kafka_rule_state_restored,
            ),
            (
                "nightowl_kafka_line_state_saved_total",
                "Lines partitions' rule states written to the lines-state changelog topic.",
                &self.kafka_line_state_saved,
            ),
            (
                "nightowl_kafka_line_state_restored_total",
                "Lines partitions whose rule state was restored from the lines-state changelog topic.",
                &self.kafka_line_state_restored,
            ),
            (
                "nightowl_kafka_lines_records_total",
                "Messages read from the Kafka lines topic.",
                &self.kafka_lines_records,
            ),
            (
                "nightowl_kafka_lines_bytes_total",
                "Payload bytes read from the Kafka lines topic.",
                &self.kafka_lines_bytes,
            ),
            (
                "nightowl_kafka_rekey_records_total",
                "Messages produced to the Kafka rekey topic (lines of rules keyed across sources).",
                &self.kafka_rekey_records,
            ),
            (
                "nightowl_kafka_rekey_bytes_total",
                "Payload bytes produced to the Kafka rekey topic.",
                &self.kafka_rekey_bytes,
            ),
            (
                "nightowl_kafka_rekey_duplicate_total",
                "Rekey messages dropped as already evaluated (a shard replaying).",
                &self.kafka_rekey_duplicate,
            ),
            (
                "nightowl_connections_accepted_total",
                "Agent connections accepted.",
                &self.connections_accepted,
            ),
            (
                "nightowl_handshakes_rejected_total",
                "Agent handshakes rejected (TLS, version, token).",
                &self.handshakes_rejected,
            ),
            (
                "nightowl_frames_rejected_total",
                "Agent frames rejected as malformed or oversized.",
                &self.frames_rejected,
            ),
            (
                "nightowl_batches_received_total",
                "Batches received from agents.",
                &self.batches_received,
            ),
            (
                "nightowl_batches_duplicate_total",
                "Batches dropped as resends already durable.",
                &self.batches_duplicate,
            ),
            (
                "nightowl_batches_purged_total",
                "Batches received before their tenant's purge, acked and dropped unwritten.",
                &self.batches_purged,
            ),
            (
                "nightowl_lines_received_total",
                "Lines accepted into the WAL.",
                &self.lines_received,
            ),
            (
                "nightowl_bytes_received_total",
                "Bytes of lines accepted into the WAL.",
                &self.bytes_received,
            ),
            (
                "nightowl_wal_syncs_total",
                "WAL fsyncs (one per group commit).",
                &self.wal_syncs,
            ),
            (
                "nightowl_wal_bytes_total",
                "Bytes appended to the WAL.",
                &self.wal_bytes,
            ),
            (
                "nightowl_lines_indexed_total",
                "Lines added to the index.",
                &self.lines_indexed,
            ),
            (
                "nightowl_lines_replayed_total",
                "Lines indexed from the WAL at startup: received before this start (part of nightowl_lines_indexed_total).",
                &self.lines_replayed,
            ),
            (
                "nightowl_lines_unparsed_total",
                "Lines no parser understood, indexed raw.",
                &self.lines_unparsed,
            ),
            (
                "nightowl_lines_past_retention_total",
                "Lines dated before their tenant's retention, not indexed.",
                &self.lines_past_retention,
            ),
            (
                "nightowl_syslog_rejected_total",
                "Syslog messages dropped for want of a valid agent token.",
                &self.syslog_rejected,
            ),
            (
                "nightowl_index_commits_total",
                "Index commits.",
                &self.index_commits,
            ),
            (
                "nightowl_index_errors_total",
                "Index errors.",
                &self.index_errors,
            ),
            (
                "nightowl_index_writers_evicted_total",
                "Partition writers committed and closed to make room in the indexing memory budget.",
                &self.index_writers_evicted,
            ),
            (
                "nightowl_api_requests_total",
                "HTTPS API requests.",
                &self.api_requests,
            ),
            (
                "nightowl_rule_firings_total",
                "Detection rule firings.",
                &self.rule_firings,
            ),
        ];
        render_counters(out, &counters);
        render_one(
            out,
            "gauge",
            "nightowl_connections_active",
            "Agent connections open.",
            self.connections_active.get(),
        );
        render_one(
            out,
            "gauge",
            "nightowl_kafka_partitions_assigned",
            "Kafka partitions this indexer holds.",
            self.kafka_partitions_assigned.get(),
        );
        let gauges: [(&str, &str, &Gauge); 3] = [
            (
                "nightowl_index_memory_budget_bytes",
                "Indexing memory of the node, shared by every partition writer (index.memory_budget_bytes).",
                &self.index_memory_budget,
            ),
            (
                "nightowl_index_memory_reserved_bytes",
                "Indexing memory held by the open partition writers' heaps.",
                &self.index_memory_reserved,
            ),
            (
                "nightowl_index_writers_open",
                "Partition writers open.",
                &self.index_writers_open,
            ),
        ];
        render_gauges(out, &gauges);
        self.redactions.render(
            out,
            "nightowl_redactions_total",
            "kind",
            "Secrets replaced by a marker before anything was stored, by kind.",
        );
        self.api_limited.render(
            out,
            "nightowl_api_limited_total",
            "reason",
            "API requests refused by a limit (rate, token_concurrency, overloaded, body, query_shape, query_timeout, connections).",
        );
        render_one(
            out,
            "gauge",
            "nightowl_patterns_live",
            "Log patterns held over every tenant and source.",
            self.patterns_live.get(),
        );
        render_one(
            out,
            "counter",
            "nightowl_patterns_evicted_total",
            "Log patterns dropped by the bounds (the coldest of a full stream, or with a dropped stream) since the start.",
            self.patterns_evicted.get(),
        );
        render_one(
            out,
            "counter",
            "nightowl_pattern_streams_dropped_total",
            "Pattern streams (tenant and source) dropped by the stream cap since the start.",
            self.pattern_streams_dropped.get(),
        );
        render_one(
            out,
            "gauge",
            "nightowl_api_searches_running",
            "Expensive API requests running.",
            self.api_searches_running.get(),
        );
        let latencies: [(&str, &str, &Latency); 4] = [
            (
                "nightowl_ingest_to_ack_seconds",
                "Batch received to ack sent (durable).",
                &self.ingest_to_ack,
            ),
            (
                "nightowl_ingest_to_searchable_seconds",
                "Batch received to searchable.",
                &self.ingest_to_searchable,
            ),
            (
                "nightowl_wal_sync_seconds",
                "WAL group commit fsync.",
                &self.wal_sync_latency,
            ),
            (
                "nightowl_search_seconds",
                "Search request latency.",
                &self.search_latency,
            ),
        ];
        for (name, help, latency) in latencies {
            latency.render(out, name, help);
        }
        self.rules.render(out);
        self.alerts.render(out);
        self.backup.render(out);
        text
    }
}

/// Backups (src/backup/): each run, its size and duration.
#[derive(Default)]
pub struct BackupMetrics {
    pub runs_ok: Counter,
    pub runs_failed: Counter,
    /// Scheduled runs that did not happen (the collector was down, or the
    /// previous run was still going).
    pub missed: Counter,
    pub running: Gauge,
    pub last_success_unix: Gauge,
    pub last_duration_ms: Gauge,
    /// Bytes the last successful backup holds, and those it had to copy.
    pub last_bytes: Gauge,
    pub last_bytes_copied: Gauge,
}

impl BackupMetrics {
    fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &Counter); 3] = [
            (
                "nightowl_backups_total",
                "Backups that completed (manifest written).",
                &self.runs_ok,
            ),
            (
                "nightowl_backup_failures_total",
                "Backups that failed (each one pages).",
                &self.runs_failed,
            ),
            (
                "nightowl_backups_missed_total",
                "Scheduled backups that did not run (each one pages).",
                &self.missed,
            ),
        ];
        render_counters(out, &counters);
        let gauges: [(&str, &str, &Gauge); 5] = [
            (
                "nightowl_backup_running",
                "1 while a backup runs.",
                &self.running,
            ),
            (
                "nightowl_backup_last_success_timestamp_seconds",
                "Unix time the last successful backup finished (0: none yet).",
                &self.last_success_unix,
            ),
            (
                "nightowl_backup_last_duration_milliseconds",
                "How long the last successful backup took.",
                &self.last_duration_ms,
            ),
            (
                "nightowl_backup_last_size_bytes",
                "Bytes the last successful backup holds.",
                &self.last_bytes,
            ),
            (
                "nightowl_backup_last_copied_bytes",
                "Bytes the last successful backup copied (the rest was already there).",
                &self.last_bytes_copied,
            ),
        ];
        render_gauges(out, &gauges);
    }
}

/// The paging stage's metrics (src/alert/).
#[derive(Default)]
pub struct AlertMetrics {
    /// Firings the indexer could not hand to the alert stage (it was
    /// gone: shutting down or dead): never silent, always counted and
    /// logged.
    pub firings_dropped: Counter,
    /// Firings that waited for room in the alert stage's queue, and how
    /// long in all: detection slowed instead of dropping them.
    pub firings_waited: Counter,
    pub firings_waited_micros: Counter,
    pub notifications_sent: Counter,
    /// Failed attempts (each retry counts).
    pub notifications_failed: Counter,
    pub notifications_dead: Counter,
    /// Notifications waiting for delivery.
    pub outbox_depth: Gauge,
    /// Alerts currently firing.
    pub firing: Gauge,
    /// Firing reached the alert stage → the receiver accepted the page.
    pub delivery_latency: Latency,
}

impl AlertMetrics {
    fn render(&self, out: &mut String) {
        let counters: [(&str, &str, &Counter); 6] = [
            (
                "nightowl_alert_firings_dropped_total",
                "Firings lost because the alert stage was gone (shutting down or dead).",
                &self.firings_dropped,
            ),
            (
                "nightowl_alert_firings_waited_total",
                "Firings that waited for room in the alert stage's queue (none is dropped for it).",
                &self.firings_waited,
            ),
            (
                "nightowl_alert_firings_waited_microseconds_total",
                "Time detection waited for room in the alert stage's queue.",
                &self.firings_waited_micros,
            ),
            (
                "nightowl_notifications_sent_total",
                "Notifications a receiver accepted.",
                &self.notifications_sent,
            ),
            (
                "nightowl_notifications_failed_total",
                "Notification attempts that failed (retried or dead-lettered).",
                &self.notifications_failed,
            ),
            (
                "nightowl_notifications_dead_lettered_total",
                "Notifications given up on (permanent failure or retry budget spent).",
                &self.notifications_dead,
            ),
        ];
        render_counters(out, &counters);
        let gauges: [(&str, &str, &Gauge); 2] = [
            (
                "nightowl_outbox_depth",
                "Notifications waiting for delivery.",
                &self.outbox_depth,
            ),
            ("nightowl_alerts_firing", "Alerts firing.", &self.firing),
        ];
        render_gauges(out, &gauges);
        self.delivery_latency.render(
            out,
            "nightowl_alert_delivery_seconds",
            "Firing received to notification delivered.",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_counters_and_quantiles() {
        let m = Metrics::default();
        m.lines_received.add(5);
        m.ingest_to_ack.record(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("nightowl_lines_received_total 5\n"), "{text}");
        assert!(
            text.contains("nightowl_ingest_to_ack_seconds{quantile=\"0.99\"} 0.003"),
            "{text}"
        );
        assert!(text.contains("nightowl_ingest_to_ack_seconds_count 1\n"));
    }
}
