//! A tenant purge reaching the backups (docs/backup.md, "Purge").

use serde::{Deserialize, Serialize};

/// Recorded in a backup's manifest when a purge removed a tenant from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeNote {
    pub tenant: String,
    pub at: String,
    /// Files of the backup removed or rewritten.
    pub files: Vec<String>,
}
