use serde::Deserialize;

use crate::{Error, Result};

/// `[engine]`: query engine settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// A table re-reads its Delta log before a scan when its view is older than this
    /// (0: before every scan). Bounds how stale a query's data can be.
    pub refresh_interval_ms: u64,
    /// DataFusion target partitions (0: one per core).
    pub target_partitions: usize,
    /// Rows per batch inside query execution.
    pub batch_size: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            refresh_interval_ms: 1_000,
            target_partitions: 0,
            batch_size: 8_192,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<()> {
        if self.refresh_interval_ms > 3_600_000 {
            return Err(Error::Config {
                key: "engine.refresh_interval_ms".into(),
                message: format!("{} is over one hour", self.refresh_interval_ms),
            });
        }
        if !(1..=1_048_576).contains(&self.batch_size) {
            return Err(Error::Config {
                key: "engine.batch_size".into(),
                message: format!("{} is outside 1..=1048576", self.batch_size),
            });
        }
        Ok(())
    }
}
