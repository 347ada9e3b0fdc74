//! The real services the end-to-end tests run against: the Tansu Kafka-protocol broker and
//! moto's S3 server (which enforces `If-None-Match: *` conditional writes, as MinIO does).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::procs::{Proc, free_port, http, tool, wait_port};

pub(crate) struct Tansu {
    /// Killed when dropped.
    _proc: Proc,
    pub(crate) port: u16,
    storage: String,
    envs: Vec<(String, String)>,
    log_dir: std::path::PathBuf,
    starts: usize,
}

impl Tansu {
    /// A broker with in-memory storage.
    pub(crate) fn start(log_dir: &Path) -> Self {
        Self::start_with_storage(log_dir, "memory://tansu/", &[])
    }

    /// A broker whose storage survives restarts (e.g. `s3://bucket/` with AWS_* variables).
    pub(crate) fn start_with_storage(
        log_dir: &Path,
        storage: &str,
        envs: &[(&str, String)],
    ) -> Self {
        let port = free_port();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let proc = Self::spawn(log_dir, port, storage, &envs, 0);
        Self {
            _proc: proc,
            port,
            storage: storage.to_string(),
            envs,
            log_dir: log_dir.to_path_buf(),
            starts: 1,
        }
    }

    fn spawn(
        log_dir: &Path,
        port: u16,
        storage: &str,
        envs: &[(String, String)],
        n: usize,
    ) -> Proc {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(tool("bin/tansu"));
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", storage])
        .env("RUST_LOG", "warn");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(&format!("tansu-{n}"), &mut cmd, log_dir);
        wait_port("tansu to listen", port, Duration::from_secs(30));
        proc
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub(crate) fn restart(&mut self, down_for: Duration) {
        let old = std::mem::replace(
            &mut self._proc,
            Proc::spawn(
                "tansu-placeholder",
                &mut Command::new("true"),
                &self.log_dir,
            ),
        );
        drop(old);
        std::thread::sleep(down_for);
        self._proc = Self::spawn(
            &self.log_dir,
            self.port,
            &self.storage,
            &self.envs,
            self.starts,
        );
        self.starts += 1;
    }

    pub(crate) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tool("bin/tansu"))
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub(crate) struct S3Server {
    /// Killed when dropped.
    _proc: Proc,
    pub(crate) port: u16,
}

impl S3Server {
    pub(crate) fn start(log_dir: &Path) -> Self {
        let port = free_port();
        let proc = Proc::spawn(
            "moto",
            Command::new(tool("venv/bin/moto_server")).args([
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]),
            log_dir,
        );
        wait_port("the S3 server to listen", port, Duration::from_secs(60));
        Self { _proc: proc, port }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_bucket(&self, bucket: &str) {
        let (status, body) = http("PUT", self.port, &format!("/{bucket}")).expect("create bucket");
        assert_eq!(status, 200, "create bucket {bucket}: {body}");
    }
}
