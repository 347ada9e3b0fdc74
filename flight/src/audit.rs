//! The audit log, target `sakura::audit`: one structured line per query when it ends — who ran
//! what from where, how many rows and bytes it returned, how long it took, and how it ended
//! (`ok`, the error, `cancelled`, or `disconnected` when the client went away mid-stream) —
//! and one line per call refused at authentication.
//!
//! Every value that comes from a caller (the SQL, the subject, error messages that quote them)
//! is written quoted with control characters escaped, so a statement cannot forge a second
//! line or smuggle terminal escapes; the SQL is kept to its first [`SQL_KEPT`] bytes, with its
//! full length and SHA-256, so a huge statement cannot write a huge line.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arrow::array::RecordBatch;
use aws_lc_rs::digest;
use futures::{Stream, StreamExt};

use crate::{Error, Identity};

/// Bytes of a statement's text kept in its audit line.
pub(crate) const SQL_KEPT: usize = 4096;

/// A caller's text in a log line: quoted, control characters and quotes escaped, at most
/// `max` bytes of it (cut at a character boundary, marked with `…`).
#[derive(Clone, Copy)]
pub(crate) struct Quoted<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Quoted<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            max: usize::MAX,
        }
    }

    pub(crate) fn at_most(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }
}

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.len() <= self.max {
            return write!(f, "{:?}", self.text);
        }
        let kept = &self.text[..self.text.floor_char_boundary(self.max)];
        write!(f, "{:?}", format!("{kept}…"))
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Hex SHA-256 of `text`.
fn sha256(text: &str) -> String {
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The peer as a log value (`-` when unknown).
fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".into(), |p| p.to_string())
}

/// Logs a call refused at authentication (`UNAUTHENTICATED`), or one refused before it was
/// authenticated (too many password checks).
pub(crate) fn refused(peer: Option<SocketAddr>, path: &str, error: &Error) {
    tracing::info!(
        target: "sakura::audit",
        peer = %peer_text(peer),
        path = %Quoted::new(path),
        outcome = %Quoted::new(&format!("error: {:?}: {error}", error.code())),
        "refused"
    );
}

/// One query's audit record; logged once, when the last handle to it is dropped.
#[derive(Debug)]
pub(crate) struct Audit {
    subject: String,
    method: &'static str,
    peer: Option<SocketAddr>,
    sql: String,
    sql_bytes: usize,
    sql_sha256: String,
    query_id: String,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    outcome: Mutex<Option<String>>,
}

impl Audit {
    pub(crate) fn start(
        identity: Option<&Identity>,
        peer: Option<SocketAddr>,
        sql: &str,
        query_id: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            subject: identity.map_or_else(|| "unknown".into(), |i| i.subject.clone()),
            method: identity.map_or("none", |i| i.method),
            peer,
            sql: sql[..sql.floor_char_boundary(SQL_KEPT + 1)].to_string(),
            sql_bytes: sql.len(),
            sql_sha256: sha256(sql),
            query_id: query_id.to_string(),
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
        })
    }

    fn set_outcome(&self, outcome: String) {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if o.is_none() {
            *o = Some(outcome);
        }
    }

    /// Records that the query failed before it produced a stream.
    pub(crate) fn failed(&self, e: &tonic::Status) {
        self.set_outcome(format!("error: {:?}: {}", e.code(), e.message()));
    }

    /// `batches`, counted into this record; the outcome is set by how the stream ends.
    pub(crate) fn wrap(
        self: Arc<Self>,
        batches: impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static,
    ) -> impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static {
        let end = self.clone();
        batches
            .inspect(move |item| match item {
                Ok(b) => {
                    self.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    self.bytes
                        .fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
                }
                Err(Error::Cancelled(_)) => self.set_outcome("cancelled".into()),
                Err(e) => self.set_outcome(format!("error: {:?}: {e}", e.code())),
            })
            .map(Some)
            // Reached only when the stream ends (not when the client drops it): the first
            // outcome recorded stays.
            .chain(futures::stream::once(async move {
                end.set_outcome("ok".into());
                None
            }))
            .filter_map(|item| async move { item })
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| "disconnected".into());
        tracing::info!(
            target: "sakura::audit",
            subject = %Quoted::new(&self.subject),
            auth = %self.method,
            peer = %peer_text(self.peer),
            query_id = %self.query_id,
            sql = %Quoted::at_most(&self.sql, SQL_KEPT),
            sql_bytes = self.sql_bytes,
            sql_sha256 = %self.sql_sha256,
            rows = self.rows.load(Ordering::Relaxed),
            bytes = self.bytes.load(Ordering::Relaxed),
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = %Quoted::at_most(&outcome, SQL_KEPT),
            "query"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_text_is_one_quoted_escaped_bounded_value() {
        let forged = "SELECT 1\nINFO sakura::audit: query subject=admin outcome=ok\u{1b}[2J";
        let shown = format!("{}", Quoted::new(forged));
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert!(shown.starts_with('"') && shown.ends_with('"'), "{shown}");
        assert!(
            shown.contains("\\n") && shown.contains("\\u{1b}"),
            "{shown}"
        );
        // A quote cannot close the value early.
        assert_eq!(format!("{}", Quoted::new("a\" b=c")), "\"a\\\" b=c\"");
        // Bounded at a character boundary.
        let long = "é".repeat(10_000);
        let shown = format!("{}", Quoted::at_most(&long, SQL_KEPT));
        assert!(shown.len() < SQL_KEPT + 16, "{}", shown.len());
        assert!(shown.ends_with("…\""), "{shown}");
        let a = Audit::start(None, None, &long, "q");
        assert_eq!(a.sql_bytes, long.len());
        assert_eq!(a.sql_sha256.len(), 64);
        assert!(a.sql.len() <= SQL_KEPT + 1);
    }
}
