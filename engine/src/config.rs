//! `[engine]`: the query engine's settings and how they become DataFusion options.

use std::collections::BTreeMap;

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
    /// `[engine.options]`: any DataFusion setting (`datafusion.execution.…`,
    /// `datafusion.optimizer.…`), set on every query session.
    pub options: BTreeMap<String, String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            refresh_interval_ms: 1_000,
            target_partitions: 0,
            batch_size: 8_192,
            options: BTreeMap::new(),
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
        // Applied to a throw-away copy, so an unknown key or a bad value is an error at start.
        self.apply_options(&mut datafusion::config::ConfigOptions::new())
    }

    /// Sets `[engine.options]` on a session's DataFusion options.
    pub(crate) fn apply_options(
        &self,
        options: &mut datafusion::config::ConfigOptions,
    ) -> Result<()> {
        for (key, value) in &self.options {
            options.set(key, value).map_err(|e| Error::Config {
                key: format!("engine.options.{key:?}"),
                message: format!("{value:?} cannot be set: {e}"),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_options_are_checked_at_start() {
        let mut cfg = EngineConfig::default();
        cfg.options.insert(
            "datafusion.execution.parquet.pushdown_filters".into(),
            "true".into(),
        );
        cfg.validate().unwrap();

        let mut unknown = EngineConfig::default();
        unknown
            .options
            .insert("datafusion.execution.no_such_setting".into(), "1".into());
        let e = unknown.validate().unwrap_err().to_string();
        assert!(e.contains("no_such_setting"), "{e}");

        let mut bad = EngineConfig::default();
        bad.options
            .insert("datafusion.execution.batch_size".into(), "many".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("\"many\""), "{e}");
    }
}
