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
}

impl Tansu {
    pub(crate) fn start(log_dir: &Path) -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let proc = Proc::spawn(
            "tansu",
            Command::new(tool("bin/tansu"))
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .env("RUST_LOG", "warn"),
            log_dir,
        );
        wait_port("tansu to listen", port, Duration::from_secs(30));
        Self { _proc: proc, port }
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
