//! The serving hot path without Redis: entity key encoding, field hashing,
//! and the server's whole CPU work for one request (resolve against the
//! snapshot, plan the read, decode stored bytes, assemble the response,
//! encode it for the wire) at 1 x 50 and 100 x 50 (rows x features).

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

use larder::definitions::parse_documents;
use larder::model::{EventTime, Value, ValueType};
use larder::online::layout::{KeyVersion, feature_field, redis_key};
use larder::online::{ReadResult, codec};
use larder::registry::RegistrySnapshot;
use larder::serving::online::plan;
use larder::serving::{FeatureSelection, Limits, OnlineRequest, OnlineResponse, grpc, http};

// The same allocator as the `larder` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VIEWS: usize = 5;
const FEATURES: usize = 10;
const TYPES: [ValueType; 5] = [
    ValueType::Double,
    ValueType::Float,
    ValueType::Int64,
    ValueType::String,
    ValueType::Bool,
];

fn definitions() -> String {
    let mut text = String::from(
        "apiVersion: features.kubeflow.org/v1\nkind: Entity\nmetadata: { name: driver, namespace: bench }\nspec: { joinKeys: [{ name: driver_id, valueType: INT64 }] }\n",
    );
    for v in 0..VIEWS {
        text.push_str(&format!(
            "---\napiVersion: features.kubeflow.org/v1\nkind: FeatureView\nmetadata: {{ name: view_{v}, namespace: bench }}\nspec:\n  entities: [driver]\n  ttl: 1d\n  features:\n"
        ));
        for f in 0..FEATURES {
            text.push_str(&format!(
                "    - {{ name: f{f}, valueType: {} }}\n",
                TYPES[f % TYPES.len()]
            ));
        }
    }
    text
}

fn value_for(t: ValueType, i: usize) -> Value {
    match t {
        ValueType::Double => Value::Double(i as f64 * 1.5),
        ValueType::Float => Value::Float(i as f32 * 0.5),
        ValueType::Int64 => Value::Int64(i as i64),
        ValueType::String => Value::String(format!("value-{i}")),
        _ => Value::Bool(i.is_multiple_of(2)),
    }
}

fn request(rows: usize) -> OnlineRequest {
    let refs = (0..VIEWS)
        .flat_map(|v| (0..FEATURES).map(move |f| format!("view_{v}:f{f}")))
        .collect();
    OnlineRequest {
        features: FeatureSelection::Refs(refs),
        entities: vec![(
            "driver_id".into(),
            (0..rows).map(|r| Value::Int64(1000 + r as i64)).collect(),
        )],
        full_feature_names: true,
        namespace: Some("bench".into()),
        untyped_integers: false,
        request_data: Vec::new(),
    }
}

/// What Redis would return for a plan: every field present.
fn stored(rows: usize) -> ReadResult {
    let now = EventTime::now();
    (0..rows)
        .map(|r| {
            let mut fields = Vec::new();
            for _ in 0..VIEWS {
                fields.push(Some(codec::encode_timestamp(now)));
                for f in 0..FEATURES {
                    fields.push(Some(codec::encode_value(&value_for(
                        TYPES[f % TYPES.len()],
                        r + f,
                    ))));
                }
            }
            fields
        })
        .collect()
}

/// Plans a request of `rows` rows and assembles its response from
/// `results`.
fn serve(
    snapshot: &RegistrySnapshot,
    limits: Limits,
    rows: usize,
    results: ReadResult,
) -> OnlineResponse {
    plan(snapshot, "default", limits, request(rows), KeyVersion::V3)
        .unwrap()
        .assemble(results, EventTime::now())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let limits = Limits {
        max_entity_rows: 10_000,
        max_features: 1_000,
    };
    let snapshot = RegistrySnapshot::build(
        parse_documents("bench.yaml", &definitions()).unwrap(),
        1,
        &Default::default(),
    )
    .unwrap();

    c.bench_function("entity_key_encoding", |b| {
        let v = Value::Int64(1001);
        b.iter(|| redis_key(&["driver_id"], &[&v], "kubeflow_alice", KeyVersion::V3).unwrap())
    });
    c.bench_function("field_hashing", |b| {
        b.iter(|| feature_field("driver_daily_stats_fv", "acc_rate"))
    });

    let mut group = c.benchmark_group("serve_cpu");
    for rows in [1usize, 100] {
        let results = stored(rows);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(
            BenchmarkId::new("grpc", format!("{rows}x50")),
            &rows,
            |b, &rows| {
                b.iter_batched(
                    || results.clone(),
                    |results| {
                        let response = serve(&snapshot, limits, rows, results);
                        grpc::EncodedResponse::new(response).encode_to_vec()
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        group.bench_with_input(
            BenchmarkId::new("http", format!("{rows}x50")),
            &rows,
            |b, &rows| {
                b.iter_batched(
                    || results.clone(),
                    |results| {
                        let response = serve(&snapshot, limits, rows, results);
                        serde_json::to_vec(&http::JsonResponse(&response)).unwrap()
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
