//! Starting the Flight SQL server: TLS, the authentication layer in front of every call, the
//! HTTP listener beside it, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::Authenticator;
use crate::executor::QueryExecutor;
use crate::service::SakuraFlightSql;
use crate::{Error, Result};

/// Authenticates every Flight call except the handshake (which authenticates itself) from its
/// `authorization` header, and hands the [`crate::Identity`] to the service in the request's
/// extensions. A failure is answered with `UNAUTHENTICATED` without reaching the service.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !req.uri().path().ends_with("/Handshake") {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match self.auth.authenticate(header) {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                }
                Err(e) => {
                    let peer = req
                        .extensions()
                        .get::<tonic::transport::server::TcpConnectInfo>()
                        .and_then(|i| i.remote_addr())
                        .or_else(|| {
                            req.extensions()
                                .get::<tonic::transport::server::TlsConnectInfo<
                                    tonic::transport::server::TcpConnectInfo,
                                >>()
                                .and_then(|i| i.get_ref().remote_addr())
                        });
                    crate::audit::refused(peer, req.uri().path(), &e);
                    let response = tonic::Status::from(e).into_http();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

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
    auth: Arc<Authenticator>,
    policy: Arc<crate::Policy>,
    limits: Arc<crate::Limits>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let svc =
        FlightServiceServer::new(SakuraFlightSql::new(executor, auth.clone(), policy, limits))
            .max_decoding_message_size(MAX_DECODING_BYTES);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .layer(AuthLayer { auth })
        .add_service(svc)
        .serve_with_incoming_shutdown(no_delay(TcpListenerStream::new(listener)), shutdown)
        .await?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: a response's last small frames go out at
/// once instead of waiting for the client's delayed ACK (~40 ms per call otherwise).
pub(crate) fn no_delay<E>(
    incoming: impl futures::Stream<Item = Result<tokio::net::TcpStream, E>>,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, E>> {
    use futures::StreamExt;
    incoming.map(|conn| {
        if let Ok(tcp) = &conn
            && let Err(e) = tcp.set_nodelay(true)
        {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        conn
    })
}

/// The address a listener is bound to, for printing.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: "listener".into(),
        source,
    })
}
