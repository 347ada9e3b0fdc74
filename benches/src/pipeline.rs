//! The pipeline stage (our side) and its peer, DuckDB, on the same NDJSON payload.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::{IngestConfig, IngestStats, RawMessage, TopicMessages, Writer};
use schemas::Storage;

use crate::IngestArgs;
use crate::error::{Error, Result};
use crate::payload::Payload;
use crate::procs::{cpu_seconds, cpu_since};

/// One flush window of `topic`: message `first + k` of the stream goes to partition
/// `(first + k) % partitions` at offset `(first + k) / partitions` — round-robin with
/// consecutive offsets per partition, as a producer without keys spreads them.
pub(crate) fn window(
    topic: &Arc<str>,
    partitions: usize,
    first: usize,
    values: impl IntoIterator<Item = Vec<u8>>,
) -> TopicMessages {
    let mut window: TopicMessages = BTreeMap::new();
    for (k, value) in values.into_iter().enumerate() {
        let i = first + k;
        let partition = (i % partitions) as i32;
        window
            .entry((topic.clone(), partition))
            .or_default()
            .push(RawMessage {
                topic: topic.clone(),
                partition,
                offset: (i / partitions) as i64,
                key: None,
                value: Some(value.into()),
            });
    }
    window
}

/// The flush windows the consumer loop would hand the writer: `flush_rows` messages each,
/// spread round-robin over the partitions with consecutive offsets per partition.
fn windows(payload: &Payload, args: &IngestArgs) -> Vec<Arc<TopicMessages>> {
    let topic: Arc<str> = Arc::from("telemetry");
    let rows = args.flush_rows.max(1);
    payload
        .messages
        .chunks(rows)
        .enumerate()
        .map(|(w, chunk)| {
            Arc::new(window(
                &topic,
                args.partitions as usize,
                w * rows,
                chunk.iter().cloned(),
            ))
        })
        .collect()
}

/// Writes the whole payload through the ingest writer into a fresh local table; returns the
/// time from the first window to the last commit, and the CPU-seconds this process used then.
pub(crate) fn run(payload: &Payload, args: &IngestArgs, run: usize) -> Result<(Duration, f64)> {
    let windows = windows(payload, args);
    let dir = args.dir.join(format!("stage-{run}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("failed to create {}", dir.display()), e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io("failed to start the runtime", e))?;
    let stats = Arc::new(IngestStats::default());
    let cfg = IngestConfig {
        topics: [("telemetry".to_string(), "telemetry".into())].into(),
        flush_rows: args.flush_rows,
        writer_threads: args.threads,
        ..IngestConfig::default()
    };
    let storage = Storage::local(&dir)?;
    let (elapsed, cpu) = rt.block_on(async {
        let mut writer = Writer::open(&cfg, &storage, stats.clone()).await?;
        let topic: Arc<str> = Arc::from("telemetry");
        let started = Instant::now();
        let cpu = cpu_seconds("self");
        for w in &windows {
            writer.write(&topic, w.clone()).await?;
        }
        let cpu = cpu_since("self", cpu);
        Ok::<_, Error>((started.elapsed(), cpu))
    })?;
    let s = stats.snapshot();
    if s.rows_committed != payload.messages.len() as u64 || s.dead_letters_committed != 0 {
        return Err(Error::Failed(format!(
            "pipeline stage committed {} rows and {} dead letters, expected {} rows",
            s.rows_committed,
            s.dead_letters_committed,
            payload.messages.len()
        )));
    }
    Ok((elapsed, cpu))
}

/// DuckDB (from the test virtualenv) converting the NDJSON file to Parquet.
pub(crate) fn duckdb(
    payload: &Payload,
    args: &IngestArgs,
    tools: &Path,
    run: usize,
) -> Result<Duration> {
    let out = args.dir.join(format!("duckdb-{run}.parquet"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb_ndjson.py");
    let output = Command::new(tools.join("venv/bin/python"))
        .arg(&script)
        .arg(&payload.file)
        .arg(&out)
        .arg(args.threads.to_string())
        .output()
        .map_err(|e| Error::io("failed to run DuckDB (python of the test venv)", e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::Failed(format!(
            "DuckDB failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let mut fields = text.split_whitespace();
    let secs: f64 = fields
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Failed(format!("unexpected DuckDB output: {text}")))?;
    let rows: usize = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if rows != payload.messages.len() {
        return Err(Error::Failed(format!(
            "DuckDB wrote {rows} rows, expected {}",
            payload.messages.len()
        )));
    }
    let _ = std::fs::remove_file(&out);
    Ok(Duration::from_secs_f64(secs))
}
