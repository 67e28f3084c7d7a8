//! `feast.serving.ServingService` over gRPC, plus the gRPC health and
//! reflection services so grpcurl and ghz work without proto files.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::model::{FieldStatus, Value};
use crate::proto::feast::serving as pb;
use crate::proto::feast::serving::serving_service_server::{ServingService, ServingServiceServer};
use crate::proto::feast::types as pbt;
use crate::proto::larder::v1 as lpb;
use crate::proto::larder::v1::push_service_server::{PushService, PushServiceServer};

use super::{FeatureSelection, FeatureServer, OnlineRequest, OnlineResponse, ServingError};

pub use super::NAMESPACE_HEADER;

/// The gRPC side of the feature server.
pub struct GrpcApi {
    server: Arc<FeatureServer>,
}

/// The gRPC services as an axum router, to share a port with HTTP.
pub async fn routes(server: Arc<FeatureServer>) -> axum::Router {
    let max = server.settings().max_request_bytes;
    let server_for_push = server.clone();
    let serving = ServingServiceServer::new(GrpcApi { server })
        // A hard ceiling on what the transport decodes at all; requests
        // between the configured limit and this get RESOURCE_EXHAUSTED from
        // the handler, larger ones OUT_OF_RANGE from the transport.
        .max_decoding_message_size(max.saturating_mul(4))
        .max_encoding_message_size(usize::MAX);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Serving status is static: readiness of the store is on /ready.
    health_reporter
        .set_serving::<ServingServiceServer<GrpcApi>>()
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

fn status_code(s: FieldStatus) -> i32 {
    (match s {
        FieldStatus::Invalid => pb::FieldStatus::Invalid,
        FieldStatus::Present => pb::FieldStatus::Present,
        FieldStatus::NullValue => pb::FieldStatus::NullValue,
        FieldStatus::NotFound => pb::FieldStatus::NotFound,
        FieldStatus::OutsideMaxAge => pb::FieldStatus::OutsideMaxAge,
    }) as i32
}

/// Builds the Feast response message from the domain response.
pub fn to_wire(response: OnlineResponse) -> pb::GetOnlineFeaturesResponse {
    let results = response
        .columns
        .into_iter()
        .map(|c| pb::get_online_features_response::FeatureVector {
            values: c.values.into_iter().map(pbt::Value::from).collect(),
            statuses: c.statuses.into_iter().map(status_code).collect(),
            event_timestamps: c.event_times.into_iter().map(Into::into).collect(),
        })
        .collect();
    pb::GetOnlineFeaturesResponse {
        metadata: Some(pb::GetOnlineFeaturesResponseMetadata {
            feature_names: Some(pb::FeatureList {
                val: response.names,
            }),
        }),
        results,
        status: true,
    }
}

#[tonic::async_trait]
impl ServingService for GrpcApi {
    async fn get_feast_serving_info(
        &self,
        _request: Request<pb::GetFeastServingInfoRequest>,
    ) -> Result<Response<pb::GetFeastServingInfoResponse>, Status> {
        Ok(Response::new(pb::GetFeastServingInfoResponse {
            version: format!("larder {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn get_online_features(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<Response<pb::GetOnlineFeaturesResponse>, Status> {
        let caller = self
            .server
            .authenticate(
                "grpc",
                request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok()),
            )
            .await?;
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
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
        Ok(Response::new(to_wire(response)))
    }
}

impl GrpcApi {
    /// Checks a request's size and shape and converts it to domain terms.
    fn to_domain(
        &self,
        request: Request<pb::GetOnlineFeaturesRequest>,
    ) -> Result<OnlineRequest, ServingError> {
        let namespace =
            super::namespace_header(request.metadata().get(NAMESPACE_HEADER).map(|v| v.to_str()))?;
        let message = request.into_inner();
        let max = self.server.settings().max_request_bytes;
        let size = message.encoded_len();
        if size > max {
            return Err(ServingError::TooLarge(format!(
                "the request is {size} bytes; the limit is {max}"
            )));
        }
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
            .authenticate_for(
                "grpc",
                "Push",
                request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok()),
            )
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
        let namespace =
            super::namespace_header(request.metadata().get(NAMESPACE_HEADER).map(|v| v.to_str()))?;
        let message = request.into_inner();
        let max = self.server.settings().max_request_bytes;
        let size = message.encoded_len();
        if size > max {
            return Err(ServingError::TooLarge(format!(
                "the request is {size} bytes; the limit is {max}"
            )));
        }
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
