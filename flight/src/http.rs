//! The HTTP side: `/healthz` (the process is up), `/readyz` (it is serving and ingesting) and
//! `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::{Error, Result};

/// Renders the Prometheus text exposition of the process's metrics.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub ready: Arc<AtomicBool>,
    pub metrics: MetricsRenderer,
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
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the HTTP endpoints on `listener` until `shutdown` completes.
pub async fn serve_http(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Http)
}
