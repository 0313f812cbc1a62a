//! The collector's configuration file (`--config nightowl.toml`).
//!
//! Every field has a default, so an empty file (or none) is the embedded
//! default. Unknown keys are rejected with the key's name and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub use crate::api::fanout::ClusterConfig;
pub use crate::index::IndexConfig;
use crate::transport::protocol::{DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_LINE_BYTES};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where everything lives: WAL, indexes, TLS material, tokens.
    /// Example: `data_dir = "/var/lib/nightowl"`. Default: `./nightowl-data`.
    pub data_dir: PathBuf,
    /// Agent protocol listener (TLS 1.3). Default `127.0.0.1:7400`.
    pub agent_listen: SocketAddr,
    /// HTTPS API and web page. Default `127.0.0.1:7443`.
    pub api_listen: SocketAddr,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub wal: WalConfig,
    pub index: IndexConfig,
    pub rules: RulesConfig,
    /// Paging: receivers, routes, escalation, silences' store (docs/paging.md).
    pub alerting: crate::alert::config::AlertingConfig,
    pub log: LogConfig,
    /// Secrets replaced by a marker before the WAL, the index and the
    /// rules see a line (docs/redaction.md).
    pub redact: crate::redact::RedactConfig,
    pub syslog: SyslogConfig,
    /// Search fan-out to other nodes (docs/fanout.md).
    pub cluster: ClusterConfig,
    /// Scale-out: Kafka between collectors and indexers (docs/kafka.md).
    pub kafka: crate::kafka::KafkaConfig,
    /// The audit log's key, checkpoints and witnesses (docs/audit.md).
    pub audit: crate::audit::witness::AuditConfig,
    /// Scheduled backups (docs/backup.md).
    pub backup: crate::backup::BackupConfig,
}

/// Syslog over TLS (RFC 5425) from rsyslog and friends; messages carry an
/// agent token in `[nightowl@32473 token="..."]`. Off unless `listen` is set,
/// e.g. `listen = "0.0.0.0:6514"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    pub listen: Option<SocketAddr>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("nightowl-data"),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            wal: WalConfig::default(),
            index: IndexConfig::default(),
            rules: RulesConfig::default(),
            alerting: Default::default(),
            log: LogConfig::default(),
            redact: crate::redact::RedactConfig::default(),
            syslog: SyslogConfig::default(),
            cluster: ClusterConfig::default(),
            kafka: crate::kafka::KafkaConfig::default(),
            audit: Default::default(),
            backup: Default::default(),
        }
    }
}

/// Server certificate. Both unset: a dev CA and certificate are generated
/// under `DATA_DIR/tls/` on first start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, e.g. `cert = "/etc/nightowl/server.pem"`.
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`.
    pub key: Option<PathBuf>,
    /// CA certificate(s) that sign agents' client certificates, e.g.
    /// `client_ca = "nightowl-data/tls/ca.pem"` (the dev CA, which
    /// `nightowl cert issue` signs with). Unset (the default): no client
    /// certificates are asked for; agents and syslog senders use tokens.
    /// With it, the agent and syslog listeners ask for one, and a
    /// certificate's `urn:nightowl:tenant:<tenant>` URI SAN names its
    /// tenant (docs/mtls.md).
    pub client_ca: Option<PathBuf>,
    /// Refuse agent and syslog connections without a verified client
    /// certificate (a token alone no longer gets in). Default false;
    /// needs `client_ca`.
    pub require_client_cert: bool,
}

impl TlsConfig {
    /// The client-certificate policy of the agent and syslog listeners.
    pub fn client_auth(&self) -> Option<crate::transport::tls::ClientAuth> {
        self.client_ca
            .as_ref()
            .map(|ca| crate::transport::tls::ClientAuth {
                ca: ca.clone(),
                required: self.require_client_cert,
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest agent frame accepted, bytes. Default 8 MiB.
    pub max_frame_bytes: usize,
    /// Largest single log line, bytes. Default 256 KiB.
    pub max_line_bytes: usize,
    /// Batches a connection may have in flight before reading pauses. Default 64.
    pub max_inflight_batches: usize,
    /// Seconds a new connection has to complete TLS and the hello. Default 10.
    pub handshake_timeout_secs: u64,
    /// Largest `_bulk` / NDJSON ingest request body, bytes. Default 16 MiB.
    pub max_bulk_bytes: usize,
    /// `[limits.api]`: HTTPS API rate, concurrency, body and connection
    /// limits (docs/limits.md).
    pub api: crate::api::limits::ApiLimitsConfig,
    /// `[limits.query]`: query size, shape and time limits (docs/limits.md).
    pub query: crate::index::search::QueryLimits,
}

impl LimitsConfig {
    /// The agent listener's part.
    pub fn connection(&self) -> crate::transport::server::ConnLimits {
        crate::transport::server::ConnLimits {
            max_frame_bytes: self.max_frame_bytes,
            max_line_bytes: self.max_line_bytes,
            max_inflight_batches: self.max_inflight_batches,
            handshake_timeout_secs: self.handshake_timeout_secs,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_inflight_batches: 64,
            handshake_timeout_secs: 10,
            max_bulk_bytes: 16 << 20,
            api: Default::default(),
            query: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Size at which a WAL segment is closed and a new one started. Default 128 MiB.
    pub segment_bytes: u64,
    /// Most bytes one group commit (one fsync) covers. Default 16 MiB.
    pub group_commit_bytes: usize,
    /// Encrypt WAL records (AES-256-GCM) with the key in this file: 32 raw
    /// bytes or 64 hex digits, e.g. `encryption_key_file = "/etc/nightowl/wal.key"`.
    /// Unset: `NIGHTOWL_WAL_KEY_FILE`, else records are stored plain.
    pub encryption_key_file: Option<PathBuf>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 128 * 1024 * 1024,
            group_commit_bytes: 16 * 1024 * 1024,
            encryption_key_file: None,
        }
    }
}

/// Detection rules evaluated on every ingested line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Run the default rule pack compiled into the binary (the
    /// repository's `rules/`, Sigma rules included). Default true; `false`
    /// (or `--no-builtin-rules`) leaves only `dir`'s rules.
    pub builtin: bool,
    /// Directory of rule files (and its sub-directories), e.g.
    /// `dir = "/etc/nightowl/rules"`: added to the embedded pack; a rule
    /// with the id of an embedded one replaces it (`enabled: false` turns
    /// it off). Watched for changes. Unset: the embedded pack alone.
    pub dir: Option<PathBuf>,
    /// Keys (e.g. client IPs) each rule tracks at most; beyond, the least
    /// recently seen key is evicted (`nightowl_rules_keys_evicted_total`).
    /// A rule's own `detect.max_keys` wins. Default 100000.
    pub max_keys_per_rule: usize,
    /// Reload the rules when a `*.yaml`/`*.yml` file in `dir` changes (SIGHUP
    /// always reloads). Default true.
    pub watch: bool,
    /// Least time between two snapshots of the rule state
    /// (`DATA_DIR/rules/state.snapshot`, written at index commits); after a
    /// crash the WAL since the last one is evaluated again. 0: at every
    /// commit. Default 5000. A snapshot that cost more than a twentieth
    /// of this (a big state) spaces the next one by twenty times its cost,
    /// up to 60 s, so snapshots stay under 5% of a core. The log patterns' state
    /// (`DATA_DIR/patterns/state.json`) is saved on the same interval.
    pub snapshot_interval_ms: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            builtin: true,
            dir: None,
            max_keys_per_rule: 100_000,
            watch: true,
            snapshot_interval_ms: 5000,
        }
    }
}

impl RulesConfig {
    /// Where the live rules come from.
    pub fn source(&self) -> crate::detect::builtin::RuleSource {
        crate::detect::builtin::RuleSource {
            builtin: self.builtin,
            dir: self.dir.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`. Default `text`.
    pub format: String,
    /// tracing filter, e.g. `info` or `nightowl=debug`. Default `info`;
    /// `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl CollectorConfig {
    /// Loads a TOML file; errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: CollectorConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        self.alerting.validate()?;
        self.kafka.validate()?;
        self.limits.api.validate()?;
        self.limits.query.validate()?;
        anyhow::ensure!(
            self.limits.max_line_bytes < self.limits.max_frame_bytes,
            "limits.max_line_bytes ({}) must be below limits.max_frame_bytes ({})",
            self.limits.max_line_bytes,
            self.limits.max_frame_bytes
        );
        anyhow::ensure!(
            self.index.writer_heap_bytes >= 15_000_000,
            "index.writer_heap_bytes must be at least 15000000 (tantivy's minimum)"
        );
        anyhow::ensure!(
            (1..=22).contains(&self.index.compact_zstd_level),
            "index.compact_zstd_level must be between 1 and 22, not {}",
            self.index.compact_zstd_level
        );
        anyhow::ensure!(
            (1..=8).contains(&self.index.writer_threads),
            "index.writer_threads must be between 1 and 8"
        );
        anyhow::ensure!(
            matches!(self.log.format.as_str(), "text" | "json"),
            "log.format must be \"text\" or \"json\", not {:?}",
            self.log.format
        );
        anyhow::ensure!(
            self.rules.max_keys_per_rule > 0,
            "rules.max_keys_per_rule must be > 0"
        );
        anyhow::ensure!(
            self.tls.cert.is_some() == self.tls.key.is_some(),
            "tls.cert and tls.key must be set together"
        );
        anyhow::ensure!(
            !self.tls.require_client_cert || self.tls.client_ca.is_some(),
            "tls.require_client_cert = true needs tls.client_ca (the CA that signs client certificates)"
        );
        anyhow::ensure!(
            self.cluster.timeout_ms > 0,
            "cluster.timeout_ms must be > 0"
        );
        for (i, peer) in self.cluster.peers.iter().enumerate() {
            let authority = peer.strip_prefix("https://").unwrap_or_default();
            anyhow::ensure!(
                !authority.trim_end_matches('/').is_empty()
                    && !authority.trim_end_matches('/').contains('/')
                    && authority.contains(':'),
                "cluster.peers[{i}] = {peer:?}: expected https://HOST:PORT"
            );
        }
        // Compiles the patterns: a bad regex fails the config load (exit 2).
        crate::redact::Redactor::new(&self.redact)?;
        Ok(())
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_embedded_default() {
        let config = CollectorConfig::parse("").expect("empty config");
        assert_eq!(config.agent_listen.port(), 7400);
        assert_eq!(config.api_listen.port(), 7443);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = CollectorConfig::parse("[index]\ncommit_interval_ms = 5\nbogus_key = 1\n")
            .expect_err("unknown key must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("bogus_key"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn redact_section_is_validated() {
        let config = CollectorConfig::parse("").expect("defaults");
        assert!(config.redact.enabled);
        let err = CollectorConfig::parse(
            "[redact]\nmarker = \"<{kind}>\"\n[[redact.patterns]]\nname = \"x\"\nregex = \"(oops\"\n",
        )
        .expect_err("bad regex must fail");
        assert!(
            format!("{err:#}").contains("redact.patterns[0].regex"),
            "{err:#}"
        );
    }

    #[test]
    fn rules_section_defaults_and_cap_validation() {
        let config = CollectorConfig::parse("").expect("defaults");
        assert_eq!(config.rules.max_keys_per_rule, 100_000);
        assert!(config.rules.watch);
        assert!(config.rules.builtin, "the pack runs by default");
        let off = CollectorConfig::parse("[rules]\nbuiltin = false\n").expect("builtin key");
        assert!(!off.rules.builtin);
        assert_eq!(config.rules.snapshot_interval_ms, 5000);
        let config = CollectorConfig::parse(
            "[rules]\nmax_keys_per_rule = 50\nwatch = false\nsnapshot_interval_ms = 0\n",
        )
        .expect("rules keys");
        assert_eq!(
            (config.rules.max_keys_per_rule, config.rules.watch),
            (50, false)
        );
        let err = CollectorConfig::parse("[rules]\nmax_keys_per_rule = 0\n").expect_err("0 keys");
        assert!(format!("{err:#}").contains("max_keys_per_rule"), "{err:#}");
    }

    #[test]
    fn cluster_section_defaults_and_peer_validation() {
        let config = CollectorConfig::parse("").expect("defaults");
        assert!(config.cluster.peers.is_empty());
        assert_eq!(config.cluster.timeout_ms, 5000);
        let config = CollectorConfig::parse(
            "[cluster]\npeers = [\"https://10.0.0.2:7443\"]\nca = \"/x/ca.pem\"\ntimeout_ms = 100\n",
        )
        .expect("cluster keys");
        assert_eq!(config.cluster.peers, vec!["https://10.0.0.2:7443"]);
        let err = CollectorConfig::parse("[cluster]\npeers = [\"http://10.0.0.2:7443\"]\n")
            .expect_err("plain http peer");
        assert!(format!("{err:#}").contains("cluster.peers[0]"), "{err:#}");
    }

    #[test]
    fn inconsistent_limits_are_rejected() {
        let err = CollectorConfig::parse("[limits]\nmax_line_bytes = 100\nmax_frame_bytes = 50\n")
            .expect_err("must fail");
        assert!(format!("{err:#}").contains("max_line_bytes"));
    }
}
