//! Log patterns: streaming template mining.
//!
//! A stage beside `detect`: it reads a parsed line's message and names the
//! pattern (template) it belongs to. It imports nothing of later stages.

pub mod cli;
pub mod eval;
mod miner;
pub mod stream;
mod token;

pub use miner::{Cluster, Config, Miner, MinerState};
pub use stream::{PatternId, StreamLimits, Streams, StreamsState};
