//! The HTTP SQL API: `POST /api/v1/sql` runs one statement through the same path as Flight SQL
//! (authentication, RBAC, limits, audit) and answers JSON, NDJSON, CSV or Arrow IPC by the
//! request's `Accept`; `GET /api/v1/openapi.json` describes it.
//!
//! The status is chosen after the first megabyte of the encoded result (or its end), so a
//! query that fails early — planning, permissions, limits, most runtime errors — gets the
//! proper status and a JSON error body. A larger result is streamed; if it fails later the
//! connection is cut before the final chunk, which every HTTP client reports as an incomplete
//! response, and the audit line records the error.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tonic::{Code, Status};

use crate::audit::Audit;
use crate::auth::Authenticator;
use crate::query::{Batches, Caller, Gate};
use crate::{Error, Identity};

/// Bytes of encoded result held back before the response status is sent.
const HOLD_BACK: usize = 1 << 20;

/// What the API handlers need.
#[derive(Debug, Clone)]
pub struct SqlApi {
    pub(crate) gate: Gate,
    pub(crate) auth: Arc<Authenticator>,
}

impl SqlApi {
    pub fn new(
        executor: Arc<dyn crate::QueryExecutor>,
        auth: Arc<Authenticator>,
        policy: Arc<crate::Policy>,
        limits: Arc<crate::Limits>,
    ) -> Self {
        Self {
            gate: Gate::new(executor, policy, limits),
            auth,
        }
    }
}

/// A JSON request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    /// Values of `$1`, `$2`, … (or `?` in order).
    #[serde(default)]
    params: Vec<Value>,
}

/// The result encodings, by media type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    NdJson,
    Csv,
    Arrow,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::NdJson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => ARROW_STREAM,
        }
    }

    /// The first supported type the `Accept` header lists (quality values are not weighed:
    /// clients list their preference first); JSON when it is absent or accepts anything.
    fn from_accept(accept: Option<&str>) -> Result<Self, String> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Ok(Self::Json);
        };
        for item in accept.split(',') {
            let media = item.split(';').next().unwrap_or("").trim();
            let format = match media.to_ascii_lowercase().as_str() {
                "application/json" | "application/*" | "*/*" => Self::Json,
                "application/x-ndjson" | "application/jsonl" => Self::NdJson,
                "text/csv" | "text/*" => Self::Csv,
                ARROW_STREAM => Self::Arrow,
                _ => continue,
            };
            return Ok(format);
        }
        Err(format!(
            "none of the types in `Accept: {accept}` is served; use application/json, \
             application/x-ndjson, text/csv or {ARROW_STREAM}"
        ))
    }
}

/// Turns result batches into response bytes, one chunk per batch.
enum Encoder {
    Json(arrow::json::Writer<Vec<u8>, arrow::json::writer::JsonArray>),
    NdJson(arrow::json::LineDelimitedWriter<Vec<u8>>),
    Csv { header: bool, schema: SchemaRef },
    Arrow(arrow::ipc::writer::StreamWriter<Vec<u8>>),
}

impl Encoder {
    fn new(format: Format, schema: &SchemaRef) -> Result<Self, Error> {
        Ok(match format {
            Format::Json => Self::Json(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(Vec::new()),
            ),
            Format::NdJson => Self::NdJson(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(Vec::new()),
            ),
            Format::Csv => Self::Csv {
                header: true,
                schema: schema.clone(),
            },
            Format::Arrow => Self::Arrow(arrow::ipc::writer::StreamWriter::try_new(
                Vec::new(),
                schema,
            )?),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, Error> {
        // An empty batch would make arrow-json open the array twice; it has no rows anyway.
        if batch.num_rows() == 0 && !matches!(self, Self::Arrow(_)) {
            return Ok(Bytes::new());
        }
        Ok(match self {
            Self::Json(w) => {
                w.write(batch)?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
            Self::NdJson(w) => {
                w.write(batch)?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
            Self::Csv { header, .. } => {
                let mut out = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(std::mem::take(header))
                    .build(&mut out)
                    .write(batch)?;
                Bytes::from(out)
            }
            Self::Arrow(w) => {
                w.write(batch)?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
        })
    }

    fn finish(&mut self) -> Result<Bytes, Error> {
        Ok(match self {
            Self::Json(w) => {
                w.finish()?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
            Self::NdJson(_) => Bytes::new(),
            Self::Csv { header, schema } => {
                // A result without rows still has its header line.
                if *header {
                    header_only(schema.clone())?
                } else {
                    Bytes::new()
                }
            }
            Self::Arrow(w) => {
                w.finish()?;
                Bytes::from(std::mem::take(w.get_mut()))
            }
        })
    }
}

/// The CSV header line of `schema`.
fn header_only(schema: SchemaRef) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut out)
        .write(&RecordBatch::new_empty(schema))?;
    Ok(Bytes::from(out))
}

/// The HTTP status of a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error body: `{"error": {"code": "PERMISSION_DENIED", "message": …, "query_id": …}}`.
fn error_body(status: StatusCode, code: &str, message: &str, query_id: Option<&str>) -> Response {
    let body = json!({"error": {"code": code, "message": message, "query_id": query_id}});
    (status, axum::Json(body)).into_response()
}

/// The error response of a failed call, its code spelled as gRPC spells it.
fn error_response(status: &Status, query_id: Option<&str>) -> Response {
    let code = status.code();
    let name = format!("{code:?}");
    // `PermissionDenied` → `PERMISSION_DENIED`.
    let mut grpc = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            grpc.push('_');
        }
        grpc.push(c.to_ascii_uppercase());
    }
    let mut response = error_body(http_status(code), &grpc, status.message(), query_id);
    if code == Code::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sakura\", Basic realm=\"sakura\""),
        );
    }
    response
}

/// A JSON parameter as a SQL value (the engine casts it to the placeholder's type).
fn scalar(i: usize, v: &Value) -> Result<ScalarValue, Error> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), ..) => ScalarValue::Int64(Some(i)),
            (None, Some(u), _) => ScalarValue::UInt64(Some(u)),
            (None, None, Some(f)) => ScalarValue::Float64(Some(f)),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "params[{i}] = {n} is not a representable number"
                )));
            }
        },
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(Error::InvalidArgument(format!(
                "params[{i}] is an array or object; parameters are scalars"
            )));
        }
    })
}

/// The statement and its parameters: a JSON body `{"sql": …, "params": [...]}`, or any other
/// body as the SQL text itself.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<(String, Vec<ScalarValue>), Error> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let (sql, params) = if is_json {
        let req: SqlRequest = serde_json::from_slice(body).map_err(|e| {
            Error::InvalidArgument(format!(
                "the body is not {{\"sql\": \"…\", \"params\": [...]}}: {e}"
            ))
        })?;
        let params = req
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| scalar(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        (req.sql, params)
    } else {
        let sql = std::str::from_utf8(body)
            .map_err(|e| Error::InvalidArgument(format!("the SQL text is not UTF-8: {e}")))?;
        (sql.to_string(), Vec::new())
    };
    if sql.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "no SQL: send the statement as the body, or {\"sql\": \"…\"} as application/json"
                .into(),
        ));
    }
    Ok((crate::prepared::number_placeholders(&sql), params))
}

/// Who is calling: HTTP clients may send Basic credentials directly (`curl -u`) or a bearer
/// token (an API token, a JWT, or the token a Flight handshake issued).
async fn authenticate(
    auth: &Authenticator,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Identity, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match value {
        Some(h) if auth.required() && h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            auth.basic(h, peer).await
        }
        other => auth.authenticate(other),
    }
}

/// `POST /api/v1/sql`
pub(crate) async fn sql(
    State(api): State<Arc<SqlApi>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<crate::http::Peer>>()
                .map(|ConnectInfo(p)| p.0)
        });
    let identity = match authenticate(&api.auth, &headers, peer).await {
        Ok(i) => i,
        Err(e) => {
            crate::audit::refused(peer, "/api/v1/sql", &e);
            return error_response(&Status::from(e), None);
        }
    };
    let caller = Caller {
        identity: Some(&identity),
        peer,
    };
    let query_id = uuid::Uuid::new_v4().to_string();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = match Format::from_accept(accept) {
        Ok(f) => f,
        Err(message) => {
            return error_body(
                StatusCode::NOT_ACCEPTABLE,
                "NOT_ACCEPTABLE",
                &message,
                Some(&query_id),
            );
        }
    };
    let (sql, params) = match parse_body(&headers, &body) {
        Ok(p) => p,
        Err(e) => {
            let status = Status::from(e);
            let sql = String::from_utf8_lossy(&body);
            Audit::start(caller.identity, peer, &sql, &query_id).failed(&status);
            return error_response(&status, Some(&query_id));
        }
    };
    let executor = api.gate.executor.clone();
    let ran = api
        .gate
        .run(
            caller,
            &sql,
            &query_id,
            async |grants| {
                if params.is_empty() {
                    executor.execute(grants, &sql).await
                } else {
                    executor.execute_each(grants, &sql, vec![params]).await
                }
            },
            |batches| batches,
        )
        .await;
    match ran {
        Ok((schema, batches)) => respond(format, schema, batches, &query_id).await,
        Err(status) => error_response(&status, Some(&query_id)),
    }
}

/// The response for a result: status after the held-back prefix, then the rest streamed.
async fn respond(
    format: Format,
    schema: SchemaRef,
    mut batches: Batches,
    query_id: &str,
) -> Response {
    let mut encoder = match Encoder::new(format, &schema) {
        Ok(e) => e,
        Err(e) => return error_response(&Status::from(e), Some(query_id)),
    };
    let mut head: Vec<Bytes> = Vec::new();
    let mut held = 0;
    let mut ended = false;
    while held < HOLD_BACK {
        match batches.next().await {
            Some(Ok(batch)) => match encoder.batch(&batch) {
                Ok(bytes) => {
                    held += bytes.len();
                    head.push(bytes);
                }
                Err(e) => return error_response(&Status::from(e), Some(query_id)),
            },
            Some(Err(e)) => return error_response(&Status::from(e), Some(query_id)),
            None => {
                ended = true;
                break;
            }
        }
    }
    let body = if ended {
        match encoder.finish() {
            Ok(tail) => {
                head.push(tail);
                Body::from(head.concat())
            }
            Err(e) => return error_response(&Status::from(e), Some(query_id)),
        }
    } else {
        let rest = stream::unfold(
            (batches, Some(encoder)),
            |(mut batches, encoder)| async move {
                let mut encoder = encoder?;
                match batches.next().await {
                    Some(Ok(batch)) => {
                        let chunk = encoder.batch(&batch);
                        Some((chunk, (batches, Some(encoder))))
                    }
                    Some(Err(e)) => {
                        // Cuts the connection: the client sees an incomplete response.
                        Some((Err(e), (batches, None)))
                    }
                    None => Some((encoder.finish(), (batches, None))),
                }
            },
        );
        Body::from_stream(stream::iter(head.into_iter().map(Ok)).chain(rest))
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    if let Ok(v) = HeaderValue::from_str(query_id) {
        h.insert("x-sakura-query-id", v);
    }
    response
}

/// `GET /api/v1/openapi.json`
pub(crate) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The OpenAPI 3.1 document of the HTTP API.
const OPENAPI: &str = include_str!("openapi.json");
