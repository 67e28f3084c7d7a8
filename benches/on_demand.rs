//! The cost of on-demand expressions per row: the story's zone transform
//! (two FLOAT inputs, comparisons and conditionals) and a 5-input
//! arithmetic expression, evaluated with the compiled program the feature
//! server uses, plus the compile cost itself (paid once per snapshot).
//! Results are in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use larder::model::{Feature, OnDemandFeature, OnDemandFeatureView, Value, ValueType};
use larder::transform::{Arg, CompiledView, SourceView};

const ZONE: &str = "v.lat > 37.979 ? (v.lon < 23.786 ? 1 : 2) : (v.lon >= 23.786 ? 3 : 4)";
const ARITHMETIC: &str = "(v.a + v.b * v.c - v.d) / v.e";

fn view(expression: &str, t: ValueType) -> OnDemandFeatureView {
    OnDemandFeatureView {
        name: "bench".into(),
        namespace: "bench".into(),
        source_views: vec!["v".into()],
        request_fields: Vec::new(),
        features: vec![OnDemandFeature {
            name: "out".into(),
            value_type: t,
            expression: expression.into(),
            default: Some(Value::Int64(-1)).filter(|_| t == ValueType::Int64),
        }],
        write_to_online_store: false,
        description: String::new(),
        labels: Default::default(),
    }
}

fn features() -> Vec<Feature> {
    let f = |name: &str, value_type| Feature {
        name: name.into(),
        value_type,
    };
    vec![
        f("lat", ValueType::Float),
        f("lon", ValueType::Float),
        f("a", ValueType::Double),
        f("b", ValueType::Double),
        f("c", ValueType::Double),
        f("d", ValueType::Double),
        f("e", ValueType::Double),
    ]
}

fn compile(def: &OnDemandFeatureView, features: &[Feature]) -> CompiledView {
    CompiledView::compile(
        def,
        &[SourceView {
            name: "v",
            features,
        }],
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let features = features();
    let zone = compile(&view(ZONE, ValueType::Int64), &features);
    let arithmetic = compile(&view(ARITHMETIC, ValueType::Double), &features);

    // 1,000 rows of varied inputs, evaluated per row as serving does.
    let rows = 1000;
    let coords: Vec<[Value; 2]> = (0..rows)
        .map(|i| {
            let f = i as f32 / rows as f32;
            [Value::Float(37.9 + f * 0.2), Value::Float(23.7 + f * 0.2)]
        })
        .collect();
    let numbers: Vec<[Value; 5]> = (0..rows)
        .map(|i| {
            let x = i as f64;
            [
                Value::Double(x),
                Value::Double(x * 0.5),
                Value::Double(3.0),
                Value::Double(1.0),
                Value::Double(7.0),
            ]
        })
        .collect();

    let mut group = c.benchmark_group("on_demand");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("zone_per_1000_rows", |b| {
        let mut out = Vec::with_capacity(1);
        b.iter(|| {
            for row in &coords {
                out.clear();
                zone.evaluate(&[Arg::Present(&row[0]), Arg::Present(&row[1])], &mut out);
                black_box(&out);
            }
        })
    });
    group.bench_function("arithmetic5_per_1000_rows", |b| {
        let mut out = Vec::with_capacity(1);
        b.iter(|| {
            for row in &numbers {
                out.clear();
                let args: [Arg<'_>; 5] = std::array::from_fn(|i| Arg::Present(&row[i]));
                arithmetic.evaluate(&args, &mut out);
                black_box(&out);
            }
        })
    });
    group.finish();

    c.bench_function("on_demand_compile_zone", |b| {
        let def = view(ZONE, ValueType::Int64);
        b.iter(|| compile(black_box(&def), &features))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
