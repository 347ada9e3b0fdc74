//! Child processes (killed on drop), free ports and a minimal HTTP client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A child process, killed when dropped; its output goes to `<dir>/<name>.log`.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .map_err(|e| Error::io(format!("failed to create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("failed to clone a log handle", e))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io(format!("failed to start {name}"), e))?;
        Ok(Self { child })
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then kills it.
    pub(crate) fn terminate(&mut self, grace: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, all threads) a process has used so far, in seconds; `pid` is a
/// number or `self`. `None` when it cannot be read (the process is gone, or not Linux).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, in parentheses): state is the
    // first, utime and stime the 12th and 13th, in clock ticks (USER_HZ: 100 on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU-seconds `pid` used since it had used `before` (0 when either reading failed).
pub(crate) fn cpu_since(pid: &str, before: Option<f64>) -> f64 {
    before.zip(cpu_seconds(pid)).map_or(0.0, |(a, b)| b - a)
}

pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("failed to find a free port", e))
}

pub(crate) fn wait_port(what: &str, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Failed(format!(
        "{what} did not listen on port {port} within {timeout:?}"
    )))
}

/// One HTTP/1.0 request to 127.0.0.1; returns the status and the body.
pub(crate) fn http(method: &str, port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| Error::io(format!("failed to connect to port {port}"), e))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| Error::io("failed to set a timeout", e))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| Error::io(format!("failed to send {method} {path}"), e))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| Error::io(format!("failed to read the reply to {method} {path}"), e))?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
