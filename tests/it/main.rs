//! All end-to-end and binary tests in one test crate: one link of the
//! whole dependency tree instead of one per file keeps CI time and disk
//! small. `tests/rules_engine.rs` stays apart: it counts allocations with a
//! global allocator, which tests of other files running beside it would
//! disturb.

mod cli_completions;
mod cli_first_day;
mod common;
mod e2e_agent;
mod e2e_agent_crash;
mod e2e_agent_edge;
mod e2e_audit;
mod e2e_backup;
mod e2e_bulk;
mod e2e_crash;
mod e2e_default_pack;
mod e2e_fanout;
mod e2e_hardening;
mod e2e_index;
mod e2e_ingest;
mod e2e_isolation;
mod e2e_kafka;
mod e2e_kafka_rekey;
mod e2e_kafka_reload;
mod e2e_late_source;
mod e2e_limits;
mod e2e_live_rules;
mod e2e_mtls;
mod e2e_paging;
mod e2e_partial_outage;
mod e2e_patterns;
mod e2e_redact;
mod e2e_rejects;
mod e2e_rules_reload;
mod e2e_secrets;
mod e2e_shippers;
mod e2e_spool_crypt;
mod e2e_status;
mod e2e_syslog;
mod e2e_syslog_ng;
mod e2e_tenant_data;
mod e2e_tenants;
mod e2e_web;
mod e2e_web_patterns;
mod guides;
mod kafka_broker;
mod patterns_cli;
mod payloads;
mod receivers;
mod rules_backtest;
mod rules_binary;
mod rules_cli;
mod rules_late;
mod rules_pack;
mod rules_sigma;
mod systemd_units;
mod test_peers;
