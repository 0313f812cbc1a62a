//! `nightowl indexer --kafka BROKERS`, wired in one place: the node's
//! shared setup, the rules and their firings' forwarder to the alerts
//! topic, the consumer thread and its shards (`kafka/indexer.rs`), and the
//! HTTPS API beside.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::node::{self, Node};
use crate::alert::service::FiringSink;
use crate::api;
use crate::config::CollectorConfig;
use crate::detect::reload::{self, RuleSet, RulesStatus};
use crate::detect::RecentFirings;
use crate::kafka::indexer::{consume, Fault, IndexerContext, ShardFactory, Shards};
use crate::kafka::ownership::{self, OwnershipLog};
use crate::kafka::rekey::RekeyProducer;
use crate::kafka::state::StateStore;

/// How many partitions `topic` has (for the rekey topic: the modulus of
/// every routed key, the same for every indexer).
fn partitions_of<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<u32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("reading the metadata of topic {topic}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
    Ok(partitions as u32)
}

/// Runs the indexer role until SIGTERM/ctrl-c.
pub async fn run(config: CollectorConfig) -> Result<()> {
    let node = Node::start(&config)?;
    let metrics = Arc::clone(&node.metrics);
    let catalog = Arc::clone(&node.catalog);
    let cipher = node::wal_cipher(&config)?;
    let rules_status = Arc::new(RulesStatus::for_source(&config.rules.source()));
    rules_status.audit_to(Arc::clone(&node.audit));
    let mut forwarder = None;
    let mut firings = None;
    let mut rules = None;
    let mut reloader = None;
    let (to_consumer, reloads) = std::sync::mpsc::sync_channel::<RuleSet>(1);
    let source = config.rules.source();
    if source.any() {
        let set = node::load_rules(&config, &source)?;
        let options = set.options;
        metrics.rules.loaded.set(set.engine.rule_count() as i64);
        rules_status.set_rules(set.rules, false);
        rules = Some((Arc::new(set.specs), options));
        let (sink, rx) = FiringSink::channel(1024, Arc::clone(&metrics));
        forwarder = Some(crate::kafka::alerts::spawn_forwarder(&config.kafka, rx)?);
        firings = Some(sink);
        reloader = node::spawn_reloader(
            &config,
            source,
            options,
            to_consumer,
            Arc::clone(&rules_status),
            Arc::clone(&metrics),
        )?;
    }
    tokio::spawn(reload::forward_sighup(
        reloader.as_ref().map(|r| r.trigger()),
    )?);
    config.kafka.ensure_topics().await?;
    let has_rules = rules.is_some();

    let recent = Arc::new(RecentFirings::new(1000));
    let me = ownership::identity(&config.data_dir)?;
    let ownership = OwnershipLog::open(&config.kafka, me.clone())?;
    let ownership_partitions = ownership.partitions();
    tracing::info!(identity = %me, "indexer identity (kafka/identity under the data dir)");
    let shards = Arc::new(Mutex::new(Shards::new(
        ShardFactory {
            catalog: Arc::clone(&catalog),
            data_dir: config.data_dir.clone(),
            index: config.index.clone(),
            kafka: config.kafka.clone(),
            metrics: Arc::clone(&metrics),
            recent: Arc::clone(&recent),
            firings,
            rules,
            rules_status: Arc::clone(&rules_status),
            rekey_partitions: 0,
            patterns: Some(node::open_patterns(&config, &catalog)?),
        },
        config.kafka.topic.clone(),
        config.kafka.rekey_topic.clone(),
        ownership,
        Fault::from_env()?,
    )));
    let consumer: BaseConsumer<IndexerContext> = config
        .kafka
        .group_client(&config.kafka.group)?
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .create_with_context(IndexerContext {
            shards: Arc::clone(&shards),
        })
        .context("creating the Kafka consumer")?;
    let lines = partitions_of(&consumer, &config.kafka.topic)?;
    let per_lines_partition = |topic: &str, partitions: u32| {
        anyhow::ensure!(
            partitions >= lines,
            "topic {topic} has {partitions} partitions and {} has {lines}: it needs one per \
             lines partition (docs/kafka.md, \"Topics\")",
            config.kafka.topic
        );
        Ok(())
    };
    per_lines_partition(&config.kafka.ownership_topic, ownership_partitions as u32)?;
    if has_rules {
        // The rules that run in the line shards keep their state in a
        // changelog per lines partition (docs/kafka.md, "Rule state across
        // rebalances").
        let topic = &config.kafka.lines_state_topic;
        per_lines_partition(topic, partitions_of(&consumer, topic)?)?;
        shards
            .lock()
            .map_err(|_| anyhow::anyhow!("the shards' lock is poisoned"))?
            .keep_line_state(StateStore::new(&config.kafka, topic)?);
    }
    let mut topics = vec![config.kafka.topic.as_str()];
    if config.kafka.rekey && has_rules {
        // Rules keyed across sources: this indexer owns some of their keys
        // (the rekey partitions the group gives it), and its shards send
        // the lines of such rules to the keys' owners.
        let partitions = partitions_of(&consumer, &config.kafka.rekey_topic)?;
        let producer = RekeyProducer::new(&config.kafka, partitions)?;
        let state = StateStore::new(&config.kafka, &config.kafka.rekey_state_topic)?;
        shards
            .lock()
            .map_err(|_| anyhow::anyhow!("the shards' lock is poisoned"))?
            .rekey_to(producer, state);
        topics.push(config.kafka.rekey_topic.as_str());
    }
    // Before the API serves and before a line is read: lines another
    // indexer indexed again while this one was down are dropped here.
    crate::kafka::indexer::hold_at_start_gate();
    shards
        .lock()
        .map_err(|_| anyhow::anyhow!("the shards' lock is poisoned"))?
        .repair_at_start(&consumer)?;
    consumer
        .subscribe(&topics)
        .with_context(|| format!("subscribing to {topics:?}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let consumer_thread = {
        let (stop, shards) = (Arc::clone(&stop), Arc::clone(&shards));
        let commit_every = Duration::from_millis(config.index.commit_interval_ms.max(10));
        std::thread::Builder::new()
            .name("nightowl-consume".into())
            .spawn(move || consume(consumer, shards, cipher, reloads, stop, commit_every))?
    };

    let (api_listener, api_tls) = node.bind_api(&config).await?;
    let api_addr = api_listener.local_addr()?;
    let refusals = crate::refusals::Refusals::new(Arc::clone(&node.audit));
    let state = node.api_state(
        &config,
        node::StageParts {
            firings: recent,
            alerts: None,
            rules: rules_status,
            bulk: None,
            refusals,
            backups: None,
        },
    )?;
    let api_task = tokio::spawn(api::serve(api_listener, api_tls, state));
    println!("nightowl: CA certificate: {}", node.ca.display());
    println!(
        "nightowl: indexer in group {} on {} topic {}",
        config.kafka.group,
        config.kafka.brokers.as_deref().unwrap_or_default(),
        config.kafka.topic
    );
    println!("nightowl: HTTPS API on https://{api_addr}");
    let watchdog_task = node::ready();

    let consumer_watch = tokio::task::spawn_blocking(move || consumer_thread.join());
    tokio::pin!(consumer_watch);
    let ended = tokio::select! {
        _ = node::shutdown_signal() => None,
        joined = &mut consumer_watch => Some(joined),
    };
    stop.store(true, Ordering::Release);
    api_task.abort();
    if let Some(task) = watchdog_task {
        task.abort();
    }
    let _ = api_task.await;
    let joined = match ended {
        Some(joined) => joined,
        None => consumer_watch.await,
    };
    // The shard factory holds the last firing sink: once it is gone the
    // forwarder flushes and ends.
    drop(shards);
    if let Some(forwarder) = forwarder {
        let _ = tokio::task::spawn_blocking(move || forwarder.join()).await;
    }
    node.audit_tasks.finish().await;
    match joined {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => anyhow::bail!("the consumer thread panicked"),
        Err(e) => Err(anyhow::anyhow!("joining the consumer thread: {e}")),
    }
}
