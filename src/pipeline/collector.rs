//! The collector, wired in one place, back to front:
//! indexer ← sequencer (WAL) ← agent listener, plus the HTTPS API beside.
//!
//! Bounded queues everywhere: a slow indexer fills the sequencer→indexer
//! queue, which stalls the sequencer, which fills the connections' queue,
//! which stops the connections reading: agents see backpressure, memory
//! stays flat.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::node::{self, Node};
use crate::api;
use crate::config::CollectorConfig;
use crate::detect::reload::{self, RulesStatus};
use crate::detect::RecentFirings;
use crate::index::writer::{Downstream, LiveRules};
use crate::index::{writer, Catalog, Indexer};
use crate::ingest::{self, Durable, IngestRecord, Sequencer};
use crate::telemetry::Metrics;
use crate::transport::server::AgentServer;
use crate::transport::tls::{self, Versions};
use crate::wal::{Wal, WalOptions};

pub async fn run_collector(config: CollectorConfig) -> Result<()> {
    // Everything the collector writes is its own (the lock file and the
    // data dir it may create first included).
    crate::private_umask();
    // Held until the collector exits: one collector per data dir.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    // Back to front: the index (in the node), the alert stage, then the
    // durable log.
    let node = Node::start(&config)?;
    let metrics = Arc::clone(&node.metrics);
    let tokens = Arc::clone(&node.tokens);
    let audit = Arc::clone(&node.audit);
    let catalog = Arc::clone(&node.catalog);
    let admin_token_path = config.data_dir.join("admin.token");
    let recent_firings = Arc::new(RecentFirings::new(1000));
    let rules_status = Arc::new(RulesStatus::for_source(&config.rules.source()));
    // The alert stage: the indexer (or, with Kafka, the alerts topic)
    // hands it firings; it pages through the durable outbox. Bad receiver
    // config is bad input (exit 2).
    let crate::alert::service::Started {
        service: alert_service,
        sink: firing_sink,
        thread: alert_thread,
        outbox_task,
    } = crate::alert::service::start(
        &config.alerting,
        &config.data_dir,
        config.api_listen,
        Arc::clone(&metrics),
    )?;
    // Backups page through the alert stage like any rule.
    let backup_pager = firing_sink.clone();
    let (ingest, inbox) = ingest::queue(1024);
    let mut durable = match &config.kafka.brokers {
        Some(_) => DurableLog::start_kafka(&config, &catalog, inbox, firing_sink, &metrics).await?,
        None => DurableLog::start_wal(
            &config,
            &catalog,
            inbox,
            &ingest,
            firing_sink,
            &recent_firings,
            &rules_status,
            &metrics,
        )?,
    };

    let agent_listener = TcpListener::bind(config.agent_listen)
        .await
        .with_context(|| {
            format!(
                "binding the agent listener on {} (agent_listen in the config)",
                config.agent_listen
            )
        })?;
    let (api_listener, api_tls) = node.bind_api(&config).await?;
    // Agents and syslog senders may present client certificates (mTLS,
    // docs/mtls.md); the API keeps bearer tokens.
    let client_auth = config.tls.client_auth();
    let agent_tls = TlsAcceptor::from(tls::server_config_with(
        &node.cert,
        &node.key,
        Versions::Tls13Only,
        &[],
        client_auth.as_ref(),
    )?);

    let syslog_listener = match config.syslog.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the syslog listener on {addr}"))?,
        ),
        None => None,
    };
    let agent_addr = agent_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;
    // Already validated with the config; built once, shared by every connection.
    let redactor = if config.redact.enabled {
        let redactor = crate::redact::Redactor::new(&config.redact)
            .map_err(|e| crate::error::usage(format!("{e:#}")))?;
        Some(Arc::new(redactor))
    } else {
        tracing::warn!("[redact] enabled = false: secrets in lines are stored as sent");
        None
    };
    let refusals = crate::refusals::Refusals::new(Arc::clone(&audit));
    let bulk = Arc::new(crate::ingest::BulkIngest {
        ingest: ingest.clone(),
        refusals: Arc::clone(&refusals),
        redactor: redactor.clone(),
        metrics: Arc::clone(&metrics),
        max_line_bytes: config.limits.max_line_bytes,
        max_body_bytes: config.limits.max_bulk_bytes,
    });
    let agent_server = Arc::new(AgentServer {
        acceptor: agent_tls,
        tokens: Arc::clone(&tokens),
        ingest,
        limits: config.limits.connection(),
        metrics: Arc::clone(&metrics),
        redactor,
        redact_rules: serde_json::to_string(&config.redact)
            .context("encoding the [redact] rules for agents")?,
        refusals: Arc::clone(&refusals),
        store_id: durable.store_id.clone(),
    });
    tokens.audit_to(Arc::clone(&audit));
    rules_status.audit_to(Arc::clone(&audit));
    let backups = crate::backup::Backups::new(
        &config.data_dir,
        config.backup.clone(),
        crate::backup::Parts {
            catalog: Arc::clone(&catalog),
            alerts: Some(Arc::clone(&alert_service)),
            audit: Arc::clone(&audit),
            metrics: Arc::clone(&metrics),
            pager: Some(backup_pager),
            rules: rule_engine_factory(&config),
        },
    );
    // With Kafka the lines are indexed elsewhere: nothing here to cut.
    let kafka = config.kafka.brokers.is_some();
    if kafka && (config.backup.to.is_some() || config.backup.schedule.is_some()) {
        return Err(crate::error::usage(
            "[backup] needs the embedded collector: with --kafka the indexers hold the index (back up their data dirs)",
        ));
    }
    let backup_task = crate::backup::schedule::start(&backups)?;
    let api_state = node.api_state(
        &config,
        node::StageParts {
            firings: recent_firings,
            alerts: Some(alert_service),
            rules: rules_status,
            bulk: Some(Arc::clone(&bulk)),
            refusals: Arc::clone(&refusals),
            backups: (!kafka).then_some(backups),
        },
    )?;
    let syslog_task = match syslog_listener {
        Some(listener) => {
            println!(
                "nightowl: syslog listener (TLS, RFC 5425) on {}",
                listener.local_addr()?
            );
            let server = Arc::new(crate::transport::syslog::SyslogServer {
                acceptor: TlsAcceptor::from(tls::server_config_with(
                    &node.cert,
                    &node.key,
                    Versions::Tls12And13,
                    &[],
                    client_auth.as_ref(),
                )?),
                tokens: Arc::clone(&tokens),
                sink: Arc::clone(&bulk),
                handshake_timeout: std::time::Duration::from_secs(
                    config.limits.handshake_timeout_secs,
                ),
            });
            Some(tokio::spawn(server.serve(listener)))
        }
        None => None,
    };
    // The listeners' tasks now hold the only ingest handles: when they are
    // aborted at shutdown the sequencer sees the queue close and finishes.
    drop(bulk);
    let agent_task = tokio::spawn(agent_server.serve(agent_listener));
    let refusals_task = tokio::spawn(Arc::clone(&refusals).run());
    let api_task = tokio::spawn(api::serve(api_listener, api_tls, api_state));

    println!("nightowl: CA certificate: {}", node.ca.display());
    println!("nightowl: admin token: {}", admin_token_path.display());
    println!(
        "nightowl: audit log {} keyed by {}; checkpoints signed by ed25519 key {}",
        audit.path().display(),
        audit.key_path().display(),
        audit.public_key()
    );
    println!("nightowl: agent listener (TLS 1.3) on {}", agent_addr);
    println!("nightowl: HTTPS API on https://{}", api_addr);
    let watchdog_task = node::ready();

    let failure = tokio::select! {
        _ = node::shutdown_signal() => None,
        stopped = &mut durable.ingest_done => Some(format!("ingest stopped: {stopped:?}")),
    };
    tracing::info!("shutting down: closing listeners, draining ingest, committing the index");
    agent_task.abort();
    api_task.abort();
    if let Some(task) = backup_task {
        task.abort();
    }
    if let Some(task) = watchdog_task {
        task.abort();
    }
    if let Some(task) = syslog_task {
        task.abort();
        let _ = task.await;
    }
    let _ = agent_task.await;
    let _ = api_task.await;
    refusals_task.abort();
    // The counts of the last window go to the audit log too.
    let _ = tokio::task::spawn_blocking(move || refusals.flush()).await;
    durable.finish(failure.is_some()).await?;
    // The indexer (or the pager) held the last firing sink: the alert
    // thread persists its state and ends; undelivered pages stay in the
    // outbox for next start.
    let _ = tokio::task::spawn_blocking(move || alert_thread.join()).await;
    outbox_task.abort();
    // Last: every entry is written, so the final checkpoint covers them all.
    node.audit_tasks.finish().await;
    if let Some(failure) = failure {
        bail!(failure);
    }
    Ok(())
}

/// Where acked batches are durable: the WAL with the local indexer behind
/// it (the embedded default), or Kafka with the indexers elsewhere.
struct DurableLog {
    /// Ends when ingest stops by itself: a WAL failure, a Kafka log error.
    ingest_done: tokio::task::JoinHandle<String>,
    /// `DATA_DIR/store-id`, told to agents with their offsets; `None` in
    /// Kafka mode (the front's offsets are not exact).
    store_id: Option<String>,
    rest: Backend,
}

enum Backend {
    Wal {
        indexer_thread: std::thread::JoinHandle<Result<()>>,
        reloader: Option<reload::Reloader>,
        sighup_task: tokio::task::JoinHandle<()>,
    },
    Kafka {
        pager: crate::kafka::alerts::Pager,
        sighup_task: tokio::task::JoinHandle<()>,
        lifecycle_task: tokio::task::JoinHandle<()>,
    },
}

impl DurableLog {
    #[allow(clippy::too_many_arguments)]
    fn start_wal(
        config: &CollectorConfig,
        catalog: &Arc<Catalog>,
        inbox: ingest::Inbox,
        ingest: &ingest::Ingest,
        firing_sink: crate::alert::service::FiringSink,
        recent_firings: &Arc<RecentFirings>,
        rules_status: &Arc<RulesStatus>,
        metrics: &Arc<Metrics>,
    ) -> Result<DurableLog> {
        let data_dir = &config.data_dir;
        let store_id = ingest::load_or_create_store_id(data_dir)?;
        let catalog = Arc::clone(catalog);
        let recent_firings = Arc::clone(recent_firings);
        let rules_status = Arc::clone(rules_status);
        let metrics = Arc::clone(metrics);
        let wal = Wal::open(
            &config.wal_dir(),
            WalOptions {
                segment_bytes: config.wal.segment_bytes,
            },
        )
        .context("opening the write-ahead log")?;
        let wal_cipher = node::wal_cipher(config)?;
        let start = writer::load_start(&config.index_dir(), wal.start_position())?;
        // A checkpoint at the end of a deleted segment is the next segment's
        // base, an alias of its first record that `read_from` accepts (see the
        // WAL's module docs); only a position below the oldest base is gone.
        if start.wal_position < wal.start_position() && wal.read_from(start.wal_position).is_err() {
            bail!(
                "index checkpoint at WAL position {} but the oldest WAL record starts at {}: WAL segments were removed by hand",
                start.wal_position,
                wal.start_position()
            );
        }
        let checkpoint = Arc::new(AtomicU64::new(start.wal_position));
        let patterns = node::open_patterns(config, &catalog)?;
        let indexed = start.wal_position;
        let mut replay_from = indexed;
        let mut reloader = None;
        let mut rules = None;
        // With rules, WAL segments are kept back to the rule snapshot too.
        let mut wal_floor = Arc::clone(&checkpoint);
        let source = config.rules.source();
        if source.any() {
            let mut set = node::load_rules(config, &source)?;
            let options = set.options;
            let (to_indexer, reloads) = std::sync::mpsc::sync_channel(1);
            wal_floor = Arc::new(AtomicU64::new(indexed));
            let live = reload::LiveState::open(
                data_dir,
                &mut set,
                indexed,
                &wal,
                std::time::Duration::from_millis(config.rules.snapshot_interval_ms),
                Arc::clone(&wal_floor),
                reloads,
                Arc::clone(&rules_status),
                Arc::clone(&metrics),
            )?;
            replay_from = replay_from.min(live.replay_from());
            rules = Some(LiveRules {
                engine: set.engine,
                recent: Arc::clone(&recent_firings),
                scratch: Vec::new(),
                live: Some(live),
                routed: Default::default(),
                evaluate_from: 0,
            });
            reloader = node::spawn_reloader(
                config,
                source,
                options,
                to_indexer,
                Arc::clone(&rules_status),
                Arc::clone(&metrics),
            )?;
        }
        let sighup = reload::forward_sighup(reloader.as_ref().map(|r| r.trigger()))?;
        let mut indexer = Indexer::new(
            Arc::clone(&catalog),
            config.index.clone(),
            config.index_dir(),
            start,
            Arc::clone(&checkpoint),
            Arc::clone(&metrics),
            Downstream {
                rules,
                alerts: Some(Box::new(firing_sink)),
                patterns: Some(patterns),
                shard: 0,
            },
        );
        let replayed = replay(&wal, wal_cipher.as_deref(), &mut indexer, replay_from)?;
        if replayed > 0 {
            tracing::info!(records = replayed, "replayed the WAL into the index");
        }
        let offsets = indexer.source_offsets().clone();
        indexer.on_checkpoint(ingest.checkpoint_notifier());
        let (to_indexer, from_sequencer) = std::sync::mpsc::sync_channel::<Durable>(64);
        let indexer_thread = std::thread::Builder::new()
            .name("nightowl-index".into())
            .spawn(move || indexer.run(from_sequencer))?;
        let sequencer_thread = Sequencer {
            wal,
            offsets,
            group_commit_bytes: config.wal.group_commit_bytes,
            to_indexer,
            checkpoint: wal_floor,
            metrics,
            cipher: wal_cipher,
            purged: Some({
                let catalog = Arc::clone(&catalog);
                Arc::new(move |tenant: &str, received: i64| {
                    catalog.lifecycle.purged(tenant, received)
                })
            }),
        }
        .spawn(inbox)?;
        Ok(DurableLog {
            store_id: Some(store_id),
            ingest_done: tokio::task::spawn_blocking(move || {
                format!("{:?}", sequencer_thread.join())
            }),
            rest: Backend::Wal {
                indexer_thread,
                reloader,
                sighup_task: tokio::spawn(sighup),
            },
        })
    }

    async fn start_kafka(
        config: &CollectorConfig,
        catalog: &Arc<Catalog>,
        inbox: ingest::Inbox,
        firing_sink: crate::alert::service::FiringSink,
        metrics: &Arc<Metrics>,
    ) -> Result<DurableLog> {
        if config.rules.dir.is_some() {
            tracing::warn!(
                "with --kafka the rules run on the indexers: [rules] of the collector is ignored"
            );
        }
        config.kafka.ensure_topics().await?;
        let cipher = node::wal_cipher(config)?;
        let log = crate::kafka::log::KafkaLog::new(
            &config.kafka,
            config.limits.max_frame_bytes.saturating_mul(4),
            Arc::clone(metrics),
            cipher,
        )?;
        let pager = crate::kafka::alerts::Pager::start(&config.kafka, firing_sink)?;
        // No rules here to reload; SIGHUP must still not end the process.
        let sighup = reload::forward_sighup(None)?;
        // The local index is empty (the indexers hold the lines), but a
        // purge asked here is answered here before it goes to the peers.
        let lifecycle_task = {
            let catalog = Arc::clone(catalog);
            tokio::spawn(async move {
                let mut checked = i64::MIN;
                loop {
                    if let Err(e) =
                        crate::index::lifecycle::maintain(&catalog, &mut checked, |_| Ok(()))
                    {
                        tracing::warn!(error = %format!("{e:#}"), "purge or retention failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            })
        };
        Ok(DurableLog {
            store_id: None,
            ingest_done: tokio::spawn(async move { format!("{:?}", log.run(inbox).await) }),
            rest: Backend::Kafka {
                pager,
                sighup_task: tokio::spawn(sighup),
                lifecycle_task,
            },
        })
    }

    /// After the listeners are gone: lets ingest drain (unless it already
    /// stopped), then the WAL's indexer commits, or the pager leaves.
    async fn finish(self, ingest_stopped: bool) -> Result<()> {
        if !ingest_stopped {
            let _ = self.ingest_done.await;
        }
        match self.rest {
            Backend::Wal {
                indexer_thread,
                reloader,
                sighup_task,
            } => {
                sighup_task.abort();
                drop(reloader);
                let indexed = tokio::task::spawn_blocking(move || indexer_thread.join())
                    .await
                    .context("joining the indexer")?;
                match indexed {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.context("indexer failed")),
                    Err(_) => bail!("indexer thread panicked"),
                }
            }
            Backend::Kafka {
                pager,
                sighup_task,
                lifecycle_task,
            } => {
                sighup_task.abort();
                lifecycle_task.abort();
                tokio::task::spawn_blocking(move || drop(pager))
                    .await
                    .context("stopping the pager")?;
                Ok(())
            }
        }
    }
}

/// Builds the collector's rule set afresh: a purge rewrites the rule state
/// in backups with it (`src/backup/purge.rs`).
fn rule_engine_factory(
    config: &CollectorConfig,
) -> Option<crate::backup::purge::RuleEngineFactory> {
    let source = config.rules.source();
    if !source.any() {
        return None;
    }
    let options = crate::detect::EngineOptions {
        max_keys_per_rule: config.rules.max_keys_per_rule,
    };
    Some(Arc::new(move || {
        reload::load_source_set(&source, options)
            .map(|set| set.engine)
            .map_err(|e| anyhow::anyhow!("loading the rules: {e}"))
    }))
}

/// Replays the WAL from `from` (the index checkpoint, or the rule
/// snapshot's position when that is older: such records are skipped by
/// the index partitions that hold them and only rebuild rule state).
fn replay(
    wal: &Wal,
    cipher: Option<&crate::wal::cipher::WalCipher>,
    indexer: &mut Indexer,
    from: crate::wal::Position,
) -> Result<u64> {
    let mut count = 0;
    for record in wal.read_from(from)? {
        let record = record.context("reading the WAL for replay")?;
        let payload = crate::wal::cipher::open_payload(cipher, record.payload.clone())
            .with_context(|| format!("WAL record at position {}", record.start))?;
        let decoded = IngestRecord::decode(payload)
            .map_err(|e| anyhow::anyhow!("WAL record at position {}: {e}", record.start))?;
        indexer.index(Durable {
            start: record.start,
            end: record.end,
            record: decoded,
            received: None,
        })?;
        count += 1;
    }
    indexer.commit()?;
    Ok(count)
}

/// Locks `DATA_DIR/collector.lock` (created with the data dir if need be)
/// for as long as the returned file is open. A second collector on the
/// same data dir stops here with a sentence, before it touches anything;
/// it used to fail later on a database lock, after creating files.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let path = data_dir.join("collector.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match crate::fsutil::lock_exclusive(&file) {
        Ok(()) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(crate::error::usage(format!(
            "another collector is using the data dir {} ({} is locked): stop it, or give this one \
             another --data-dir",
            data_dir.display(),
            path.display()
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("locking {}", path.display()))),
    }
}
