//! The Flight SQL service: statement queries and the metadata commands clients use to browse.
//! Tickets carry the SQL text, so any server of a fleet can answer any ticket.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::{Stream, TryStreamExt, stream};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::Error;
use crate::executor::QueryExecutor;
use crate::sql_info::SQL_INFO;

type DoGetStream = <SakuraFlightSql as FlightService>::DoGetStream;

/// Flight SQL over a [`QueryExecutor`].
#[derive(Debug, Clone)]
pub struct SakuraFlightSql {
    executor: Arc<dyn QueryExecutor>,
}

impl SakuraFlightSql {
    pub fn new(executor: Arc<dyn QueryExecutor>) -> Self {
        Self { executor }
    }
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

fn statement_sql(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec())
        .map_err(|_| Error::InvalidArgument("statement handle is not UTF-8 SQL".into()).into())
}

#[tonic::async_trait]
impl FlightSqlService for SakuraFlightSql {
    type FlightService = Self;

    /// With authentication off, the handshake succeeds with an empty token.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.executor.schema(&query.query).await?;
        let ticket = ticket_for(TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
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
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let sql = statement_sql(&ticket.statement_handle)?;
        let started = std::time::Instant::now();
        let (schema, batches) = self.executor.execute(&sql).await?;
        info!(sql = %sql, planning_ms = started.elapsed().as_millis() as u64, "query");
        Ok(encode(schema, batches))
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
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.executor.tables().await?;
        let mut b = query.into_builder();
        for c in tables
            .iter()
            .map(|t| t.catalog.as_str())
            .collect::<BTreeSet<_>>()
        {
            b.append(c);
        }
        one_batch(b.build())
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
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.executor.tables().await?;
        let mut b = query.into_builder();
        let pairs: BTreeSet<_> = tables
            .iter()
            .map(|t| (t.catalog.as_str(), t.schema.as_str()))
            .collect();
        for (c, s) in pairs {
            b.append(c, s);
        }
        one_batch(b.build())
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
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tables = self.executor.tables().await?;
        let mut b = query.into_builder();
        for t in &tables {
            b.append(
                &t.catalog,
                &t.schema,
                &t.name,
                &t.table_type,
                &t.arrow_schema,
            )
            .map_err(Error::Encode)?;
        }
        one_batch(b.build())
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
        let mut b = query.into_builder();
        for t in ["TABLE", "VIEW"] {
            b.append(t);
        }
        one_batch(b.build())
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
