//! End to end: `sakura serve` (the release binary next to this one) consuming the whole
//! payload as backlog from Tansu into Delta on local disk or on the S3 server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::IngestArgs;
use crate::error::{Error, Result};
use crate::kafka::Broker;
use crate::procs::{Proc, cpu_seconds, free_port, http, wait_port};

/// moto's S3 server (enforces `If-None-Match: *`, as MinIO does), killed on drop.
#[derive(Debug)]
pub(crate) struct S3Server {
    proc: Proc,
    port: u16,
}

impl S3Server {
    pub(crate) fn start(tools: &Path, dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let proc = Proc::spawn(
            "moto",
            Command::new(tools.join("venv/bin/moto_server")).args([
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]),
            dir,
        )?;
        wait_port("the S3 server", port, Duration::from_secs(60))?;
        let (status, body) = http("PUT", port, "/lake")?;
        if status != 200 {
            return Err(Error::Failed(format!(
                "creating bucket lake failed: {status} {body}"
            )));
        }
        Ok(Self { proc, port })
    }

    pub(crate) fn pid(&self) -> String {
        self.proc.pid()
    }
}

#[derive(Debug)]
pub(crate) struct E2e {
    /// From the first message consumed to the last row committed.
    pub(crate) elapsed: Duration,
    /// VmHWM of the process.
    pub(crate) peak_rss_kib: u64,
    /// CPU-seconds `sakura serve` used, from its start to the last row committed.
    pub(crate) cpu_s: f64,
}

fn sakura_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("failed to find this program", e))?;
    let bin = exe.with_file_name("sakura");
    if !bin.exists() {
        return Err(Error::Failed(format!(
            "{} not found: build it with `cargo build --release --bin sakura --bin sakura-bench`",
            bin.display()
        )));
    }
    Ok(bin)
}

/// Sum of every sample of `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn run(
    broker: &Broker,
    s3: Option<&S3Server>,
    args: &IngestArgs,
    run: usize,
) -> Result<E2e> {
    let kind = if s3.is_some() { "s3" } else { "local" };
    let dir = std::path::absolute(args.dir.join(format!("e2e-{kind}-{run}")))
        .map_err(|e| Error::io("failed to resolve the bench directory", e))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("failed to create {}", dir.display()), e))?;
    let storage = match s3 {
        Some(s) => format!(
            "[storage]\nurl = \"s3://lake/e2e-{run}\"\n[storage.s3]\nendpoint = \"http://127.0.0.1:{}\"\nallow_http = true\naccess_key_id = \"bench\"\nsecret_access_key = \"bench\"\n",
            s.port
        ),
        None => format!("[storage]\nurl = \"{}\"\n", dir.join("data").display()),
    };
    let (flight, metrics_port) = (free_port()?, free_port()?);
    let config = format!(
        r#"{storage}
[auth]
required = false
[kafka]
brokers = "{}"
group_id = "bench-e2e-{kind}-{run}"
session_timeout_ms = 6000
[ingest]
flush_rows = {}
{}
[ingest.topics]
telemetry = "telemetry"
[flight]
listen = "127.0.0.1:{flight}"
[http]
listen = "127.0.0.1:{metrics_port}"
"#,
        broker.brokers(),
        args.flush_rows,
        args.ingest_settings.join("\n"),
    );
    let mut config = config;
    if !args.kafka_properties.is_empty() {
        config.push_str("[kafka.properties]\n");
        for kv in &args.kafka_properties {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--kafka-property {kv:?} is not key=value")))?;
            config.push_str(&format!("{k:?} = {v:?}\n"));
        }
    }
    let config_path = dir.join("sakura.toml");
    std::fs::write(&config_path, config)
        .map_err(|e| Error::io(format!("failed to write {}", config_path.display()), e))?;
    let mut proc = Proc::spawn(
        "sakura",
        Command::new(sakura_binary()?)
            .arg("serve")
            .arg("--config")
            .arg(&config_path),
        &dir,
    )?;
    wait_port(
        "sakura serve /metrics",
        metrics_port,
        Duration::from_secs(60),
    )?;
    let pid = proc.child.id();
    let mut first: Option<Instant> = None;
    let mut all_read: Option<Duration> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_report = Instant::now();
    let target = args.events as u64;
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(Error::Failed(format!(
                "sakura serve exited ({status}); see {}",
                dir.join("sakura.log").display()
            )));
        }
        let (_, text) = http("GET", metrics_port, "/metrics")?;
        let consumed = metric(&text, "sakura_ingest_messages_consumed_total");
        let committed = metric(&text, "sakura_ingest_rows_committed_total");
        if consumed > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if consumed >= target && all_read.is_none() {
            all_read = first.map(|t| t.elapsed());
        }
        if committed >= target {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "{kind} end to end committed {committed} of {target} rows in 30 minutes"
            )));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  {kind} run {run}: consumed {consumed}, committed {committed} of {target}, RSS peak {} MiB",
                peak_rss_kib(pid) / 1024
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = first.map(|t| t.elapsed()).unwrap_or_default();
    let peak = peak_rss_kib(pid);
    let cpu_s = cpu_seconds(&pid.to_string()).unwrap_or(0.0);
    println!(
        "  {kind} run {run}: every event read after {:.2} s, committed after {:.2} s",
        all_read.unwrap_or_default().as_secs_f64(),
        elapsed.as_secs_f64()
    );
    proc.terminate(Duration::from_secs(60));
    Ok(E2e {
        elapsed,
        peak_rss_kib: peak,
        cpu_s,
    })
}
