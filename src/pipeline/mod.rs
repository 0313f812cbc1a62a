//! The processes, each wiring its stages in one function, back to front:
//! [`collector`] (transport → ingest → WAL → index and rules → alerts, or
//! with Kafka the log in the WAL's place) and [`indexer`] (a Kafka consumer
//! group member: index and rules, firings to the alerts topic). [`node`] is
//! the setup both share.

pub mod collector;
pub mod indexer;
pub mod node;

pub use collector::run_collector;
