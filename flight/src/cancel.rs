//! `CancelFlightInfo` over stateless tickets: the queries this server is streaming are known by
//! their ticket bytes; cancelling stops them with `CANCELLED`, and a cancelled ticket is
//! remembered for a while so that a `DoGet` arriving after the cancellation is refused too.
//! (Cancellation reaches the server the request lands on; behind a load balancer a client
//! cancels on the connection it runs the query on.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::watch;

use crate::Error;

/// How long a cancelled ticket stays refused.
const REMEMBER: Duration = Duration::from_secs(600);
/// At most this many cancelled tickets are remembered (the oldest are forgotten first).
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, Default)]
struct State {
    running: HashMap<Bytes, Vec<(u64, watch::Sender<bool>)>>,
    cancelled: HashMap<Bytes, Instant>,
    next_id: u64,
}

/// The running and recently cancelled queries of this server.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cancellations {
    state: Arc<Mutex<State>>,
}

/// Removes a finished query from the registry when its stream is dropped.
struct Registration {
    state: Arc<Mutex<State>>,
    ticket: Bytes,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = s.running.get_mut(&self.ticket) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                s.running.remove(&self.ticket);
            }
        }
    }
}

impl Cancellations {
    /// `Err(Cancelled)` when `ticket` was cancelled recently.
    pub(crate) fn check(&self, ticket: &Bytes) -> Result<(), Error> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match s.cancelled.get(ticket) {
            Some(at) if at.elapsed() < REMEMBER => Err(Error::Cancelled(
                "the query of this ticket was cancelled (CancelFlightInfo)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// `batches` of the query of `ticket`, ending with `Err(Cancelled)` as soon as the ticket
    /// is cancelled (without waiting for the next batch).
    pub(crate) fn track<T: Send + 'static>(
        &self,
        ticket: Bytes,
        batches: impl Stream<Item = Result<T, Error>> + Send + 'static,
    ) -> impl Stream<Item = Result<T, Error>> + Send + 'static {
        let (tx, mut rx) = watch::channel(false);
        let registration = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.next_id += 1;
            let id = s.next_id;
            s.running.entry(ticket.clone()).or_default().push((id, tx));
            Registration {
                state: self.state.clone(),
                ticket,
                id,
            }
        };
        crate::stop::stop_with(batches, async move {
            // The registration leaves the registry with this future: on cancellation, or when
            // the stream is dropped.
            let _registration = registration;
            // Resolves only on a cancellation; a dropped sender means the registry forgot the
            // query, which happens only once the stream itself is gone.
            while rx.changed().await.is_ok() {
                if *rx.borrow() {
                    return Error::Cancelled("query cancelled (CancelFlightInfo)".into());
                }
            }
            std::future::pending().await
        })
    }

    /// Cancels the running queries of `tickets` and refuses those tickets from now on.
    /// Returns how many running queries were stopped.
    pub(crate) fn cancel(&self, tickets: &[Bytes]) -> usize {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        s.cancelled
            .retain(|_, at| now.duration_since(*at) < REMEMBER);
        while s.cancelled.len() + tickets.len() > MAX_REMEMBERED {
            let Some(oldest) = s
                .cancelled
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            s.cancelled.remove(&oldest);
        }
        let mut stopped = 0;
        for t in tickets {
            s.cancelled.insert(t.clone(), now);
            if let Some(list) = s.running.get(t) {
                for (_, tx) in list {
                    let _ = tx.send(true);
                    stopped += 1;
                }
            }
        }
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_running_query_stops_with_cancelled_and_its_ticket_is_refused_after() {
        let c = Cancellations::default();
        let ticket = Bytes::from_static(b"t1");
        // One batch, then a query that never produces another.
        let batches = futures::stream::iter([Ok::<_, Error>(1)]).chain(futures::stream::pending());
        let mut tracked = Box::pin(c.track(ticket.clone(), batches));
        assert!(matches!(tracked.next().await, Some(Ok(1))));
        assert!(c.check(&ticket).is_ok());
        assert_eq!(c.cancel(&[ticket.clone(), Bytes::from_static(b"other")]), 1);
        assert!(matches!(
            tracked.next().await,
            Some(Err(Error::Cancelled(_)))
        ));
        assert!(tracked.next().await.is_none());
        assert!(matches!(c.check(&ticket), Err(Error::Cancelled(_))));
        assert!(
            c.state.lock().unwrap().running.is_empty(),
            "finished queries leave the registry"
        );
        // A query that ends normally ends without an error.
        let done: Vec<_> = c
            .track(
                Bytes::from_static(b"t2"),
                futures::stream::iter([Ok::<_, Error>(7)]),
            )
            .collect()
            .await;
        assert!(matches!(done[..], [Ok(7)]));
    }
}
