//! The set of day partitions of every tenant: `index/<tenant>/<YYYY-MM-DD>/`.
//!
//! One tantivy index per tenant and day, and per shard where several
//! writers feed one node: a Kafka indexer writes each topic partition it
//! consumes into its own `<YYYY-MM-DD>.p<N>/` (shard N+1), because a tantivy
//! index has one writer and each shard commits its own offsets. Searches
//! see every shard of a day. Retention drops whole directories,
//! a search opens only the days its time range touches, and no query can
//! reach another tenant's files because it never opens them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, ReloadPolicy};

use super::lifecycle::Lifecycle;
use super::schema::LogSchema;
use crate::time::{day_name, parse_day_name};
use crate::wal::Position;

/// Stored in every tantivy commit of a partition: this partition holds
/// every line of every WAL record that starts below `wal_position`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CommitPayload {
    pub wal_position: Position,
    /// Written by compaction (`compact.rs`); a commit of new lines clears it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compacted: bool,
}

#[derive(Clone)]
pub struct Partition {
    pub tenant: String,
    pub day: i64,
    /// 0 for the embedded collector's single writer; Kafka partition + 1.
    pub shard: u32,
    pub index: Index,
    pub reader: IndexReader,
    /// The partition's own fields: it may have an older layout than new
    /// partitions (`schema.rs`).
    pub schema: Arc<LogSchema>,
}

impl Partition {
    pub fn committed_payload(&self) -> Result<CommitPayload> {
        let metas = self.index.load_metas().context("loading index metas")?;
        match metas.payload {
            Some(json) => serde_json::from_str(&json).with_context(|| {
                format!(
                    "bad commit payload in {}/{}",
                    self.tenant,
                    day_name(self.day)
                )
            }),
            None => Ok(CommitPayload::default()),
        }
    }
}

pub struct Catalog {
    root: PathBuf,
    /// The layout of partitions created now.
    pub schema: Arc<LogSchema>,
    /// Retention and purges (see `lifecycle.rs`).
    pub lifecycle: Lifecycle,
    /// Old ids of merged log patterns, to expand `pattern:<id>` queries
    /// (filled by the indexer, `src/patterns/alias.rs`).
    pub pattern_aliases: crate::patterns::PatternAliases,
    /// Pattern templates by id, for the pattern list (published by the
    /// indexer's miner, `src/patterns/templates.rs`).
    pub pattern_templates: Arc<crate::patterns::PatternTemplates>,
    /// Backups' requests for a consistent cut (`cut.rs`).
    pub cuts: super::cut::CutRequests,
    /// The node's indexing memory, shared by every writer of every
    /// indexer of this catalog (`budget.rs`); the node sets its size.
    pub budget: Arc<super::budget::IndexBudget>,
    tenants: RwLock<BTreeMap<String, TenantPartitions>>,
}

/// A tenant's partitions by (day, shard).
type TenantPartitions = BTreeMap<(i64, u32), Partition>;

/// `YYYY-MM-DD` for shard 0, `YYYY-MM-DD.p<shard - 1>` otherwise.
fn partition_name(day: i64, shard: u32) -> String {
    match shard {
        0 => day_name(day),
        s => format!("{}.p{}", day_name(day), s - 1),
    }
}

fn parse_partition_name(name: &str) -> Option<(i64, u32)> {
    match name.split_once(".p") {
        None => Some((parse_day_name(name)?, 0)),
        Some((day, kafka_partition)) => {
            let shard = kafka_partition.parse::<u32>().ok()?.checked_add(1)?;
            Some((parse_day_name(day)?, shard))
        }
    }
}

impl Catalog {
    /// Opens every partition found under `root`.
    pub fn open(root: &Path) -> Result<Arc<Catalog>> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        // A backup's links left by a crash hold merged-away segments' disk
        // space: nothing uses them any more.
        let staging = root.join(super::cut::STAGING_DIR);
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("removing {}", staging.display()))?;
        }
        let schema = Arc::new(LogSchema::new());
        let mut tenants: BTreeMap<String, TenantPartitions> = BTreeMap::new();
        for tenant_entry in read_dir_sorted(root)? {
            let Some(tenant) = tenant_entry
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if crate::auth::validate_tenant(&tenant).is_err() || !tenant_entry.is_dir() {
                continue;
            }
            super::compact::recover(&tenant_entry)?;
            for day_dir in read_dir_sorted(&tenant_entry)? {
                let Some((day, shard)) = day_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_partition_name)
                else {
                    continue;
                };
                if !day_dir.join("meta.json").exists() {
                    continue; // created but never committed: nothing to read
                }
                let partition = open_partition(&tenant, day, shard, &day_dir)?;
                tenants
                    .entry(tenant.clone())
                    .or_default()
                    .insert((day, shard), partition);
            }
        }
        Ok(Arc::new(Catalog {
            root: root.to_path_buf(),
            schema,
            lifecycle: Lifecycle::open(root)?,
            pattern_aliases: crate::patterns::PatternAliases::default(),
            pattern_templates: Default::default(),
            cuts: Default::default(),
            budget: Arc::new(super::budget::IndexBudget::new(
                super::IndexConfig::default().memory_budget_bytes,
            )),
            tenants: RwLock::new(tenants),
        }))
    }

    /// The index directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn partition_dir(&self, tenant: &str, day: i64, shard: u32) -> PathBuf {
        self.root.join(tenant).join(partition_name(day, shard))
    }

    /// The partition of `tenant` for `day` written by `shard`, created if needed.
    pub fn get_or_create(&self, tenant: &str, day: i64, shard: u32) -> Result<Partition> {
        if let Some(p) = self.get(tenant, day, shard) {
            return Ok(p);
        }
        let dir = self.partition_dir(tenant, day, shard);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let partition = if dir.join("meta.json").exists() {
            open_partition(tenant, day, shard, &dir)?
        } else {
            let index = Index::builder()
                .schema(self.schema.schema.clone())
                .settings(live_settings())
                .create_in_dir(&dir)
                .with_context(|| format!("creating index in {}", dir.display()))?;
            wrap_partition(tenant, day, shard, index)?
        };
        let mut tenants = self
            .tenants
            .write()
            .map_err(|_| anyhow::anyhow!("catalog lock poisoned"))?;
        let entry = tenants
            .entry(tenant.to_string())
            .or_default()
            .entry((day, shard))
            .or_insert(partition);
        Ok(entry.clone())
    }

    /// Opens a partition's directory again (after compaction replaced it)
    /// and serves it from now on.
    pub(crate) fn reopen(&self, tenant: &str, day: i64, shard: u32) -> Result<()> {
        let dir = self.partition_dir(tenant, day, shard);
        let partition = open_partition(tenant, day, shard, &dir)?;
        let mut tenants = self
            .tenants
            .write()
            .map_err(|_| anyhow::anyhow!("catalog lock poisoned"))?;
        tenants
            .entry(tenant.to_string())
            .or_default()
            .insert((day, shard), partition);
        Ok(())
    }

    pub fn get(&self, tenant: &str, day: i64, shard: u32) -> Option<Partition> {
        let tenants = self.tenants.read().ok()?;
        tenants.get(tenant)?.get(&(day, shard)).cloned()
    }

    /// Partitions of `tenant` overlapping `[from_day, to_day]`, newest day
    /// first, every shard of a day.
    pub fn partitions(&self, tenant: &str, from_day: i64, to_day: i64) -> Vec<Partition> {
        let Ok(tenants) = self.tenants.read() else {
            return Vec::new();
        };
        match tenants.get(tenant) {
            Some(days) if from_day <= to_day => days
                .range((from_day, 0)..=(to_day, u32::MAX))
                .rev()
                .map(|(_, p)| p.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Forgets `tenant`'s partitions of days before `before_day` (all of
    /// them with `None`) and deletes their directories. Only the indexer
    /// calls this, after closing the writers concerned. Searches that
    /// already hold a reader finish on the unlinked files.
    pub(crate) fn remove_partitions(&self, tenant: &str, before_day: Option<i64>) -> Result<u64> {
        let removed: Vec<(i64, u32)> = {
            let mut tenants = self
                .tenants
                .write()
                .map_err(|_| anyhow::anyhow!("catalog lock poisoned"))?;
            let Some(days) = tenants.get_mut(tenant) else {
                return Ok(0);
            };
            let doomed: Vec<(i64, u32)> = days
                .keys()
                .copied()
                .filter(|&(d, _)| before_day.is_none_or(|b| d < b))
                .collect();
            for day in &doomed {
                days.remove(day);
            }
            doomed
        };
        for &(day, shard) in &removed {
            let dir = self.partition_dir(tenant, day, shard);
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("deleting partition {}", dir.display()))?;
            tracing::info!(tenant, day = %day_name(day), "index partition deleted");
        }
        // Days created but never committed have a directory and no entry.
        if before_day.is_none() {
            let dir = self.root.join(tenant);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("deleting {}", dir.display()))?;
            }
        }
        Ok(removed.len() as u64)
    }

    /// Every partition of every tenant.
    pub fn all(&self) -> Vec<Partition> {
        let Ok(tenants) = self.tenants.read() else {
            return Vec::new();
        };
        tenants
            .values()
            .flat_map(|days| days.values().cloned())
            .collect()
    }
}

fn open_partition(tenant: &str, day: i64, shard: u32, dir: &Path) -> Result<Partition> {
    let index =
        Index::open_in_dir(dir).with_context(|| format!("opening index {}", dir.display()))?;
    wrap_partition(tenant, day, shard, index)
}

/// Document store settings of the segments ingest writes: cheap to
/// compress, since every line pays it; compaction recompresses harder.
pub fn live_settings() -> IndexSettings {
    IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(3),
        }),
        docstore_blocksize: 128 * 1024,
        ..IndexSettings::default()
    }
}

/// Decompressed doc-store blocks a reader keeps per segment: hits and
/// phrase checks read neighbouring lines; a compacted block is 1 MiB.
const DOC_STORE_CACHE_BLOCKS: usize = 4;

pub(crate) fn wrap_partition(
    tenant: &str,
    day: i64,
    shard: u32,
    index: Index,
) -> Result<Partition> {
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
        .try_into()
        .context("creating index reader")?;
    let schema = LogSchema::from_schema(index.schema()).with_context(|| {
        format!(
            "reading the schema of partition {tenant}/{}",
            partition_name(day, shard)
        )
    })?;
    Ok(Partition {
        tenant: tenant.to_string(),
        day,
        shard,
        schema: Arc::new(schema),
        index,
        reader,
    })
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    Ok(paths)
}
