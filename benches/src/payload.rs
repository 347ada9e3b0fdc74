//! The benchmark payload: NDJSON telemetry events, in memory and as a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) struct Payload {
    /// One JSON document per event, without the newline.
    pub(crate) messages: Vec<Vec<u8>>,
    /// Bytes of all messages (the file adds one newline each).
    pub(crate) bytes: u64,
    /// The same events as an NDJSON file.
    pub(crate) file: PathBuf,
}

const SERVICES: [&str; 4] = ["web", "api", "db", "cache"];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const METRICS: [&str; 4] = ["cpu_pct", "mem_pct", "latency_ms", "req_rate"];

/// `n` events spread over yesterday (UTC), so every one is inside the accepted time range and
/// all land in one date partition.
pub(crate) fn generate(n: usize, dir: &Path) -> Result<Payload> {
    let today = chrono::Utc::now().timestamp_micros() / 86_400_000_000 * 86_400_000_000;
    let start = today - 86_400_000_000;
    let step = (86_400_000_000 / n as i64).max(1);
    let mut rng = SmallRng::seed_from_u64(42);
    let file = dir.join("telemetry.ndjson");
    let f = std::fs::File::create(&file)
        .map_err(|e| Error::io(format!("failed to create {}", file.display()), e))?;
    let mut out = std::io::BufWriter::new(f);
    let mut messages = Vec::with_capacity(n);
    let mut bytes = 0u64;
    for i in 0..n {
        let host = i % 300;
        let service = SERVICES[host % SERVICES.len()];
        let region = REGIONS[host % REGIONS.len()];
        let metric = METRICS[i % METRICS.len()];
        let value: f64 = rng.random_range(0.0..1000.0);
        let az = ['a', 'b', 'c'][host % 3];
        let m = format!(
            r#"{{"ts":{},"host":"{service}-{host:03}","service":"{service}","region":"{region}","metric":"{metric}","value":{value:.2},"labels":{{"env":"prod","az":"{az}"}}}}"#,
            start + i as i64 * step
        )
        .into_bytes();
        out.write_all(&m)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| Error::io(format!("failed to write {}", file.display()), e))?;
        bytes += m.len() as u64;
        messages.push(m);
    }
    out.flush()
        .map_err(|e| Error::io(format!("failed to write {}", file.display()), e))?;
    Ok(Payload {
        messages,
        bytes,
        file,
    })
}
