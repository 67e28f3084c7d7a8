//! Training sets over Arrow Flight (`larder offline serve`), for notebooks:
//! `pyarrow.flight` sends a ticket and reads Arrow record batches straight
//! into pandas.
//!
//! The ticket is JSON:
//!
//! ```json
//! {"features": ["kubeflow-alice/driver_daily_stats:acc_rate"],
//!  "entities": {"driver_id": [1001, 1002],
//!               "event_timestamp": ["2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"]},
//!  "namespace": "kubeflow-bob"}
//! ```
//!
//! `feature_service` may replace `features`, and `entity_sql` may replace
//! `entities`. The caller's token (gRPC metadata `authorization: Bearer
//! ...`) is checked like everywhere else. Every view read needs `get`, and
//! the training set is built as the database user of the caller's namespace.
//! Only `DoGet` is served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::{BoxStream, StreamExt};
use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use super::historical::{self, EntityInput, HistoricalRequest};
use super::{OfflineError, OfflineStore};
use crate::auth::{Auth, AuthError, Caller};
use crate::config::Config;
use crate::serving::FeatureSelection;

/// What a ticket asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub feature_service: Option<String>,
    /// Entity columns: each join key and `event_timestamp`, one value per
    /// row.
    #[serde(default)]
    pub entities: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub entity_sql: Option<String>,
    /// The namespace of unqualified refs; the caller's own by default.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The Flight service: configuration and the shared authenticator.
pub struct OfflineFlight {
    config: Arc<Config>,
    auth: Arc<Auth>,
    user_namespaces: HashMap<String, String>,
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
        AuthError::Forbidden(_) => Status::permission_denied(e.to_string()),
        AuthError::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

fn offline_status(e: OfflineError) -> Status {
    match e {
        OfflineError::PermissionDenied(_) => Status::permission_denied(e.to_string()),
        OfflineError::NotFound(_) => Status::not_found(e.to_string()),
        OfflineError::Invalid(_) => Status::invalid_argument(e.to_string()),
        OfflineError::Database(_) | OfflineError::Online(_) | OfflineError::Io(_) => {
            Status::unavailable(e.to_string())
        }
    }
}

impl OfflineFlight {
    pub fn new(config: Arc<Config>, auth: Arc<Auth>) -> Self {
        let user_namespaces = config.user_namespaces().into_iter().collect();
        OfflineFlight {
            config,
            auth,
            user_namespaces,
        }
    }

    /// The namespace the caller acts in: a service account's own, or the
    /// one that lists a person; `default` when authentication is off.
    fn caller_namespace(&self, caller: &Caller, asked: Option<&str>) -> Result<String, Status> {
        if self.auth.is_disabled() {
            return Ok(asked
                .unwrap_or(&self.config.serve.default_namespace)
                .to_owned());
        }
        crate::auth::caller_namespace(caller, &self.user_namespaces)
            .map(str::to_owned)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "{} acts in no namespace (people are listed in namespaces.<ns>.users)",
                    caller.name
                ))
            })
    }

    /// Authenticates, authorizes every view and builds the training set.
    async fn training_set(
        &self,
        authorization: Option<&str>,
        ticket: &[u8],
    ) -> Result<BoxStream<'static, Result<arrow_array::RecordBatch, FlightError>>, Status> {
        let caller = self
            .auth
            .authenticate(authorization)
            .await
            .map_err(auth_status)?;
        let request: TicketRequest = serde_json::from_slice(ticket).map_err(|e| {
            Status::invalid_argument(format!("the ticket is not a training-set request: {e}"))
        })?;
        let acting = self.caller_namespace(&caller, request.namespace.as_deref())?;
        let namespace = request.namespace.clone().unwrap_or_else(|| acting.clone());
        let features = match (request.feature_service, request.features.is_empty()) {
            (Some(service), true) => FeatureSelection::Service(service),
            (None, false) => FeatureSelection::Refs(request.features),
            _ => {
                return Err(Status::invalid_argument(
                    "the ticket needs exactly one of `features` and `feature_service`",
                ));
            }
        };
        let entities = match (request.entities, request.entity_sql) {
            (Some(columns), None) => {
                EntityInput::Arrow(historical::json_columns(&columns).map_err(offline_status)?)
            }
            (None, Some(sql)) => EntityInput::Sql(sql),
            _ => {
                return Err(Status::invalid_argument(
                    "the ticket needs exactly one of `entities` and `entity_sql`",
                ));
            }
        };
        let snapshot = crate::cli::load_snapshot(&self.config.serve.definitions, &self.config)
            .map_err(|e| Status::unavailable(format!("loading definitions: {e:#}")))?;
        // Every view read, authorized before anything is looked up.
        for (resource, ns, name) in
            historical::objects_read(&snapshot, &namespace, &features).map_err(offline_status)?
        {
            self.auth
                .authorize(&caller, "get", resource, &ns, &name)
                .await
                .map_err(auth_status)?;
        }
        let store = OfflineStore::for_namespace(&self.config, &acting).map_err(offline_status)?;
        let request = HistoricalRequest {
            namespace,
            features,
            entities,
        };
        let set = historical::record_batches(store, &snapshot, request, 4)
            .await
            .map_err(offline_status)?;
        Ok(set
            .batches
            .map(|b| b.map_err(|e| FlightError::ExternalError(Box::new(e))))
            .boxed())
    }
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "larder's Flight endpoint serves DoGet only, not {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for OfflineFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("Handshake (send the bearer token as `authorization` metadata)")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ticket = request.into_inner().ticket;
        let batches = self.training_set(authorization.as_deref(), &ticket).await?;
        let data = FlightDataEncoderBuilder::new()
            .build(batches)
            .map(|d| d.map_err(|e| Status::internal(e.to_string())));
        Ok(Response::new(Box::pin(data)))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("DoPut")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("DoExchange")
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("DoAction")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("ListActions")
    }
}

/// Serves the Flight endpoint on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    service: OfflineFlight,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(address = ?address, "serving training sets over Arrow Flight");
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
