//! Compaction: a partition rewritten as small as it gets — its segments
//! merged into one, its doc store recompressed in 1 MiB blocks with
//! strong zstd, a V1 partition rewritten in the current layout
//! (`schema.rs`). docs/index-size.md has the figures.
//!
//! The work happens beside the partition, in `<day>.compacting/`, from a
//! snapshot of its segments, without holding its writer: ingest and
//! search go on. Only the swap needs the writer closed, so it is done by
//! whoever owns the writers (the indexer thread, between two records,
//! through [`super::lifecycle::Lifecycle::request_install`]): if the
//! partition took new lines meanwhile, its segments no longer match the
//! snapshot and the work is dropped, to be done again once the day is
//! quiet. The swap is two directory renames (`<day>` → `<day>.replaced`,
//! `<day>.compacting` → `<day>`); [`recover`] finishes or undoes one cut
//! short by a crash. Searches already running finish on the old files.
//!
//! The commit payload of the compacted partition is the snapshot's, with
//! `compacted: true`; the next commit of new lines clears it, which is
//! how a day that receives late lines gets compacted again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tantivy::directory::{Directory, MmapDirectory};
use tantivy::index::SegmentId;
use tantivy::store::{Compressor, StoreReader, StoreWriter, ZstdCompressor};
use tantivy::{DocId, Index, IndexSettings, TantivyDocument};

use super::catalog::{live_settings, Catalog, CommitPayload, Partition};
use super::lines::{self, Columns};
use super::schema::{Layout, LogSchema};
use crate::parse::{parse_line, ParseContext};
use crate::time::{day_name, now_nanos, NANOS_PER_DAY};

/// Doc-store block of a compacted partition: zstd finds more to share in
/// a larger block (measured in docs/index-size.md); reading one hit then
/// decompresses up to this much.
const COMPACT_BLOCK_BYTES: usize = 1 << 20;

/// A partition rebuilt beside the live one, waiting to be swapped in.
#[derive(Debug)]
pub struct Prepared {
    pub tenant: String,
    pub day: i64,
    pub shard: u32,
    dir: PathBuf,
    /// The partition's segments and payload the work was done from.
    snapshot: Vec<SegmentId>,
    payload: Option<String>,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Done,
    /// The partition took new lines (or was deleted) while it was being
    /// compacted: nothing was replaced.
    Changed,
}

/// One partition's outcome, for progress reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartitionReport {
    pub tenant: String,
    pub day: String,
    pub shard: u32,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A whole compaction run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Partitions looked at.
    pub partitions: u64,
    /// Partitions rewritten (the others were compacted already).
    pub compacted: u64,
    /// Bytes of the index directory before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn read_payload(partition: &Partition) -> Result<(tantivy::IndexMeta, CommitPayload)> {
    let metas = partition
        .index
        .load_metas()
        .context("loading index metas")?;
    let payload = match &metas.payload {
        Some(json) => serde_json::from_str(json).with_context(|| {
            format!(
                "bad commit payload in {}/{}",
                partition.tenant,
                day_name(partition.day)
            )
        })?,
        None => CommitPayload::default(),
    };
    Ok((metas, payload))
}

/// Whether compacting `partition` would change it.
pub fn needed(partition: &Partition) -> Result<bool> {
    let (metas, payload) = read_payload(partition)?;
    if metas.segments.is_empty() {
        return Ok(false);
    }
    Ok(!(payload.compacted && metas.segments.len() == 1 && partition.schema.layout.split_words()))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Builds the compacted copy of `partition` beside it; `None` when it is
/// compact already.
pub fn prepare(
    catalog: &Catalog,
    partition: &Partition,
    zstd_level: i32,
) -> Result<Option<Prepared>> {
    if !needed(partition)? {
        return Ok(None);
    }
    let (metas, payload) = read_payload(partition)?;
    let name = format!("{}/{}", partition.tenant, day_name(partition.day));
    let live = catalog.partition_dir(&partition.tenant, partition.day, partition.shard);
    let target = sibling(&live, ".compacting");
    remove_if_present(&target)?;
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let bytes_before = dir_bytes(&live)?;
    let snapshot: Vec<SegmentId> = metas.segments.iter().map(|m| m.id()).collect();
    // A V1 partition is first rewritten in the current layout beside it.
    let migrated = match partition.schema.layout {
        Layout::V2 | Layout::V3 => None,
        Layout::V1 => Some(migrate(
            catalog,
            partition,
            &metas,
            &sibling(&live, ".migrating"),
        )?),
    };
    let segments: Vec<tantivy::Segment> = match &migrated {
        Some(index) => index.searchable_segments()?,
        None => metas
            .segments
            .iter()
            .map(|m| partition.index.segment(m.clone()))
            .collect(),
    };
    let filters = segments.iter().map(|_| None).collect();
    let directory =
        MmapDirectory::open(&target).with_context(|| format!("opening {}", target.display()))?;
    let merged = tantivy::indexer::merge_filtered_segments(
        &segments,
        IndexSettings {
            docstore_compression: zstd(zstd_level),
            docstore_blocksize: COMPACT_BLOCK_BYTES,
            ..live_settings()
        },
        filters,
        directory,
    )
    .with_context(|| format!("merging the segments of {name}"))?;
    drop(segments);
    if migrated.is_some() {
        remove_if_present(&sibling(&live, ".migrating"))?;
    }
    let mut meta = merged.load_metas()?;
    // The merge copies doc-store blocks as they are when the compressors
    // are of one kind: recompress them here, in larger blocks.
    for segment in &meta.segments {
        recompress_store(
            &merged,
            &target,
            segment.id(),
            segment.max_doc(),
            zstd_level,
        )
        .with_context(|| format!("recompressing the doc store of {name}"))?;
    }
    drop(merged);
    // New lines for this day (late ones) are written with the live
    // settings again; the compacted segment keeps its own compression.
    meta.index_settings = live_settings();
    meta.opstamp = metas.opstamp;
    meta.payload = Some(serde_json::to_string(&CommitPayload {
        wal_position: payload.wal_position,
        compacted: true,
    })?);
    write_meta(&target, &meta)?;
    Ok(Some(Prepared {
        tenant: partition.tenant.clone(),
        day: partition.day,
        shard: partition.shard,
        bytes_after: dir_bytes(&target)?,
        dir: target,
        snapshot,
        payload: metas.payload,
        bytes_before,
    }))
}

fn zstd(level: i32) -> Compressor {
    Compressor::Zstd(ZstdCompressor {
        compression_level: Some(level),
    })
}

/// Swaps a prepared copy in. The caller holds no writer of the partition
/// (it closed it, or it is the only owner of the catalog).
pub fn install(catalog: &Catalog, prepared: Prepared) -> Result<Installed> {
    let current = catalog.get(&prepared.tenant, prepared.day, prepared.shard);
    let unchanged = match &current {
        Some(partition) => {
            let metas = partition.index.load_metas()?;
            let ids: Vec<SegmentId> = metas.segments.iter().map(|m| m.id()).collect();
            ids == prepared.snapshot && metas.payload == prepared.payload
        }
        None => false,
    };
    if !unchanged {
        discard(prepared)?;
        return Ok(Installed::Changed);
    }
    let live = catalog.partition_dir(&prepared.tenant, prepared.day, prepared.shard);
    let replaced = sibling(&live, ".replaced");
    remove_if_present(&replaced)?;
    std::fs::rename(&live, &replaced)
        .with_context(|| format!("moving {} aside", live.display()))?;
    if let Err(e) = std::fs::rename(&prepared.dir, &live) {
        // Put the partition back as it was; the copy is dropped.
        std::fs::rename(&replaced, &live)
            .with_context(|| format!("moving {} back", live.display()))?;
        discard(prepared)?;
        return Err(e).with_context(|| format!("moving the compacted copy to {}", live.display()));
    }
    sync_dir(live.parent())?;
    catalog.reopen(&prepared.tenant, prepared.day, prepared.shard)?;
    // Searches holding the old files finish on them: they are unlinked,
    // not truncated.
    remove_if_present(&replaced)?;
    tracing::info!(
        tenant = %prepared.tenant,
        day = %day_name(prepared.day),
        bytes_before = prepared.bytes_before,
        bytes_after = prepared.bytes_after,
        "index partition compacted"
    );
    Ok(Installed::Done)
}

/// Drops a prepared copy that will not be installed.
pub fn discard(prepared: Prepared) -> Result<()> {
    remove_if_present(&prepared.dir)
}

/// Finishes or undoes what a crash left in a tenant's directory: a
/// partition moved aside but not replaced is moved back; copies being
/// built are deleted.
pub fn recover(tenant_dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(tenant_dir)
        .with_context(|| format!("listing {}", tenant_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".compacting") || name.ends_with(".migrating") {
            remove_if_present(&path)?;
        } else if let Some(live) = name.strip_suffix(".replaced") {
            let live = path.with_file_name(live);
            if live.join("meta.json").exists() {
                remove_if_present(&path)?;
            } else {
                remove_if_present(&live)?;
                std::fs::rename(&path, &live)
                    .with_context(|| format!("moving {} back", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Rewrites a V1 partition's lines in the current layout, into `dir`:
/// everything is in the stored line and the fast fields.
fn migrate(
    catalog: &Catalog,
    partition: &Partition,
    metas: &tantivy::IndexMeta,
    dir: &Path,
) -> Result<Index> {
    remove_if_present(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let schema: &LogSchema = &catalog.schema;
    let index = Index::builder()
        .schema(schema.schema.clone())
        .settings(live_settings())
        .create_in_dir(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(1, 128 * 1024 * 1024)
        .context("opening the migration writer")?;
    let old = &partition.schema;
    for meta in &metas.segments {
        let segment = tantivy::SegmentReader::open(&partition.index.segment(meta.clone()))?;
        let store = segment.get_store_reader(2)?;
        let columns = Columns::open(&segment)?;
        let times = segment.fast_fields().date("timestamp")?;
        let patterns = match old.pattern {
            Some(_) => segment.fast_fields().str("pattern")?,
            None => None,
        };
        for doc in segment.doc_ids_alive() {
            let stored: TantivyDocument = store.get(doc)?;
            let raw = lines::raw(old, &stored).unwrap_or_default();
            let timestamp = times
                .first(doc)
                .map_or(partition.day * NANOS_PER_DAY, |t| t.into_timestamp_nanos());
            let hint = lines::parser_of(columns.format(doc).as_deref());
            let event = hint.and_then(|hint| {
                parse_line(
                    raw.as_bytes(),
                    hint,
                    &ParseContext {
                        now_nanos: timestamp,
                    },
                )
                .ok()
            });
            let mut new = schema.document(
                event.as_ref(),
                raw,
                timestamp,
                columns.host(doc).as_deref().unwrap_or_default(),
                columns.source(doc).as_deref().unwrap_or_default(),
            );
            if let (Some(field), Some(pattern)) =
                (schema.pattern, first_str(patterns.as_ref(), doc))
            {
                new.add_text(field, pattern);
            }
            writer.add_document(new)?;
        }
    }
    writer.commit().context("committing the migrated lines")?;
    writer
        .wait_merging_threads()
        .context("finishing the migration writer")?;
    Ok(index)
}

fn first_str(column: Option<&tantivy::columnar::StrColumn>, doc: DocId) -> Option<String> {
    let column = column?;
    let ord = column.term_ords(doc).next()?;
    let mut out = String::new();
    column.ord_to_str(ord, &mut out).ok()?.then_some(out)
}

/// Rewrites a segment's doc store through the index's own directory
/// (which adds and checks tantivy's file footers), then renames it over
/// the old one. The temporary name left in the directory's list of files
/// is dropped by tantivy's next cleanup.
fn recompress_store(
    index: &Index,
    dir: &Path,
    segment: SegmentId,
    max_doc: u32,
    level: i32,
) -> Result<()> {
    let directory = index.directory();
    let name = PathBuf::from(format!("{}.store", segment.uuid_string()));
    let temporary = PathBuf::from(format!("{}.store.compacting", segment.uuid_string()));
    {
        let reader = StoreReader::open(directory.open_read(&name)?, 1)?;
        let mut writer = StoreWriter::new(
            directory.open_write(&temporary)?,
            zstd(level),
            COMPACT_BLOCK_BYTES,
            false,
        )?;
        for doc in 0..max_doc {
            writer.store_bytes(&reader.get_document_bytes(doc)?)?;
        }
        writer.close()?;
    }
    let file = std::fs::File::open(dir.join(&temporary))?;
    file.sync_all()?;
    std::fs::rename(dir.join(&temporary), dir.join(&name))?;
    Ok(())
}

/// `meta.json` as tantivy writes it, replaced atomically.
fn write_meta(dir: &Path, meta: &tantivy::IndexMeta) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(meta)?;
    json.push(b'\n');
    let temporary = dir.join("meta.json.compacting");
    std::fs::write(&temporary, &json)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, dir.join("meta.json"))?;
    sync_dir(Some(dir))
}

fn sync_dir(dir: Option<&Path>) -> Result<()> {
    if let Some(dir) = dir {
        crate::fsutil::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", path.display())),
    }
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Compacts every partition `wanted` (by tenant) with nobody else owning
/// the catalog's writers: tools and tests. A collector goes through
/// [`Compactor`].
pub fn compact_all(
    catalog: &Catalog,
    zstd_level: i32,
    wanted: &dyn Fn(&str) -> bool,
    progress: &mut dyn FnMut(&PartitionReport),
) -> Result<Summary> {
    run(catalog, zstd_level, wanted, progress, &mut |prepared| {
        install(catalog, prepared)
    })
}

fn run(
    catalog: &Catalog,
    zstd_level: i32,
    wanted: &dyn Fn(&str) -> bool,
    progress: &mut dyn FnMut(&PartitionReport),
    install: &mut dyn FnMut(Prepared) -> Result<Installed>,
) -> Result<Summary> {
    let mut summary = Summary {
        bytes_before: dir_bytes(catalog.root())?,
        ..Summary::default()
    };
    for partition in catalog.all() {
        if !wanted(&partition.tenant) {
            continue;
        }
        summary.partitions += 1;
        // A partition that keeps changing under the work (a day still
        // receiving lines) is tried a few times, then left for later.
        for _attempt in 0..3 {
            let Some(current) = catalog.get(&partition.tenant, partition.day, partition.shard)
            else {
                break;
            };
            let Some(prepared) = prepare(catalog, &current, zstd_level)? else {
                break;
            };
            let report = PartitionReport {
                tenant: prepared.tenant.clone(),
                day: day_name(prepared.day),
                shard: prepared.shard,
                bytes_before: prepared.bytes_before,
                bytes_after: prepared.bytes_after,
            };
            if install(prepared)? == Installed::Done {
                summary.compacted += 1;
                progress(&report);
                break;
            }
        }
    }
    summary.bytes_after = dir_bytes(catalog.root())?;
    Ok(summary)
}

/// What a compaction request reports, as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    Partition(PartitionReport),
    Done(Summary),
    Failed(String),
}

/// Compaction settings (`[index]`, see `IndexConfig`).
#[derive(Debug, Clone, Copy)]
pub struct CompactSettings {
    pub zstd_level: i32,
    /// Compact a day partition on its own this long after the day ended;
    /// `None`: only when asked.
    pub closed_after: Option<Duration>,
    /// How often to look for closed days.
    pub check_every: Duration,
}

type Wanted = Box<dyn Fn(&str) -> bool + Send>;

struct Request {
    wanted: Wanted,
    progress: SyncSender<Progress>,
}

/// The collector's compaction thread: compacts what it is asked to, and
/// closed days on its own, one partition at a time, at a low CPU
/// priority. Swaps go through the indexer ([`super::lifecycle`]).
pub struct Compactor {
    requests: SyncSender<Request>,
}

/// How long a swap may wait for the indexer.
const INSTALL_WAIT: Duration = Duration::from_secs(600);

impl Compactor {
    pub fn start(catalog: Arc<Catalog>, settings: CompactSettings) -> Result<Arc<Compactor>> {
        let (requests, inbox) = sync_channel::<Request>(16);
        std::thread::Builder::new()
            .name("nightowl-compact".into())
            .spawn(move || worker(&catalog, settings, &inbox))
            .context("starting the compaction thread")?;
        Ok(Arc::new(Compactor { requests }))
    }

    /// Compacts every partition of the tenants `wanted` accepts; the
    /// receiver reports each partition, then the summary (or the error).
    pub fn compact(
        &self,
        wanted: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Receiver<Progress>> {
        let (progress, reports) = sync_channel(64);
        self.requests
            .send(Request {
                wanted: Box::new(wanted),
                progress,
            })
            .map_err(|_| anyhow::anyhow!("the compaction thread has stopped"))?;
        Ok(reports)
    }
}

fn worker(catalog: &Catalog, settings: CompactSettings, inbox: &Receiver<Request>) {
    lower_priority();
    loop {
        match inbox.recv_timeout(settings.check_every) {
            Ok(request) => {
                let progress = request.progress.clone();
                let outcome = run(
                    catalog,
                    settings.zstd_level,
                    &*request.wanted,
                    &mut |report| {
                        let _ = progress.send(Progress::Partition(report.clone()));
                    },
                    &mut |prepared| through_indexer(catalog, prepared),
                );
                let _ = request.progress.send(match outcome {
                    Ok(summary) => Progress::Done(summary),
                    Err(e) => Progress::Failed(format!("{e:#}")),
                });
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(after) = settings.closed_after {
                    if let Err(e) = closed_days(catalog, settings.zstd_level, after) {
                        tracing::warn!(error = %format!("{e:#}"), "compacting closed days failed; trying again later");
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Compacts the partitions of days that ended `after` ago or more.
fn closed_days(catalog: &Catalog, zstd_level: i32, after: Duration) -> Result<()> {
    let after = i64::try_from(after.as_nanos()).unwrap_or(i64::MAX);
    let now = now_nanos();
    for partition in catalog.all() {
        let day_end = (partition.day + 1).saturating_mul(NANOS_PER_DAY);
        if now.saturating_sub(day_end) < after || !needed(&partition)? {
            continue;
        }
        if let Some(prepared) = prepare(catalog, &partition, zstd_level)? {
            through_indexer(catalog, prepared)?;
        }
    }
    Ok(())
}

fn through_indexer(catalog: &Catalog, prepared: Prepared) -> Result<Installed> {
    let answer = catalog.lifecycle.request_install(prepared)?;
    match answer.recv_timeout(INSTALL_WAIT) {
        Ok(outcome) => outcome.map_err(|e| anyhow::anyhow!(e)),
        Err(_) => anyhow::bail!(
            "the indexer did not swap the compacted partition in within {} s",
            INSTALL_WAIT.as_secs()
        ),
    }
}

/// Compaction yields the CPU to ingest and search.
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; on Linux
    // PRIO_PROCESS with a thread id changes that thread alone.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::query::tests::{lines, QUERIES};
    use crate::index::search::{count, search, Hit, TimeRange};
    use crate::parse::Format;
    use tantivy::IndexWriter;

    const DAY: i64 = 20_000;
    const ALL: TimeRange = TimeRange {
        since: DAY * NANOS_PER_DAY,
        until: (DAY + 1) * NANOS_PER_DAY,
    };

    /// Adds the fixture lines to a partition in `commits` commits, each
    /// line with a pattern id of its own kind.
    fn fill(schema: &LogSchema, index: &Index, lines: &[String], commits: usize) {
        let mut writer: IndexWriter = index
            .writer_with_num_threads(1, 30_000_000)
            .expect("writer");
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        let ctx = ParseContext {
            now_nanos: DAY * NANOS_PER_DAY,
        };
        let per_commit = lines.len().div_ceil(commits);
        for (i, line) in lines.iter().enumerate() {
            let event = parse_line(line.as_bytes(), Format::Auto, &ctx).ok();
            let at = DAY * NANOS_PER_DAY + i as i64 * 1_000_000;
            let mut doc = schema.document(event.as_ref(), line, at, "web-1", "/var/log/x");
            if let Some(field) = schema.pattern {
                doc.add_text(field, format!("{:012x}", i % 7));
            }
            writer.add_document(doc).expect("adds");
            if (i + 1) % per_commit == 0 {
                writer.commit().expect("commits");
            }
        }
        writer.commit().expect("commits");
        writer.wait_merging_threads().expect("merges");
    }

    type Answers = Vec<(String, u64, Vec<Hit>)>;

    fn answers(catalog: &Catalog) -> Answers {
        let mut queries: Vec<&str> = QUERIES.to_vec();
        queries.push("pattern:000000000003");
        queries
            .into_iter()
            .map(|q| {
                let n = count(catalog, "t", q, ALL).unwrap_or_else(|e| panic!("{q}: {e}"));
                let hits =
                    search(catalog, "t", q, ALL, 5000).unwrap_or_else(|e| panic!("{q}: {e}"));
                (q.to_string(), n, hits)
            })
            .collect()
    }

    fn segments(partition: &Partition) -> usize {
        partition
            .index
            .searchable_segment_metas()
            .expect("metas")
            .len()
    }

    #[test]
    fn compaction_changes_no_answer_and_leaves_one_recompressed_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let partition = catalog.get_or_create("t", DAY, 0).expect("partition");
        fill(&partition.schema, &partition.index, &lines(), 4);
        partition.reader.reload().expect("reloads");
        assert_eq!(segments(&partition), 4);
        assert!(needed(&partition).expect("reads"));
        let before = answers(&catalog);
        assert!(before.iter().any(|(_, n, _)| *n > 0));
        let store_before: u64 = {
            let usage = partition.reader.searcher().space_usage().expect("usage");
            usage
                .segments()
                .iter()
                .map(|s| s.store().total().get_bytes())
                .sum()
        };

        let mut reported = Vec::new();
        let summary = compact_all(&catalog, 9, &|_| true, &mut |p| reported.push(p.clone()))
            .expect("compacts");
        assert_eq!((summary.partitions, summary.compacted), (1, 1));
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].day, day_name(DAY));
        assert!(summary.bytes_after < summary.bytes_before, "{summary:?}");
        let compacted = catalog.get("t", DAY, 0).expect("still there");
        assert_eq!(segments(&compacted), 1);
        assert!(!needed(&compacted).expect("reads"));
        assert_eq!(answers(&catalog), before, "same answers after compaction");
        // The stored lines are in the compacted blocks, and no file of the
        // work is left beside the partition.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("t"))
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![day_name(DAY)]);
        let store = |p: &Partition| -> u64 {
            let usage = p.reader.searcher().space_usage().expect("usage");
            usage
                .segments()
                .iter()
                .map(|s| s.store().total().get_bytes())
                .sum()
        };
        assert!(
            store(&compacted) < store_before,
            "recompressed: {} bytes, {store_before} before",
            store(&compacted)
        );

        // Nothing to do a second time; after new lines, there is again.
        let again = compact_all(&catalog, 9, &|_| true, &mut |_| {}).expect("compacts");
        assert_eq!((again.partitions, again.compacted), (1, 0));
        let mut writer: IndexWriter = compacted.index.writer(15_000_000).expect("writer");
        writer
            .add_document(compacted.schema.document(
                None,
                "late line",
                DAY * NANOS_PER_DAY + 5,
                "h",
                "s",
            ))
            .expect("adds");
        writer.commit().expect("commits");
        drop(writer);
        assert!(needed(&compacted).expect("reads"));
    }

    #[test]
    fn a_v1_partition_is_rewritten_in_the_current_layout_with_the_same_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = LogSchema::v1();
        {
            let path = dir.path().join("t").join(day_name(DAY));
            std::fs::create_dir_all(&path).expect("dir");
            let index = Index::create_in_dir(&path, v1.schema.clone()).expect("v1 index");
            fill(&v1, &index, &lines(), 3);
        }
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let old = catalog.get("t", DAY, 0).expect("v1 partition");
        assert_eq!(old.schema.layout, Layout::V1);
        let before = answers(&catalog);
        let summary = compact_all(&catalog, 9, &|_| true, &mut |_| {}).expect("compacts");
        assert_eq!(summary.compacted, 1);
        let new = catalog.get("t", DAY, 0).expect("partition");
        assert_eq!(new.schema.layout, Layout::V3);
        assert_eq!(segments(&new), 1);
        assert_eq!(answers(&catalog), before, "same answers after the rewrite");
        drop((old, new, catalog));
        let reopened = Catalog::open(dir.path()).expect("reopens");
        assert_eq!(
            reopened.get("t", DAY, 0).expect("partition").schema.layout,
            Layout::V3
        );
    }

    #[test]
    fn a_partition_that_took_lines_meanwhile_is_left_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(dir.path()).expect("catalog");
        let partition = catalog.get_or_create("t", DAY, 0).expect("partition");
        let lines = lines();
        fill(&partition.schema, &partition.index, &lines[..200], 2);
        let prepared = prepare(&catalog, &partition, 3)
            .expect("prepares")
            .expect("work");
        let copy = prepared.dir.clone();
        assert!(copy.join("meta.json").exists());
        fill(&partition.schema, &partition.index, &lines[200..300], 1);
        assert_eq!(
            install(&catalog, prepared).expect("installs"),
            Installed::Changed
        );
        assert!(!copy.exists(), "the copy is dropped");
        partition.reader.reload().expect("reloads");
        assert_eq!(count(&catalog, "t", "*", ALL).expect("counts"), 300);
    }

    #[test]
    fn recovery_finishes_or_undoes_a_swap_cut_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenant = dir.path().join("t");
        let with_meta = |name: &str| {
            std::fs::create_dir_all(tenant.join(name)).expect("dir");
            std::fs::write(tenant.join(name).join("meta.json"), name).expect("meta");
        };
        // Moved aside, the copy not moved in yet: the old one comes back.
        with_meta("2024-01-01.replaced");
        with_meta("2024-01-01.compacting");
        // Both moves done: the old one goes.
        with_meta("2024-01-02");
        with_meta("2024-01-02.replaced");
        with_meta("2024-01-03.p0.migrating");
        recover(&tenant).expect("recovers");
        let mut names: Vec<String> = std::fs::read_dir(&tenant)
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["2024-01-01", "2024-01-02"]);
        let meta = |name: &str| {
            std::fs::read_to_string(tenant.join(name).join("meta.json")).expect("meta")
        };
        assert_eq!(meta("2024-01-01"), "2024-01-01.replaced");
        assert_eq!(meta("2024-01-02"), "2024-01-02");
    }
}
