//! Ending a result stream early with an error (cancellation, time limit) without waiting for
//! its next batch.

use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};

use crate::Error;

/// `batches` until `stop` resolves; the error it resolves to is then the stream's last item.
/// Whatever `stop` holds is dropped when it resolves or when the stream is dropped.
pub(crate) fn stop_with<T: Send + 'static>(
    batches: impl Stream<Item = Result<T, Error>> + Send + 'static,
    stop: impl Future<Output = Error> + Send + 'static,
) -> impl Stream<Item = Result<T, Error>> + Send + 'static {
    let slot = Arc::new(Mutex::new(None));
    let set = slot.clone();
    let head = batches
        .take_until(async move {
            let e = stop.await;
            *set.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
        })
        .map(Some);
    let tail = futures::stream::once(async move {
        slot.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(Err)
    });
    head.chain(tail).filter_map(|item| async move { item })
}
