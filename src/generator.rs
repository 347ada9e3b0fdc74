//! The demo's event generator: a fleet of hosts with diurnal load, their logs, platform events,
//! and injected anomalies (spikes, a level shift, a failing host) whose ground truth is kept.

use std::f64::consts::PI;

use chrono::{DateTime, Timelike, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

pub(crate) const METRICS: [&str; 4] = ["cpu_pct", "mem_pct", "latency_ms", "req_rate"];
const SERVICES: [&str; 6] = ["web", "api", "payments", "auth", "db", "queue"];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// Simulated seconds between two samples of a host.
pub(crate) const STEP_SECS: i64 = 60;
/// The injected schedule, in ticks (simulated minutes) from the start: three quiet hours
/// first, so every detector has a baseline that the anomalies depart from.
const SPIKES_FROM_TICK: u64 = 180;
const LEVEL_SHIFT_TICK: u64 = 240;
const FAILING_HOST_TICK: u64 = 300;
const FAILING_HOST_SILENT_TICK: u64 = 320;
const SHIFTED_SERVICE: &str = "payments";

/// One message to produce.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) topic: &'static str,
    pub(crate) key: String,
    pub(crate) value: String,
}

/// An anomaly the generator injected: the ground truth the demo (and the ML issue) check against.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Injected {
    pub(crate) kind: &'static str,
    pub(crate) target: String,
    pub(crate) metric: &'static str,
    pub(crate) ts_us: i64,
}

#[derive(Debug, Clone)]
struct Host {
    name: String,
    service: &'static str,
    region: &'static str,
    /// Per-host scale of load (0.6 ..= 1.4).
    factor: f64,
}

/// A deterministic generator (same seed, same events).
#[derive(Debug)]
pub(crate) struct Generator {
    hosts: Vec<Host>,
    rng: SmallRng,
    tick: u64,
    start_us: i64,
    pub(crate) injected: Vec<Injected>,
    failing: usize,
    /// One in this many telemetry messages is malformed on purpose (0: none).
    bad_every: u64,
    sent_telemetry: u64,
}

impl Generator {
    pub(crate) fn new(hosts: usize, start: DateTime<Utc>, seed: u64, bad_every: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let hosts: Vec<Host> = (0..hosts.max(1))
            .map(|i| {
                let service = SERVICES[i % SERVICES.len()];
                let region = REGIONS[(i / SERVICES.len()) % REGIONS.len()];
                let short = &region[..2];
                Host {
                    name: format!(
                        "{service}-{short}-{:03}",
                        i / (SERVICES.len() * REGIONS.len()) + 1 + 100 * (i % 3)
                    ),
                    service,
                    region,
                    factor: rng.random_range(0.6..1.4),
                }
            })
            .collect();
        let start_us = start.timestamp() * 1_000_000;
        Self {
            failing: 7 % hosts.len(),
            hosts,
            rng,
            tick: 0,
            start_us: start_us - start_us.rem_euclid(STEP_SECS * 1_000_000),
            injected: Vec::new(),
            bad_every,
            sent_telemetry: 0,
        }
    }

    pub(crate) fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Simulated time of the next tick.
    pub(crate) fn next_ts_us(&self) -> i64 {
        self.start_us + self.tick as i64 * STEP_SECS * 1_000_000
    }

    fn noise(&mut self, scale: f64) -> f64 {
        // Sum of uniforms: cheap, bell-shaped, bounded.
        let s: f64 = (0..4).map(|_| self.rng.random_range(-1.0..1.0)).sum();
        s * 0.5 * scale
    }

    /// All messages of the next simulated minute.
    pub(crate) fn next_tick(&mut self) -> Vec<Record> {
        let ts = self.next_ts_us();
        let tick = self.tick;
        self.tick += 1;
        let dt = DateTime::<Utc>::from_timestamp_micros(ts).unwrap_or_default();
        let hour = dt.hour() as f64 + dt.minute() as f64 / 60.0;
        let diurnal = 0.5 + 0.5 * (2.0 * PI * (hour - 9.0) / 24.0).sin();
        let mut out = Vec::with_capacity(self.hosts.len() * (METRICS.len() + 1) + 8);

        if tick == LEVEL_SHIFT_TICK {
            self.injected.push(Injected {
                kind: "level_shift",
                target: SHIFTED_SERVICE.into(),
                metric: "latency_ms",
                ts_us: ts,
            });
        }
        if tick == FAILING_HOST_TICK {
            let name = self.hosts[self.failing].name.clone();
            self.injected.push(Injected {
                kind: "failing_host",
                target: name,
                metric: "cpu_pct",
                ts_us: ts,
            });
        }
        // At most one spike a tick, on a random host and metric.
        let spike = (tick >= SPIKES_FROM_TICK && self.rng.random_bool(0.05)).then(|| {
            (
                self.rng.random_range(0..self.hosts.len()),
                if self.rng.random_bool(0.5) { 0 } else { 2 },
            )
        });

        for h in 0..self.hosts.len() {
            let failing = h == self.failing && tick >= FAILING_HOST_TICK;
            if failing && tick >= FAILING_HOST_SILENT_TICK {
                continue; // the failed host stops reporting
            }
            let host = self.hosts[h].clone();
            for (m, metric) in METRICS.iter().enumerate() {
                let mut value = match m {
                    0 => (10.0 + 60.0 * diurnal * host.factor + self.noise(3.0)).clamp(0.0, 100.0),
                    1 => (45.0 + 15.0 * host.factor + 5.0 * diurnal + self.noise(1.0))
                        .clamp(0.0, 100.0),
                    2 => (40.0 * host.factor * (1.0 + 0.6 * diurnal) * (1.0 + self.noise(0.08)))
                        .max(1.0),
                    _ => (400.0 * host.factor * (0.3 + 0.7 * diurnal) * (1.0 + self.noise(0.05)))
                        .max(0.0),
                };
                if m == 2 && host.service == SHIFTED_SERVICE && tick >= LEVEL_SHIFT_TICK {
                    value *= 1.8;
                }
                if failing {
                    value = match m {
                        0 => 97.0 + self.noise(2.0).abs(),
                        2 => value * 6.0,
                        3 => value * 0.2,
                        _ => value,
                    };
                }
                if spike == Some((h, m)) {
                    value = if m == 0 { 99.0 } else { value * 5.0 };
                    self.injected.push(Injected {
                        kind: "spike",
                        target: host.name.clone(),
                        metric,
                        ts_us: ts,
                    });
                }
                self.sent_telemetry += 1;
                let value_json = if self.bad_every > 0
                    && self.sent_telemetry.is_multiple_of(self.bad_every)
                {
                    // Malformed on purpose: shows raw.dead_letters at work.
                    match (self.sent_telemetry / self.bad_every) % 3 {
                        0 => format!("{{\"ts\":{ts},\"host\":\"{}\",\"metric\":\"{metric}\",\"value\":", host.name),
                        1 => json!({"ts": ts, "host": host.name, "service": host.service, "metric": metric, "value": "n/a"}).to_string(),
                        _ => json!({"host": host.name, "service": host.service, "metric": metric, "value": value}).to_string(),
                    }
                } else {
                    json!({
                        "ts": ts, "host": host.name, "service": host.service, "region": host.region,
                        "metric": metric, "value": (value * 100.0).round() / 100.0,
                        "labels": {"env": "prod", "az": format!("{}-{}", host.region, ["a", "b", "c"][h % 3])}
                    })
                    .to_string()
                };
                out.push(Record {
                    topic: "telemetry",
                    key: host.name.clone(),
                    value: value_json,
                });
            }
            // Logs: a few lines per host-minute, many errors from the failing host.
            let lines = if failing {
                5
            } else {
                usize::from(self.rng.random_bool(0.2))
            };
            for i in 0..lines {
                let (level, message) = if failing {
                    (
                        "ERROR",
                        format!(
                            "health check failed: connection refused ({} retries)",
                            i + 1
                        ),
                    )
                } else if self.rng.random_bool(0.02) {
                    (
                        "ERROR",
                        "upstream request failed: deadline exceeded".to_string(),
                    )
                } else if self.rng.random_bool(0.08) {
                    (
                        "WARN",
                        format!("slow request: {} ms", self.rng.random_range(500..3000)),
                    )
                } else {
                    let status = [200, 200, 200, 201, 204, 404][self.rng.random_range(0..6)];
                    (
                        "INFO",
                        format!(
                            "GET /api/v1/projects/p-{} {status} in {} ms",
                            self.rng.random_range(1000..1100),
                            self.rng.random_range(2..120)
                        ),
                    )
                };
                let trace: u128 = self.rng.random();
                out.push(Record {
                    topic: "logs",
                    key: host.name.clone(),
                    value: json!({
                        "ts": ts + i as i64 * 1_000_000, "level": level, "service": host.service, "host": host.name,
                        "message": message, "trace_id": format!("{trace:032x}"),
                        "attributes": {"region": host.region}
                    })
                    .to_string(),
                });
            }
        }
        // Platform events from the management services.
        for _ in 0..self.rng.random_range(2..8) {
            let project = format!("p-{}", self.rng.random_range(1000..1100));
            let (event_type, payload) = match self.rng.random_range(0..5) {
                0 => {
                    let plan = ["free", "pro", "enterprise"][self.rng.random_range(0..3)];
                    ("project.created", json!({ "plan": plan }))
                }
                1 => (
                    "module.deployed",
                    json!({"version": format!("1.{}.{}", self.rng.random_range(0..9), self.rng.random_range(0..20)), "replicas": self.rng.random_range(1..6)}),
                ),
                2 => (
                    "module.scaled",
                    json!({"from": 2, "to": self.rng.random_range(3..10)}),
                ),
                3 => ("user.login", json!({"method": "oidc"})),
                _ => ("alert.acknowledged", json!({"alert": "latency_high"})),
            };
            out.push(Record {
                topic: "events",
                key: project.clone(),
                value: json!({
                    "ts": ts + self.rng.random_range(0..STEP_SECS) * 1_000_000, "event_type": event_type,
                    "project_id": project, "module_id": format!("m-{}", self.rng.random_range(1..60)),
                    "actor": format!("user-{}@example.com", self.rng.random_range(1..40)), "payload": payload
                })
                .to_string(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_every_host_and_metric_and_decode() {
        let start = DateTime::<Utc>::from_timestamp(1_764_374_400, 0).unwrap();
        let mut g = Generator::new(30, start, 1, 0);
        let recs = g.next_tick();
        let telemetry: Vec<_> = recs.iter().filter(|r| r.topic == "telemetry").collect();
        assert_eq!(telemetry.len(), 30 * METRICS.len());
        let decoder = ingest::EventDecoder::new(
            schemas::event_schema("telemetry").unwrap(),
            ingest::DecodeLimits::default(),
            ingest::Format::Json,
        )
        .unwrap();
        let msgs: Vec<_> = telemetry
            .iter()
            .enumerate()
            .map(|(i, r)| ingest::RawMessage {
                topic: "telemetry".into(),
                partition: 0,
                offset: i as i64,
                key: None,
                value: Some(r.value.clone().into_bytes().into()),
            })
            .collect();
        let out = decoder.decode(&msgs).unwrap();
        assert!(
            out.dead_letters.is_empty(),
            "{:?}",
            out.dead_letters.first()
        );
        assert_eq!(out.batch.unwrap().num_rows(), 120);
        assert_eq!(g.next_ts_us(), g.start_us + STEP_SECS * 1_000_000);
    }

    #[test]
    fn schedule_injects_level_shift_and_failing_host() {
        let start = DateTime::<Utc>::from_timestamp(1_764_374_400, 0).unwrap();
        let mut g = Generator::new(20, start, 7, 0);
        for _ in 0..=FAILING_HOST_SILENT_TICK + 200 {
            g.next_tick();
        }
        let kinds: Vec<_> = g.injected.iter().map(|i| i.kind).collect();
        assert!(kinds.contains(&"level_shift"));
        assert!(kinds.contains(&"failing_host"));
        assert!(kinds.iter().filter(|k| **k == "spike").count() > 3);
        // Once silent, the failing host sends nothing.
        let failing = g.hosts[g.failing].name.clone();
        assert!(
            g.next_tick()
                .iter()
                .all(|r| r.key != failing || r.topic == "events")
        );
    }

    #[test]
    fn bad_messages_are_mixed_in_when_asked() {
        let start = DateTime::<Utc>::from_timestamp(1_764_374_400, 0).unwrap();
        let mut g = Generator::new(50, start, 1, 10);
        let recs = g.next_tick();
        let bad = recs
            .iter()
            .filter(|r| r.topic == "telemetry" && !r.value.contains("\"region\""))
            .count();
        assert_eq!(bad, 20);
    }
}
