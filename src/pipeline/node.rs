//! What every server process of nightowl sets up the same way, collector
//! or Kafka indexer: the data dir, the audit log and its witnesses,
//! metrics, the TLS material, the token store, the index catalog, the WAL
//! key, the HTTPS API's listener and state, and the signals that stop it.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::alert::service::AlertService;
use crate::api::{self, ApiState};
use crate::audit::AuditLog;
use crate::auth::TokenStore;
use crate::backup::Backups;
use crate::config::CollectorConfig;
use crate::detect::builtin::RuleSource;
use crate::detect::reload::{self, Reloader, RuleSet, RulesStatus};
use crate::detect::{EngineOptions, RecentFirings};
use crate::index::compact::Compactor;
use crate::index::Catalog;
use crate::ingest::BulkIngest;
use crate::patterns::{PatternStore, SharedPatterns, StreamLimits};
use crate::refusals::Refusals;
use crate::telemetry::Metrics;
use crate::transport::tls::{self, Versions};
use crate::wal::cipher::WalCipher;

/// What the stages a process runs give the API: the alert service, bulk
/// ingest and backups exist only on a collector.
pub struct StageParts {
    pub firings: Arc<RecentFirings>,
    pub alerts: Option<Arc<AlertService>>,
    pub rules: Arc<RulesStatus>,
    pub bulk: Option<Arc<BulkIngest>>,
    pub refusals: Arc<Refusals>,
    pub backups: Option<Arc<Backups>>,
}

/// The parts shared by every stage of one process.
pub struct Node {
    pub audit: Arc<AuditLog>,
    /// The audit witnesses; finished last, so the final checkpoint covers
    /// every entry.
    pub audit_tasks: crate::audit::witness::Running,
    pub metrics: Arc<Metrics>,
    /// The server certificate and key, and the CA clients verify it with.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub tokens: Arc<TokenStore>,
    pub catalog: Arc<Catalog>,
    /// Compacts closed days in the background and on `index compact`; its
    /// swaps go through the stage that writes the index (`index/compact.rs`).
    pub compactor: Arc<Compactor>,
}

impl Node {
    /// In this order: the data dir, the audit log (a tampered one stops the
    /// start before anything else runs, exit 2, naming what is wrong), its
    /// witnesses, the TLS material, the tokens, the index catalog with
    /// each tenant's retention.
    pub fn start(config: &CollectorConfig) -> Result<Node> {
        crate::private_umask();
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let audit = Arc::new(AuditLog::open(data_dir, &config.audit.options())?);
        let audit_tasks = crate::audit::witness::start(&audit, &config.audit)?;
        let metrics = Arc::new(Metrics::default());
        let (cert, key, ca) = tls_material(config)?;
        let (tokens, _) = TokenStore::open_or_init(data_dir)?;
        let tokens = Arc::new(tokens);
        let catalog = Catalog::open(&config.index_dir())?;
        catalog.budget.set_total(config.index.memory_budget_bytes);
        for tenant in tokens.tenants() {
            catalog
                .lifecycle
                .set_retention(&tenant.name, tenant.retention_days);
        }
        let compactor = Compactor::start(Arc::clone(&catalog), config.index.compact_settings())?;
        Ok(Node {
            audit,
            audit_tasks,
            metrics,
            cert,
            key,
            ca,
            tokens,
            catalog,
            compactor,
        })
    }

    /// The HTTPS API's listener and its TLS (1.2 and 1.3, HTTP/1.1).
    pub async fn bind_api(&self, config: &CollectorConfig) -> Result<(TcpListener, TlsAcceptor)> {
        let listener = TcpListener::bind(config.api_listen)
            .await
            .with_context(|| format!("binding the HTTPS API on {}", config.api_listen))?;
        let acceptor = TlsAcceptor::from(tls::server_config(
            &self.cert,
            &self.key,
            Versions::Tls12And13,
            &[b"http/1.1"],
        )?);
        Ok((listener, acceptor))
    }

    /// What the API's handlers share: this node's parts and the ones the
    /// stages it runs hand in.
    pub fn api_state(&self, config: &CollectorConfig, stages: StageParts) -> Result<ApiState> {
        let StageParts {
            firings,
            alerts,
            rules,
            bulk,
            refusals,
            backups,
        } = stages;
        Ok(ApiState {
            catalog: Arc::clone(&self.catalog),
            tokens: Arc::clone(&self.tokens),
            metrics: Arc::clone(&self.metrics),
            firings,
            alerts,
            rules,
            audit: Arc::clone(&self.audit),
            bulk,
            cluster: api::fanout::Peers::from_config(&config.cluster, &self.ca)?,
            limits: api::limits::ApiLimits::new(&config.limits.api, &config.limits.query),
            refusals,
            redactor: Arc::new(
                crate::redact::Redactor::new(&config.redact)
                    .map_err(|e| crate::error::usage(format!("{e:#}")))?,
            ),
            compactor: Some(Arc::clone(&self.compactor)),
            backups,
        })
    }
}

/// The node's pattern store (`DATA_DIR/patterns/state.json`, saved on the
/// rule snapshot's interval), its templates and aliases published to the
/// catalog for searches. One per process: the embedded collector's indexer
/// and every shard of a Kafka indexer share it (`patterns/store.rs`).
pub fn open_patterns(config: &CollectorConfig, catalog: &Catalog) -> Result<SharedPatterns> {
    let mut store = PatternStore::open(
        config.data_dir.join("patterns").join("state.json"),
        StreamLimits::default(),
        std::time::Duration::from_millis(config.rules.snapshot_interval_ms),
    )?;
    store.publish(
        Arc::clone(&catalog.pattern_templates),
        &catalog.pattern_aliases,
    );
    Ok(SharedPatterns::new(store))
}

/// `[wal] encryption_key_file`, or `$NIGHTOWL_WAL_KEY_FILE`.
pub fn wal_key(config: &CollectorConfig) -> Option<PathBuf> {
    config
        .wal
        .encryption_key_file
        .clone()
        .or_else(|| std::env::var_os(crate::wal::cipher::KEY_FILE_ENV).map(Into::into))
}

/// The WAL key, if one is configured. A bad or missing key file is bad
/// input (exit 2), named.
pub fn wal_cipher(config: &CollectorConfig) -> Result<Option<Arc<WalCipher>>> {
    Ok(match wal_key(config) {
        Some(path) => Some(Arc::new(
            WalCipher::load(&path).map_err(|e| crate::error::usage(format!("{e:#}")))?,
        )),
        None => None,
    })
}

/// The server certificate, its key and the CA clients verify it with:
/// configured, or the dev CA generated under the data dir on first start.
pub fn tls_material(config: &CollectorConfig) -> Result<(PathBuf, PathBuf, PathBuf)> {
    Ok(match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), cert.clone()),
        _ => {
            let (paths, created) = tls::ensure_dev_material(&config.tls_dir())?;
            if created {
                tracing::info!(ca = %paths.ca.display(), "generated a dev CA and server certificate");
            }
            (paths.cert, paths.key, paths.ca)
        }
    })
}

/// The rules at start. Broken rule files are bad input (exit 2), named
/// file:line; on a reload they are rejected and the old rules stay.
pub fn load_rules(config: &CollectorConfig, source: &RuleSource) -> Result<RuleSet> {
    let options = EngineOptions {
        max_keys_per_rule: config.rules.max_keys_per_rule,
    };
    let set = reload::load_source_set(source, options).map_err(|e| {
        crate::error::usage(format!("loading rules from {}: {e:#}", source.describe()))
    })?;
    tracing::info!(rules = set.engine.rule_count(), from = %source.describe(), "detection rules loaded");
    Ok(set)
}

/// Reloads of a rules dir into `to` (on SIGHUP, and on changes with
/// `[rules] watch`); the embedded pack alone never changes: `None`.
pub fn spawn_reloader(
    config: &CollectorConfig,
    source: RuleSource,
    options: EngineOptions,
    to: SyncSender<RuleSet>,
    status: Arc<RulesStatus>,
    metrics: Arc<Metrics>,
) -> Result<Option<Reloader>> {
    if source.dir.is_none() {
        return Ok(None);
    }
    reload::spawn_reloader(source, options, config.rules.watch, to, status, metrics).map(Some)
}

/// Tells systemd the process is ready and starts its watchdog.
pub fn ready() -> Option<tokio::task::JoinHandle<()>> {
    println!("nightowl: ready");
    crate::systemd::notify_ready();
    crate::systemd::spawn_watchdog()
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
