//! The HTTP side: `/healthz` (the process is up), `/readyz` (it is serving and ingesting),
//! `/metrics` (Prometheus text) and, on serving nodes, the SQL API (`/api/v1/…`, see
//! [`crate::api`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::api::{self, SqlApi};
use crate::{Error, Result};

/// Renders the Prometheus text exposition of the process's metrics.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub ready: Arc<AtomicBool>,
    pub metrics: MetricsRenderer,
    /// The SQL API; `None` on ingest-only nodes.
    pub api: Option<Arc<SqlApi>>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<HttpState>) -> impl IntoResponse {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(st): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (st.metrics)(),
    )
}

pub fn router(state: HttpState) -> Router {
    let api = state.api.clone();
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(api::openapi))
        .with_state(state);
    match api {
        Some(api) => router.merge(
            Router::new()
                .route("/api/v1/sql", post(api::sql))
                .with_state(api),
        ),
        None => router,
    }
}

/// The address a request over TLS came from (the audit log's `peer`; plain connections carry
/// axum's `ConnectInfo<SocketAddr>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Serves the HTTP endpoints on `listener` until `shutdown` completes; over TLS when `tls` is
/// given.
pub async fn serve_http(
    listener: TcpListener,
    state: HttpState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(state);
    match tls {
        None => axum::serve(
            listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
            }),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Http),
        Some(cfg) => axum::serve(
            TlsListener::new(listener, cfg),
            app.into_make_service_with_connect_info::<Peer>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Http),
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and hands out those that completed a TLS handshake. Handshakes run
/// in their own tasks, so a slow or hostile client does not hold up the others; a failed one
/// (plaintext to the TLS port, no or an untrusted client certificate under mTLS) is logged and
/// dropped.
struct TlsListener {
    addr: std::io::Result<SocketAddr>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, cfg: Arc<rustls::ServerConfig>) -> Self {
        let addr = listener.local_addr();
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(cfg);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => {
                        if let Err(e) = c.0.set_nodelay(true) {
                            tracing::debug!(error = %e, "TCP_NODELAY not set");
                        }
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "http: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "http: TLS handshake refused");
                        }
                        Err(_) => tracing::info!(%peer, "http: TLS handshake timed out"),
                    }
                });
            }
        });
        Self {
            addr,
            ready,
            _acceptor: task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.addr {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
