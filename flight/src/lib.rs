//! The serving layer: Arrow Flight SQL (gRPC) and the HTTP endpoints.
//!
//! In: SQL statements and metadata requests from clients (ADBC, JDBC, pyarrow, Grafana,
//! `sakura sql`). Out: Arrow record batches produced by a [`QueryExecutor`] — the engine in
//! production, a fake in tests. Every error becomes a gRPC status in `error.rs`.

mod api;
mod audit;
mod auth;
mod cancel;
mod error;
mod executor;
mod http;
mod jwks;
mod limits;
mod metadata;
mod prepared;
mod query;
mod rbac;
mod server;
mod service;
mod sql_info;
mod stop;
mod tls;
mod update;
mod wire_types;

pub use api::SqlApi;
pub use auth::{
    AuthConfig, Authenticator, Identity, Origin, TokenConfig, UserConfig, hash_password, new_token,
    token_hash,
};
pub use error::{Error, Result};
pub use executor::{QueryExecutor, QueryStream};
pub use http::{HttpState, MetricsRenderer, router, serve_http};
pub use jwks::JwtConfig;
pub use limits::{Limits, LimitsConfig};
pub use rbac::{ADMIN, Policy, RoleConfig};
pub use server::{bind, local_addr, serve_flight};
pub use service::SakuraFlightSql;
pub use tls::TlsConfig;
