//! Two `sakura serve` schedulers on the same S3 storage (moto's server, which enforces the
//! conditional writes leases use): every fire of a 1-second job runs once across the two for
//! 50+ fires; the node running a slow job is killed mid-run and the other takes that fire over
//! (attempt 2) once its lease expires.

use std::time::Duration;

use crate::procs::{Proc, free_port, test_dir, wait_for};
use crate::sakura::{self, sql};
use crate::services::{S3Server, Tansu};

const JOBS: &str = r#"
[scheduler]
lease_grace = "3s"

[[jobs]]
name = "tick"
kind = "sql"
every = "1s"
timeout = "10s"
params = { statements = [ { sql = "SELECT count(*) FROM raw.telemetry" } ] }

[[jobs]]
name = "export_s3"
kind = "export"
every = "1d"
enabled = false
params = { sql = "SELECT job, status, fire_time FROM system.job_runs", url = "s3://lake/exports/runs/", format = "parquet" }

[[jobs]]
name = "slow"
kind = "sql"
every = "30s"
timeout = "15s"
params = { statements = [ { sql = "SELECT sum(a.value + b.value) FROM generate_series(1, 60000) a CROSS JOIN generate_series(1, 60000) b" } ] }
"#;

fn start(name: &str, config: &std::path::Path, dir: &std::path::Path) -> (Proc, u16) {
    let (flight, http) = (free_port(), free_port());
    let proc = sakura::start(
        name,
        &["serve", "--config", config.to_str().unwrap()],
        &[
            ("SAKURA__FLIGHT__LISTEN", format!("127.0.0.1:{flight}")),
            ("SAKURA__HTTP__LISTEN", format!("127.0.0.1:{http}")),
            ("SAKURA__SCHEDULER__NODE_ID", name.to_string()),
        ],
        http,
        dir,
    );
    (proc, flight)
}

/// `(fire, node, attempt, status)` of every recorded run of `job`, by fire.
fn runs(flight: u16, job: &str) -> Vec<(String, String, i64, String)> {
    let mut out: Vec<_> = sql(
        flight,
        &format!("SELECT CAST(fire_time AS VARCHAR), node, attempt, status FROM system.job_runs WHERE job = '{job}'"),
    )
    .unwrap()
    .iter()
    .map(|r| {
        let v: Vec<&str> = r.split(',').collect();
        (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap(), v[3].to_string())
    })
    .collect();
    out.sort();
    out
}

#[test]
fn two_schedulers_run_each_fire_once_and_take_over_a_dead_nodes_fire() {
    let tmp = test_dir();
    let s3 = S3Server::start(tmp.path());
    s3.create_bucket("lake");
    let tansu = Tansu::start(tmp.path());
    tansu.create_topic("telemetry", 2);
    let storage = format!("{}\n{JOBS}", sakura::s3_storage(&s3.endpoint()));
    let config = sakura::write_serve_config(
        tmp.path(),
        &storage,
        &tansu.brokers(),
        "e2e-race",
        1_000,
        None,
    );
    let mut nodes = vec![
        start("node-a", &config, tmp.path()),
        start("node-b", &config, tmp.path()),
    ];

    // Both nodes take tick fires; then the next slow fire: kill the node that starts it, mid-run.
    wait_for("ticks from both nodes", Duration::from_secs(60), || {
        let r = runs(nodes[0].1, "tick");
        let ran: std::collections::BTreeSet<&str> = r.iter().map(|r| r.1.as_str()).collect();
        (ran.len() == 2).then_some(())
    });
    let marks: Vec<usize> = nodes.iter().map(|(p, _)| p.output().len()).collect();
    let victim = wait_for(
        "a node to start the slow job",
        Duration::from_secs(90),
        || {
            nodes.iter_mut().zip(&marks).position(|((p, _), &mark)| {
                p.assert_running();
                p.output()
                    .get(mark..)
                    .is_some_and(|new| new.contains("job run starting job=slow"))
            })
        },
    );
    let (killed, _) = nodes.remove(victim);
    let victim = killed.name.clone();
    drop(killed); // SIGKILL
    let (mut live, flight) = nodes.pop().unwrap();
    let live = &mut live;

    // The survivor takes the slow fire over as attempt 2 after the lease (15 s + 3 s) expires.
    let taken = wait_for(
        "the slow fire to be taken over",
        Duration::from_secs(120),
        || {
            live.assert_running();
            runs(flight, "slow")
                .into_iter()
                .find(|r| r.2 == 2 && r.3 == "succeeded")
        },
    );
    assert_ne!(taken.1, victim, "{taken:?}");
    let slow = runs(flight, "slow");
    assert_eq!(
        slow.iter().filter(|r| r.0 == taken.0).count(),
        1,
        "the killed fire has one record: {slow:?}"
    );

    // 50+ fires of tick, each recorded exactly once.
    let ticks = wait_for("50 tick fires", Duration::from_secs(120), || {
        live.assert_running();
        let r = runs(flight, "tick");
        (r.len() >= 50).then_some(r)
    });
    // Fires finish on two nodes, so a later fire can be recorded before an earlier one: judge
    // the fires up to the last one read once every run in flight then has been recorded.
    let last_read = ticks.last().map(|r| r.0.clone()).unwrap_or_default();
    std::thread::sleep(Duration::from_secs(5));
    live.assert_running();
    let ticks: Vec<_> = runs(flight, "tick")
        .into_iter()
        .filter(|r| r.0 <= last_read)
        .collect();
    let fires: Vec<&String> = ticks.iter().map(|r| &r.0).collect();
    let mut distinct = fires.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        fires.len(),
        "a tick fire ran twice: {ticks:?}"
    );
    let parse =
        |f: &str| chrono::NaiveDateTime::parse_from_str(&f[..19], "%Y-%m-%dT%H:%M:%S").unwrap();
    let (first, last) = (parse(fires[0]), parse(fires[fires.len() - 1]));
    let have: std::collections::BTreeSet<_> = fires.iter().map(|f| parse(f)).collect();
    let missing: Vec<_> = (0..=(last - first).num_seconds())
        .map(|s| first + chrono::Duration::seconds(s))
        .filter(|t| !have.contains(t))
        .collect();
    let nodes: std::collections::BTreeSet<&str> = ticks.iter().map(|r| r.1.as_str()).collect();
    eprintln!(
        "{} tick fires from {first} to {last}, nodes {nodes:?}",
        fires.len()
    );
    if !missing.is_empty() {
        for (name, log) in [
            (&victim, tmp.path().join(format!("{victim}.log"))),
            (&live.name, live.log.clone()),
        ] {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for m in &missing {
                let key = m.format("%Y-%m-%d %H:%M:%S").to_string();
                for line in text
                    .lines()
                    .filter(|l| l.contains(&key) && l.contains("tick"))
                {
                    eprintln!("{name}: {line}");
                }
            }
        }
    }
    assert!(missing.is_empty(), "fires without a record: {missing:?}");
    assert!(nodes.len() == 2, "both nodes ran ticks: {nodes:?}");
    assert!(
        ticks.iter().all(|r| r.3 == "succeeded" || r.3 == "skipped"),
        "{ticks:?}"
    );

    // An export to the S3 store (the storage settings reach it): Parquet objects appear.
    let out = sakura::command()
        .args(["jobs", "run", "export_s3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("rows as parquet to s3://lake/exports/runs/"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, listing) =
        crate::procs::http("GET", s3.port, "/lake?list-type=2&prefix=exports/runs/").unwrap();
    assert!(
        status == 200 && listing.contains(".parquet</Key>"),
        "{status}: {listing}"
    );
    let _ = tansu;
}
