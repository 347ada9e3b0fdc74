//! `sakura sql`: a Flight SQL client that prints a statement's result as a table, CSV or JSON.

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// Output formats of `sakura sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

fn client_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Client(format!("{what}: {e}"))
}

/// How `sakura sql` authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    None,
    /// A bearer token.
    Token(String),
    /// User and password for the handshake, which returns a bearer token.
    Basic(String, String),
}

/// TLS settings of `sakura sql` (used with `grpc+tls://` endpoints).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tls {
    /// CA of the server's certificate; `None`: the system's roots.
    pub(crate) ca: Option<std::path::PathBuf>,
    /// Client certificate and key (mTLS).
    pub(crate) cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| client_err(&format!("cannot read {what} {}", path.display()), e))
}

impl Tls {
    fn client_config(&self) -> Result<ClientTlsConfig> {
        let mut cfg = ClientTlsConfig::new();
        cfg = match &self.ca {
            Some(ca) => cfg.ca_certificate(Certificate::from_pem(read_pem("--tls-ca", ca)?)),
            None => cfg.with_native_roots(),
        };
        if let Some((cert, key)) = &self.cert {
            cfg = cfg.identity(Identity::from_pem(
                read_pem("--tls-cert", cert)?,
                read_pem("--tls-key", key)?,
            ));
        }
        Ok(cfg)
    }
}

/// Runs `sql` on the Flight SQL server at `endpoint` and returns the result batches.
pub(crate) async fn query(
    endpoint: &str,
    sql: &str,
    credentials: &Credentials,
    tls: &Tls,
) -> Result<Vec<RecordBatch>> {
    let url = http_endpoint(endpoint);
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| client_err(&format!("invalid endpoint {endpoint:?}"), e))?;
    if url.starts_with("https://") {
        ep = ep
            .tls_config(tls.client_config()?)
            .map_err(|e| client_err("bad TLS settings", e))?;
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| client_err(&format!("cannot connect to {endpoint}"), e))?;
    let mut client = FlightSqlServiceClient::new(channel);
    match credentials {
        Credentials::None => {}
        Credentials::Token(t) => client.set_token(t.clone()),
        Credentials::Basic(user, password) => {
            client
                .handshake(user, password)
                .await
                .map_err(|e| client_err("authentication failed", e))?;
        }
    }
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| client_err("query failed", e))?;
    let mut batches = Vec::new();
    for ep in info.endpoint {
        let Some(ticket) = ep.ticket else { continue };
        let stream = client
            .do_get(ticket)
            .await
            .map_err(|e| client_err("fetching results failed", e))?;
        let mut part: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| client_err("reading results failed", e))?;
        batches.append(&mut part);
    }
    Ok(batches)
}

/// Accepts the Flight URI forms clients use (`grpc://`, `grpc+tcp://`, `grpc+tls://`) as well as
/// `http(s)://`, and a bare `host:port`.
fn http_endpoint(endpoint: &str) -> String {
    for (scheme, http) in [
        ("grpc+tls://", "https://"),
        ("grpc+tcp://", "http://"),
        ("grpc://", "http://"),
    ] {
        if let Some(rest) = endpoint.strip_prefix(scheme) {
            return format!("{http}{rest}");
        }
    }
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Renders batches in `format`.
pub(crate) fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::Writer::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(buf).map_err(|e| client_err("csv output", e))
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(buf).map_err(|e| client_err("json output", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("host", Arc::new(StringArray::from(vec!["a", "b"])) as _),
            ("n", Arc::new(Int64Array::from(vec![1, 2])) as _),
        ])
        .unwrap()
    }

    #[test]
    fn flight_uris_become_http_endpoints() {
        assert_eq!(
            http_endpoint("grpc://127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(http_endpoint("grpc+tls://h:443"), "https://h:443");
        assert_eq!(http_endpoint("localhost:50051"), "http://localhost:50051");
        assert_eq!(http_endpoint("http://h:1"), "http://h:1");
    }

    #[test]
    fn renders_each_format() {
        let b = [batch()];
        assert!(render(&b, Format::Table).unwrap().contains("| host | n |"));
        assert_eq!(render(&b, Format::Csv).unwrap(), "host,n\na,1\nb,2\n");
        assert_eq!(
            render(&b, Format::Json).unwrap(),
            "{\"host\":\"a\",\"n\":1}\n{\"host\":\"b\",\"n\":2}\n"
        );
    }
}
