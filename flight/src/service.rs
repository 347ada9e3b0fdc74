//! The Flight SQL service: statement queries and the metadata commands clients use to browse.
//! Tickets carry the SQL text, so any server of a fleet can answer any ticket.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::auth::Authenticator;
use crate::cancel::Cancellations;
use crate::executor::{QueryExecutor, QueryStream};
use crate::limits::Limits;
use crate::metadata;
use crate::prepared::{self, Handle};
use crate::query::{Caller, Gate};
use crate::rbac::Policy;
use crate::sql_info::{SQL_INFO, XDBC_TYPES};
use crate::{Error, Identity};
use engine::Grants;

type DoGetStream = <SakuraFlightSql as FlightService>::DoGetStream;

/// Flight SQL over a [`QueryExecutor`].
#[derive(Debug, Clone)]
pub struct SakuraFlightSql {
    gate: Gate,
    executor: Arc<dyn QueryExecutor>,
    auth: Arc<Authenticator>,
    cancellations: Cancellations,
}

impl SakuraFlightSql {
    pub fn new(
        executor: Arc<dyn QueryExecutor>,
        auth: Arc<Authenticator>,
        policy: Arc<Policy>,
        limits: Arc<Limits>,
    ) -> Self {
        Self {
            gate: Gate::new(executor.clone(), policy, limits),
            executor,
            auth,
            cancellations: Cancellations::default(),
        }
    }

    /// What the caller of `request` may read: from the [`Identity`] the auth layer attached.
    async fn grants<T>(&self, request: &Request<T>) -> Result<Grants, Status> {
        Ok(self
            .gate
            .grants(request.extensions().get::<Identity>())
            .await?)
    }

    /// Runs the statement of a ticket's handle for the caller of `request` and streams its
    /// result, stoppable by `CancelFlightInfo` on the ticket.
    async fn run_ticket<T>(
        &self,
        request: &Request<T>,
        raw: Bytes,
        handle: &Handle,
    ) -> Result<Response<DoGetStream>, Status> {
        let cancellations = self.cancellations.clone();
        let (schema, batches) = self
            .gate
            .run(
                caller(request),
                &handle.sql,
                &handle.query_id,
                async |grants: &Grants| {
                    self.cancellations.check(&raw)?;
                    if handle.prepared {
                        self.execute_prepared(grants, handle).await
                    } else {
                        self.executor.execute(grants, &handle.sql).await
                    }
                },
                |batches| cancellations.track(raw.clone(), batches).boxed(),
            )
            .await?;
        Ok(encode(schema, batches))
    }

    /// Executes a prepared statement once per bound parameter row (once when it has no
    /// parameters), results concatenated; the rows run as the stream reaches them.
    async fn execute_prepared(
        &self,
        grants: &Grants,
        handle: &Handle,
    ) -> Result<QueryStream, Error> {
        let rows = handle.parameter_rows(&self.gate.limits)?;
        if rows.is_empty() {
            let (_, parameters) = self.executor.prepare(grants, &handle.sql).await?;
            if !parameters.fields().is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "the statement has {} parameter(s); bind them (DoPut) before executing it",
                    parameters.fields().len()
                )));
            }
            return self.executor.execute(grants, &handle.sql).await;
        }
        self.executor.execute_each(grants, &handle.sql, rows).await
    }
}

/// The caller of `request`: the [`Identity`] the auth layer attached, and the peer address.
fn caller<T>(request: &Request<T>) -> Caller<'_> {
    Caller {
        identity: request.extensions().get::<Identity>(),
        peer: request.remote_addr(),
    }
}

/// An empty result of a key command (this engine has no primary or foreign keys).
fn no_keys(schema: SchemaRef) -> Result<Response<DoGetStream>, Status> {
    Ok(encode(schema, stream::empty()))
}

/// The tickets of every endpoint of `info`.
fn tickets_of(info: &FlightInfo) -> Vec<Bytes> {
    info.endpoint
        .iter()
        .filter_map(|e| e.ticket.as_ref().map(|t| t.ticket.clone()))
        .collect()
}

fn ticket_for(msg: impl ProstMessageExt) -> Ticket {
    Ticket {
        ticket: msg.as_any().encode_to_vec().into(),
    }
}

fn flight_info(
    schema: &SchemaRef,
    ticket: Ticket,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::from(Error::Arrow(e)))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor))
}

/// The `FlightInfo` of a metadata command: its result schema and one ticket carrying the command.
fn metadata_info(
    schema: SchemaRef,
    command: impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    Ok(Response::new(flight_info(
        &schema,
        ticket_for(command),
        request.into_inner(),
    )?))
}

/// Streams `batches` as Flight data with `schema` (sent even when there are no batches).
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, Error>> + Send + 'static,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches.map_err(|e| FlightError::Tonic(Box::new(Status::from(e)))))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

fn one_batch(batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(Error::Encode)?;
    Ok(encode(batch.schema(), stream::iter([Ok(batch)])))
}

#[tonic::async_trait]
impl FlightSqlService for SakuraFlightSql {
    type FlightService = Self;

    /// HTTP Basic credentials (or a valid bearer token) in the `authorization` header are
    /// answered with a bearer token, in the response's `authorization` header and as the
    /// payload. With authentication off it succeeds with an empty token.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let peer = request.remote_addr();
        let token = if !self.auth.required() {
            String::new()
        } else {
            let identity = match header {
                Some(h) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
                    self.auth.basic(h, peer).await
                }
                other => self.auth.authenticate(other),
            }
            .and_then(|identity| self.auth.issue(&identity).map(|t| (identity, t)));
            match identity {
                Ok((identity, token)) => {
                    info!(
                        subject = %crate::audit::Quoted::new(&identity.subject),
                        method = identity.method,
                        "handshake"
                    );
                    token
                }
                Err(e) => {
                    crate::audit::refused(peer, "Handshake", &e);
                    return Err(e.into());
                }
            }
        };
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(stream::iter([Ok(reply)])));
        if !token.is_empty() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("issued token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self
            .gate
            .plan_only(caller(&request), &query.query, async |grants: &Grants| {
                self.executor.schema(grants, &query.query).await
            })
            .await?;
        let ticket = ticket_for(TicketStatementQuery {
            statement_handle: Handle::statement_ticket(query.query).to_bytes(),
        });
        Ok(Response::new(flight_info(
            &schema,
            ticket,
            request.into_inner(),
        )?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let raw = request.get_ref().ticket.clone();
        let handle = Handle::decode(&ticket.statement_handle)?;
        self.run_ticket(&request, raw, &handle).await
    }

    /// `INSERT INTO curated.…` / `CREATE TABLE curated.… AS SELECT …` for callers whose roles
    /// may write the target; the rows written. Admitted, time-limited and audited like queries.
    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let sql = prepared::number_placeholders(&command.query);
        let query_id = uuid::Uuid::new_v4().to_string();
        let (_, mut batches) = self
            .gate
            .run(
                caller(&request),
                &sql,
                &query_id,
                async |grants: &Grants| {
                    let rows = self.executor.update(grants, &sql).await?;
                    let batch = crate::update::result_batch(rows)?;
                    Ok((batch.schema(), stream::iter([Ok(batch)]).boxed()))
                },
                |batches| batches,
            )
            .await?;
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            rows += crate::update::rows_affected(&batch?);
        }
        Ok(i64::try_from(rows).unwrap_or(i64::MAX))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let sql = prepared::number_placeholders(&query.query);
        let (dataset, parameters) = self
            .gate
            .plan_only(caller(&request), &sql, async |grants: &Grants| {
                self.executor.prepare(grants, &sql).await
            })
            .await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Handle::new(sql).to_bytes(),
            dataset_schema: prepared::schema_bytes(&dataset)?,
            parameter_schema: prepared::schema_bytes(&parameters)?,
        })
    }

    /// Nothing to free: the handle is the whole statement.
    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Handle::decode(&query.prepared_statement_handle)?;
        Ok(())
    }

    /// Binds parameter rows: the answer is a new handle that carries them.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| Error::InvalidArgument(format!("bad parameter batch: {e}")))?;
        self.gate
            .limits
            .check_parameter_rows(batches.iter().map(RecordBatch::num_rows).sum())?;
        let bound = handle.bind(&batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.to_bytes()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let schema = self
            .gate
            .plan_only(caller(&request), &handle.sql, async |grants: &Grants| {
                // The parameter rows are checked (count, types) now, not only at DoGet.
                let rows = handle.parameter_rows(&self.gate.limits)?;
                Ok(match rows.into_iter().next() {
                    Some(row) => {
                        self.executor
                            .execute_each(grants, &handle.sql, vec![row])
                            .await?
                            .0
                    }
                    None => self.executor.prepare(grants, &handle.sql).await?.0,
                })
            })
            .await?;
        let ticket = ticket_for(TicketStatementQuery {
            statement_handle: handle.ticket().to_bytes(),
        });
        Ok(Response::new(flight_info(
            &schema,
            ticket,
            request.into_inner(),
        )?))
    }

    /// Tickets of prepared statements are statement tickets (with a query id); this answers
    /// a client that sends the command itself as a ticket.
    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let raw = request.get_ref().ticket.clone();
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        self.run_ticket(&request, raw, &handle).await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let data = XDBC_TYPES
            .as_ref()
            .map_err(|e| Status::internal(e.clone()))?;
        metadata_info(query.into_builder(data).schema(), query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let data = XDBC_TYPES
            .as_ref()
            .map_err(|e| Status::internal(e.clone()))?;
        one_batch(query.into_builder(data).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(metadata::primary_keys_schema(), query, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_keys(metadata::primary_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(metadata::foreign_keys_schema(), query, request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_keys(metadata::foreign_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(metadata::foreign_keys_schema(), query, request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_keys(metadata::foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(metadata::foreign_keys_schema(), query, request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_keys(metadata::foreign_keys_schema())
    }

    /// The deprecated Flight SQL `CancelQuery`, answered like `CancelFlightInfo`.
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Error::InvalidArgument(format!("bad FlightInfo: {e}")))?;
        self.cancellations.cancel(&tickets_of(&info));
        Ok(ActionCancelQueryResult {
            // CANCEL_RESULT_CANCELLED (the generated enum is not re-exported).
            result: 1,
        })
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: "CancelFlightInfo".into(),
            description: "Cancel the queries of a FlightInfo's tickets (this server)".into(),
        })])
    }

    /// `CancelFlightInfo` (a core Flight action, not a Flight SQL command).
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != "CancelFlightInfo" {
            return Err(Error::Unimplemented(format!("action {:?}", action.r#type)).into());
        }
        let req = CancelFlightInfoRequest::decode(action.body)
            .map_err(|e| Error::InvalidArgument(format!("bad CancelFlightInfoRequest: {e}")))?;
        let info = req.info.ok_or_else(|| {
            Error::InvalidArgument("CancelFlightInfoRequest without a FlightInfo".into())
        })?;
        let stopped = self.cancellations.cancel(&tickets_of(&info));
        info!(running_stopped = stopped, "CancelFlightInfo");
        let result = CancelFlightInfoResult {
            status: CancelStatus::Cancelled as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(body)]))))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(query.into_builder().schema(), query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.executor.tables(&self.grants(&request).await?).await?;
        one_batch(metadata::catalogs(query, &tables))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(query.clone().into_builder().schema(), query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.executor.tables(&self.grants(&request).await?).await?;
        one_batch(metadata::schemas(query, &tables))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(query.clone().into_builder().schema(), query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.executor.tables(&self.grants(&request).await?).await?;
        one_batch(metadata::tables(query, &tables))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(query.into_builder().schema(), query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        one_batch(metadata::table_types(query))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let data = SQL_INFO.as_ref().map_err(|e| Status::internal(e.clone()))?;
        metadata_info(query.clone().into_builder(data).schema(), query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let data = SQL_INFO.as_ref().map_err(|e| Status::internal(e.clone()))?;
        one_batch(query.into_builder(data).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
