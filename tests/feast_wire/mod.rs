//! A Feast client written from Feast's published wire contract alone: its
//! own message definitions and a plain tonic client. It imports nothing of
//! larder, so tests that use it show that an outside Feast client works.

#![allow(dead_code, clippy::enum_variant_names)]

use std::collections::HashMap;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "Val", tags = "1, 2, 3, 4, 5, 6, 7, 8, 12, 14, 15, 19")]
    pub val: Option<Val>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Val {
    #[prost(bytes, tag = "1")]
    BytesVal(Vec<u8>),
    #[prost(string, tag = "2")]
    StringVal(String),
    #[prost(int32, tag = "3")]
    Int32Val(i32),
    #[prost(int64, tag = "4")]
    Int64Val(i64),
    #[prost(double, tag = "5")]
    DoubleVal(f64),
    #[prost(float, tag = "6")]
    FloatVal(f32),
    #[prost(bool, tag = "7")]
    BoolVal(bool),
    #[prost(int64, tag = "8")]
    UnixTimestampVal(i64),
    #[prost(message, tag = "12")]
    StringListVal(StringList),
    #[prost(message, tag = "14")]
    Int64ListVal(Int64List),
    #[prost(message, tag = "15")]
    DoubleListVal(DoubleList),
    #[prost(int32, tag = "19")]
    NullVal(i32),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringList {
    #[prost(string, repeated, tag = "1")]
    pub val: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub val: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DoubleList {
    #[prost(double, repeated, tag = "1")]
    pub val: Vec<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RepeatedValue {
    #[prost(message, repeated, tag = "1")]
    pub val: Vec<Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureList {
    #[prost(string, repeated, tag = "1")]
    pub val: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(string, tag = "1")]
    FeatureService(String),
    #[prost(message, tag = "2")]
    Features(FeatureList),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOnlineFeaturesRequest {
    #[prost(oneof = "Kind", tags = "1, 2")]
    pub kind: Option<Kind>,
    #[prost(map = "string, message", tag = "3")]
    pub entities: HashMap<String, RepeatedValue>,
    #[prost(bool, tag = "4")]
    pub full_feature_names: bool,
    #[prost(map = "string, message", tag = "5")]
    pub request_context: HashMap<String, RepeatedValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureVector {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
    /// FieldStatus: INVALID 0, PRESENT 1, NULL_VALUE 2, NOT_FOUND 3,
    /// OUTSIDE_MAX_AGE 4.
    #[prost(int32, repeated, tag = "2")]
    pub statuses: Vec<i32>,
    #[prost(message, repeated, tag = "3")]
    pub event_timestamps: Vec<prost_types::Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(message, optional, tag = "1")]
    pub feature_names: Option<FeatureList>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOnlineFeaturesResponse {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(message, repeated, tag = "2")]
    pub results: Vec<FeatureVector>,
    #[prost(bool, tag = "3")]
    pub status: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetFeastServingInfoRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetFeastServingInfoResponse {
    #[prost(string, tag = "1")]
    pub version: String,
}

pub const PRESENT: i32 = 1;
pub const NULL_VALUE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const OUTSIDE_MAX_AGE: i32 = 4;

pub fn int64s(v: &[i64]) -> RepeatedValue {
    RepeatedValue {
        val: v
            .iter()
            .map(|i| Value {
                val: Some(Val::Int64Val(*i)),
            })
            .collect(),
    }
}

pub fn strings(v: &[&str]) -> RepeatedValue {
    RepeatedValue {
        val: v
            .iter()
            .map(|s| Value {
                val: Some(Val::StringVal(s.to_string())),
            })
            .collect(),
    }
}

pub fn features(refs: &[&str]) -> Option<Kind> {
    Some(Kind::Features(FeatureList {
        val: refs.iter().map(|s| s.to_string()).collect(),
    }))
}

/// A Feast ServingService client.
#[derive(Clone)]
pub struct ServingClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl ServingClient {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        ServingClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    pub async fn unary<Req, Resp>(
        &mut self,
        path: &'static str,
        request: tonic::Request<Req>,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        self.grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get_online_features(
        &mut self,
        request: tonic::Request<GetOnlineFeaturesRequest>,
    ) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
        self.unary("/feast.serving.ServingService/GetOnlineFeatures", request)
            .await
    }

    pub async fn get_feast_serving_info(
        &mut self,
    ) -> Result<GetFeastServingInfoResponse, tonic::Status> {
        self.unary(
            "/feast.serving.ServingService/GetFeastServingInfo",
            tonic::Request::new(GetFeastServingInfoRequest {}),
        )
        .await
    }
}
