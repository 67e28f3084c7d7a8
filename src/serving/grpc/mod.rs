//! `feast.serving.ServingService` over gRPC, plus the gRPC health and
//! reflection services so grpcurl and ghz work without proto files.

mod response;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::model::Value;
use crate::proto::feast::serving as pb;
use crate::proto::feast::types as pbt;
use crate::proto::larder::v1 as lpb;
use crate::proto::larder::v1::push_service_server::{PushService, PushServiceServer};

use super::{FeatureSelection, FeatureServer, OnlineRequest, ServingError};

pub use super::NAMESPACE_HEADER;
pub use response::{EncodedResponse, to_wire};

/// The gRPC side of the feature server.
pub struct GrpcApi {
    server: Arc<FeatureServer>,
}

/// `feast.serving.ServingService`, routed here rather than by the
/// generated server so that GetOnlineFeatures can answer with an
/// [`EncodedResponse`]: stored values go out as the bytes they are stored
/// as, which the generated service's prost structs cannot carry.
#[derive(Clone)]
pub struct ServingRoutes {
    api: Arc<GrpcApi>,
    /// The transport's ceiling on request size.
    max_decoding: usize,
}

impl NamedService for ServingRoutes {
    const NAME: &'static str = "feast.serving.ServingService";
}

impl<B> Service<http::Request<B>> for ServingRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let api = self.api.clone();
        let max = self.max_decoding;
        match request.uri().path() {
            "/feast.serving.ServingService/GetOnlineFeatures" => Box::pin(async move {
                let codec = ProstCodec::<EncodedResponse, pb::GetOnlineFeaturesRequest>::default();
                let method = tower::service_fn(move |r| {
                    let api = api.clone();
                    async move { api.get_online_features(r).await }
                });
                Ok(Grpc::new(codec)
                    .max_decoding_message_size(max)
                    .unary(method, request)
                    .await)
            }),
            "/feast.serving.ServingService/GetFeastServingInfo" => Box::pin(async move {
                let codec = ProstCodec::<
                    pb::GetFeastServingInfoResponse,
                    pb::GetFeastServingInfoRequest,
                >::default();
                let method = tower::service_fn(|_: Request<pb::GetFeastServingInfoRequest>| {
                    std::future::ready(Ok::<_, Status>(Response::new(
                        pb::GetFeastServingInfoResponse {
                            version: format!("larder {}", env!("CARGO_PKG_VERSION")),
                        },
                    )))
                });
                Ok(Grpc::new(codec)
                    .max_decoding_message_size(max)
                    .unary(method, request)
                    .await)
            }),
            path => {
                let status = Status::unimplemented(format!("no gRPC method {path}"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The gRPC services as an axum router, to share a port with HTTP.
pub async fn routes(server: Arc<FeatureServer>) -> axum::Router {
    let max = server.settings().max_request_bytes;
    let server_for_push = server.clone();
    let serving = ServingRoutes {
        api: Arc::new(GrpcApi { server }),
        // A hard ceiling on what the transport decodes at all; requests
        // between the configured limit and this get RESOURCE_EXHAUSTED from
        // the handler, larger ones OUT_OF_RANGE from the transport.
        max_decoding: max.saturating_mul(4),
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Serving status is static: readiness of the store is on /ready.
    health_reporter
        .set_service_status(ServingRoutes::NAME, tonic_health::ServingStatus::Serving)
        .await;
    health_reporter
        .set_serving::<PushServiceServer<PushApi>>()
        .await;
    // Both reflection versions: grpcurl asks v1 first, ghz and older
    // tools only know v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let push = PushServiceServer::new(PushApi {
        server: server_for_push,
    })
    .max_decoding_message_size(max.saturating_mul(4));
    tonic::service::Routes::new(serving)
        .add_service(push)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
}

/// Parses a `grpc-timeout` header value: digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn entity_columns(
    entities: std::collections::HashMap<String, pbt::RepeatedValue>,
) -> Vec<(String, Vec<Value>)> {
    let mut columns: Vec<(String, Vec<Value>)> = entities
        .into_iter()
        .map(|(name, values)| (name, values.val.into_iter().map(Value::from).collect()))
        .collect();
    // Protobuf maps have no order; sort so that errors are deterministic.
    columns.sort_by(|a, b| a.0.cmp(&b.0));
    columns
}

/// A request header's value, when it is there and ASCII.
fn header<'r, M>(request: &'r Request<M>, name: &str) -> Option<&'r str> {
    request.metadata().get(name).and_then(|v| v.to_str().ok())
}

/// A request's `x-larder-namespace` header and its message, refused when
/// the encoded message is over `serve.max_request_bytes`.
fn checked<M: Message>(
    server: &FeatureServer,
    request: Request<M>,
) -> Result<(Option<String>, M), ServingError> {
    let namespace =
        super::namespace_header(request.metadata().get(NAMESPACE_HEADER).map(|v| v.to_str()))?;
    let message = request.into_inner();
    let max = server.settings().max_request_bytes;
    let size = message.encoded_len();
    if size > max {
        return Err(ServingError::TooLarge(format!(
            "the request is {size} bytes; the limit is {max}"
        )));
    }
    Ok((namespace, message))
}

impl GrpcApi {
    async fn get_online_features(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<Response<EncodedResponse>, Status> {
        let caller = self
            .server
            .authenticate("grpc", header(&request, "authorization"))
            .await?;
        let deadline = header(&request, "grpc-timeout").and_then(parse_grpc_timeout);
        let request = match self.to_domain(request) {
            Ok(r) => r,
            Err(e) => {
                self.server.record_rejected("grpc", "GetOnlineFeatures", &e);
                return Err(e.into());
            }
        };
        let response = self
            .server
            .get_online_features("grpc", &caller, request, deadline)
            .await?;
        Ok(Response::new(EncodedResponse::new(response)))
    }

    /// Checks a request's size and shape and converts it to domain terms.
    fn to_domain(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<OnlineRequest, ServingError> {
        let (namespace, message) = checked(&self.server, request)?;
        let features = match message.kind {
            Some(pb::get_online_features_request::Kind::FeatureService(name)) => {
                FeatureSelection::Service(name)
            }
            Some(pb::get_online_features_request::Kind::Features(list)) => {
                FeatureSelection::Refs(list.val)
            }
            None => {
                return Err(ServingError::InvalidArgument(
                    "the request names neither features nor a feature_service".into(),
                ));
            }
        };
        Ok(OnlineRequest {
            features,
            entities: entity_columns(message.entities),
            full_feature_names: message.full_feature_names,
            namespace,
            untyped_integers: false,
            request_data: entity_columns(message.request_context),
        })
    }
}

/// `larder.v1.PushService`: Feast's push API over gRPC.
pub struct PushApi {
    server: Arc<FeatureServer>,
}

#[tonic::async_trait]
impl PushService for PushApi {
    async fn push(
        &self,
        request: Request<lpb::PushRequest>,
    ) -> Result<Response<lpb::PushResponse>, Status> {
        let caller = self
            .server
            .authenticate_for("grpc", "Push", header(&request, "authorization"))
            .await?;
        let request = match self.to_domain(request) {
            Ok(r) => r,
            Err(e) => {
                self.server.record_rejected("grpc", "Push", &e);
                return Err(e.into());
            }
        };
        let outcome = self.server.push("grpc", &caller, request).await?;
        Ok(Response::new(lpb::PushResponse {
            rows: outcome.rows as u64,
            views: outcome
                .views
                .into_iter()
                .map(|(feature_view, online, offline)| lpb::ViewWrite {
                    feature_view,
                    online_rows: online as u64,
                    offline_rows: offline,
                })
                .collect(),
        }))
    }
}

impl PushApi {
    fn to_domain(
        &self,
        request: Request<lpb::PushRequest>,
    ) -> Result<crate::ingest::push::PushRequest, ServingError> {
        use crate::ingest::PushTo;
        let (namespace, message) = checked(&self.server, request)?;
        let to = match lpb::PushTo::try_from(message.to) {
            Ok(lpb::PushTo::Online) => PushTo::Online,
            Ok(lpb::PushTo::Offline) => PushTo::Offline,
            Ok(lpb::PushTo::OnlineAndOffline) => PushTo::OnlineAndOffline,
            Err(_) => {
                return Err(ServingError::InvalidArgument(format!(
                    "to: {} is not a PushTo value",
                    message.to
                )));
            }
        };
        let mut columns: Vec<(String, Vec<crate::offline::materialize::Raw>)> = message
            .columns
            .into_iter()
            .map(|(name, values)| {
                let values = values
                    .val
                    .into_iter()
                    .map(|v| crate::ingest::decode::raw_of_value(Value::from(v)))
                    .collect();
                (name, values)
            })
            .collect();
        // Protobuf maps have no order; sort so that errors are deterministic.
        columns.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(crate::ingest::push::PushRequest {
            push_source: message.push_source_name,
            namespace,
            columns,
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }
}
