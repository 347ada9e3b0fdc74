use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::executor::QueryExecutor;
use crate::service::SakuraFlightSql;
use crate::{Error, Result};

/// Largest request a client may send (a statement or a bound parameter batch).
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// Binds `addr` (port 0 picks a free one); the caller learns the bound address before serving.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Serves Flight SQL on `listener` until `shutdown` completes.
pub async fn serve_flight(
    listener: TcpListener,
    executor: Arc<dyn QueryExecutor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let svc = FlightServiceServer::new(SakuraFlightSql::new(executor))
        .max_decoding_message_size(MAX_DECODING_BYTES);
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// The address a listener is bound to, for printing.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: "listener".into(),
        source,
    })
}
