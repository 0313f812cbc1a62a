//! Log patterns: streaming template mining.
//!
//! A stage beside `detect`: it reads a parsed line's message and names the
//! pattern (template) it belongs to. It imports nothing of later stages.

pub mod alias;
pub mod cli;
pub mod eval;
mod miner;
pub mod store;
pub mod stream;
pub mod templates;
mod token;

pub use alias::PatternAliases;
pub use miner::{Cluster, Config, Miner, MinerState};
pub use store::{PatternStore, SharedPatterns};
pub use stream::{Merge, PatternId, StreamLimits, Streams, StreamsState};
pub use templates::PatternTemplates;
