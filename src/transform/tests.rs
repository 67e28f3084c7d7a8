use super::*;
use crate::model::{Feature, OnDemandFeature};

/// The source view `v` of every test: one feature per value type.
fn source_features() -> Vec<Feature> {
    [
        ("i32", ValueType::Int32),
        ("i64", ValueType::Int64),
        ("f32", ValueType::Float),
        ("f64", ValueType::Double),
        ("b", ValueType::Bool),
        ("s", ValueType::String),
        ("by", ValueType::Bytes),
        ("ts", ValueType::UnixTimestamp),
        ("i64s", ValueType::Int64List),
        ("f64s", ValueType::DoubleList),
        ("ss", ValueType::StringList),
        ("lat", ValueType::Float),
        ("lon", ValueType::Float),
    ]
    .into_iter()
    .map(|(name, value_type)| Feature {
        name: name.into(),
        value_type,
    })
    .collect()
}

fn odfv(features: &[(&str, ValueType, &str)]) -> OnDemandFeatureView {
    OnDemandFeatureView {
        name: "t".into(),
        namespace: "ns".into(),
        source_views: vec!["v".into()],
        request_fields: vec![Feature {
            name: "extra".into(),
            value_type: ValueType::Int64,
        }],
        features: features
            .iter()
            .map(|(name, value_type, expression)| OnDemandFeature {
                name: (*name).into(),
                value_type: *value_type,
                expression: (*expression).into(),
                default: None,
            })
            .collect(),
        write_to_online_store: false,
        description: String::new(),
        labels: Default::default(),
    }
}

fn compile(def: &OnDemandFeatureView) -> Result<CompiledView, CompileError> {
    let features = source_features();
    CompiledView::compile(
        def,
        &[SourceView {
            name: "v",
            features: &features,
        }],
    )
}

/// The value each input of the source view and the request has in the
/// tests, by input name.
fn sample(name: &str) -> Value {
    match name {
        "v.i32" => Value::Int32(7),
        "v.i64" => Value::Int64(-40),
        "v.f32" => Value::Float(1.5),
        "v.f64" => Value::Double(2.25),
        "v.b" => Value::Bool(true),
        "v.s" => Value::String("héllo".into()),
        "v.by" => Value::Bytes(vec![1, 2, 3]),
        "v.ts" => Value::UnixTimestamp(1_700_000_000),
        "v.i64s" => Value::Int64List(vec![3, 1, 2]),
        "v.f64s" => Value::DoubleList(vec![0.5, 1.5]),
        "v.ss" => Value::StringList(vec!["a".into(), "b".into()]),
        "v.lat" => Value::Float(38.0),
        "v.lon" => Value::Float(23.7),
        "extra" => Value::Int64(5),
        other => panic!("no sample for {other}"),
    }
}

/// Evaluates one expression of type `t` over the sample row.
fn eval(t: ValueType, expression: &str) -> Outcome {
    let def = odfv(&[("out", t, expression)]);
    let compiled = compile(&def).unwrap_or_else(|e| panic!("{expression}: {e:?}"));
    let values: Vec<Value> = compiled.inputs.iter().map(|i| sample(&i.name)).collect();
    let args: Vec<Arg<'_>> = values.iter().map(Arg::Present).collect();
    let mut out = Vec::new();
    compiled.evaluate(&args, &mut out);
    out.pop().unwrap()
}

fn refused(t: ValueType, expression: &str) -> CompileError {
    let def = odfv(&[("out", t, expression)]);
    match compile(&def) {
        Ok(_) => panic!("{expression} compiled"),
        Err(e) => e,
    }
}

#[test]
fn every_value_type_binds_and_converts() {
    use ValueType as T;
    let cases: Vec<(T, &str, Value)> = vec![
        (T::Int32, "v.i32", Value::Int32(7)),
        (T::Int64, "v.i32", Value::Int64(7)),
        (T::Int64, "v.i64", Value::Int64(-40)),
        (T::Int32, "v.i64", Value::Int32(-40)),
        (T::Float, "v.f32", Value::Float(1.5)),
        (T::Double, "v.f32", Value::Double(1.5)),
        (T::Double, "v.f64", Value::Double(2.25)),
        (T::Float, "v.f64", Value::Float(2.25)),
        (T::Bool, "v.b", Value::Bool(true)),
        (T::String, "v.s", Value::String("héllo".into())),
        (T::Bytes, "v.by", Value::Bytes(vec![1, 2, 3])),
        (
            T::UnixTimestamp,
            "v.ts",
            Value::UnixTimestamp(1_700_000_000),
        ),
        (T::Int64, "v.ts", Value::Int64(1_700_000_000)),
        (T::Int64List, "v.i64s", Value::Int64List(vec![3, 1, 2])),
        (T::Int32List, "v.i64s", Value::Int32List(vec![3, 1, 2])),
        (T::DoubleList, "v.f64s", Value::DoubleList(vec![0.5, 1.5])),
        (T::FloatList, "v.f64s", Value::FloatList(vec![0.5, 1.5])),
        (
            T::StringList,
            "v.ss",
            Value::StringList(vec!["a".into(), "b".into()]),
        ),
        (T::Int64, "extra", Value::Int64(5)),
        (
            T::BoolList,
            "[v.b, !v.b]",
            Value::BoolList(vec![true, false]),
        ),
        (
            T::BytesList,
            "[v.by, b'x']",
            Value::BytesList(vec![vec![1, 2, 3], b"x".to_vec()]),
        ),
        (
            T::UnixTimestampList,
            "[v.ts]",
            Value::UnixTimestampList(vec![1_700_000_000]),
        ),
    ];
    for (t, expression, want) in cases {
        assert_eq!(
            eval(t, expression),
            Outcome::Value(want),
            "{expression} as {t}"
        );
    }
}

#[test]
fn operators() {
    use ValueType as T;
    let cases: Vec<(T, &str, Value)> = vec![
        // arithmetic
        (T::Int64, "v.i64 + extra", Value::Int64(-35)),
        (T::Int64, "v.i64 - extra", Value::Int64(-45)),
        (T::Int64, "v.i64 * extra", Value::Int64(-200)),
        (T::Int64, "v.i64 / 3", Value::Int64(-13)),
        (T::Int64, "v.i64 % 3", Value::Int64(-1)),
        (T::Int64, "-v.i64", Value::Int64(40)),
        (T::Double, "v.f64 + v.f32", Value::Double(3.75)),
        (T::Double, "v.f64 - 1.0", Value::Double(1.25)),
        (T::Double, "v.f64 * 2.0", Value::Double(4.5)),
        (T::Double, "v.f64 / 0.5", Value::Double(4.5)),
        (T::Double, "-v.f64", Value::Double(-2.25)),
        (T::Double, "double(v.i32) / 2.0", Value::Double(3.5)),
        (T::Double, "1.0 / 0.0", Value::Double(f64::INFINITY)),
        // comparison, mixing numeric types
        (T::Bool, "v.i32 < v.f64", Value::Bool(false)),
        (T::Bool, "v.i32 > 2.5", Value::Bool(true)),
        (T::Bool, "v.i32 <= 7", Value::Bool(true)),
        (T::Bool, "v.i32 >= 8", Value::Bool(false)),
        (T::Bool, "v.i32 == 7.0", Value::Bool(true)),
        (T::Bool, "v.s != 'x'", Value::Bool(true)),
        (T::Bool, "v.s < 'z'", Value::Bool(true)),
        (T::Bool, "v.by == b'\\x01\\x02\\x03'", Value::Bool(true)),
        // logic and the conditional
        (T::Bool, "v.b && v.i32 > 1", Value::Bool(true)),
        (T::Bool, "!v.b || extra == 5", Value::Bool(true)),
        (T::Int64, "v.b ? extra : 0", Value::Int64(5)),
        // strings and bytes
        (T::String, "v.s + '!'", Value::String("héllo!".into())),
        (T::Int64, "size(v.s)", Value::Int64(5)),
        (T::Int64, "v.s.size()", Value::Int64(5)),
        (T::Bool, "v.s.startsWith('hé')", Value::Bool(true)),
        (T::Bool, "v.s.endsWith('lo')", Value::Bool(true)),
        (T::Bool, "v.s.contains('ll')", Value::Bool(true)),
        (T::Int64, "size(v.by)", Value::Int64(3)),
        // conversions
        (T::Int64, "int(v.f64)", Value::Int64(2)),
        (T::Int64, "int('42')", Value::Int64(42)),
        (T::String, "string(v.i32)", Value::String("7".into())),
        (T::String, "string(v.b)", Value::String("true".into())),
        (T::Double, "double('0.5')", Value::Double(0.5)),
        (T::Bytes, "bytes('ab')", Value::Bytes(b"ab".to_vec())),
        (T::Bool, "bool('false')", Value::Bool(false)),
        (T::Int64, "int(uint(v.i32))", Value::Int64(7)),
        // lists and macros
        (T::Int64, "v.i64s[0]", Value::Int64(3)),
        (T::Int64, "size(v.i64s)", Value::Int64(3)),
        (T::Bool, "2 in v.i64s", Value::Bool(true)),
        (T::Bool, "'c' in v.ss", Value::Bool(false)),
        (T::Bool, "v.i64s.all(x, x > 0)", Value::Bool(true)),
        (T::Bool, "v.i64s.exists(x, x > 2)", Value::Bool(true)),
        (T::Bool, "v.i64s.exists_one(x, x > 1)", Value::Bool(false)),
        (
            T::Int64List,
            "v.i64s.map(x, x * extra)",
            Value::Int64List(vec![15, 5, 10]),
        ),
        (
            T::Int64List,
            "v.i64s.filter(x, x != 1)",
            Value::Int64List(vec![3, 2]),
        ),
        (
            T::DoubleList,
            "v.f64s + [v.f64]",
            Value::DoubleList(vec![0.5, 1.5, 2.25]),
        ),
        (T::Int64List, "[]", Value::Int64List(vec![])),
    ];
    for (t, expression, want) in cases {
        assert_eq!(
            eval(t, expression),
            Outcome::Value(want),
            "{expression} as {t}"
        );
    }
}

#[test]
fn runtime_errors_fail_one_value() {
    use ValueType as T;
    for (t, expression) in [
        (T::Int64, "v.i64 / (extra - 5)"),
        (T::Int64, "v.i64 % (extra - 5)"),
        (T::Int64, "9223372036854775807 + extra"),
        (T::Int64, "-9223372036854775807 - extra"),
        (T::Int64, "int('x' + v.s)"),
        (T::Int64, "int(v.f64 * 1e300)"),
        (T::Int32, "v.i64 * 100000000"),
        (T::Float, "v.f64 * 1e300"),
        (T::Int64, "v.i64s[5]"),
    ] {
        assert!(
            matches!(eval(t, expression), Outcome::Failed(_)),
            "{expression} did not fail"
        );
    }
}

/// The story's zone transform, as the Python of the original demo defines
/// it: north-west 1, north-east 2, south-east 3, south-west 4, and -1 when
/// a coordinate is missing.
pub const ZONE: &str = "v.lat > 37.979 ? (v.lon < 23.786 ? 1 : 2) : (v.lon >= 23.786 ? 3 : 4)";

#[test]
fn zone_transform() {
    let mut def = odfv(&[("zone", ValueType::Int64, ZONE)]);
    def.features[0].default = Some(Value::Int64(-1));
    let compiled = compile(&def).unwrap();
    assert_eq!(
        compiled
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["v.lat", "v.lon"]
    );
    let zone = |lat: Option<f32>, lon: Option<f32>| {
        let values: Vec<Option<Value>> = vec![lat.map(Value::Float), lon.map(Value::Float)];
        let args: Vec<Arg<'_>> = values
            .iter()
            .map(|v| v.as_ref().map_or(Arg::Missing, Arg::Present))
            .collect();
        let mut out = Vec::new();
        compiled.evaluate(&args, &mut out);
        out.pop().unwrap()
    };
    let z = |n| Outcome::Value(Value::Int64(n));
    // Athens: Kifisia (north-east), Peristeri (north-west), Kallithea
    // (south-west), Vyronas (south-east).
    assert_eq!(zone(Some(38.074), Some(23.811)), z(2));
    assert_eq!(zone(Some(38.013), Some(23.695)), z(1));
    assert_eq!(zone(Some(37.955), Some(23.702)), z(4));
    assert_eq!(zone(Some(37.957), Some(23.753)), z(4));
    assert_eq!(zone(Some(37.961), Some(23.790)), z(3));
    // Coordinates are FLOAT: compared as the f32 they are stored as
    // (37.979f32 is a little above 37.979, 23.786f32 a little below 23.786).
    assert_eq!(zone(Some(37.979), Some(23.786)), z(1));
    assert_eq!(zone(Some(37.97), Some(23.79)), z(3));
    assert_eq!(zone(None, Some(23.0)), z(-1));
    assert_eq!(zone(Some(38.0), None), z(-1));
}

#[test]
fn missing_and_null_inputs_follow_the_rule() {
    let def = odfv(&[
        ("a", ValueType::Int64, "v.i64 + 1"),
        ("b", ValueType::Int64, "extra * 2"),
    ]);
    let compiled = compile(&def).unwrap();
    let one = Value::Int64(1);
    let run = |args: &[Arg<'_>]| {
        let mut out = Vec::new();
        compiled.evaluate(args, &mut out);
        out
    };
    assert_eq!(
        run(&[Arg::Present(&one), Arg::Present(&one)]),
        [
            Outcome::Value(Value::Int64(2)),
            Outcome::Value(Value::Int64(2))
        ]
    );
    // Only the inputs a feature reads matter to it.
    assert_eq!(
        run(&[Arg::Missing, Arg::Present(&one)]),
        [Outcome::Missing, Outcome::Value(Value::Int64(2))]
    );
    assert_eq!(run(&[Arg::Null, Arg::Null]), [Outcome::Null, Outcome::Null]);
    // Missing wins over null.
    let def = odfv(&[("c", ValueType::Int64, "v.i64 + extra")]);
    let compiled = compile(&def).unwrap();
    let mut out = Vec::new();
    compiled.evaluate(&[Arg::Null, Arg::Missing], &mut out);
    assert_eq!(out, [Outcome::Missing]);
}

#[test]
fn bad_expressions_are_refused_with_a_position() {
    use ValueType as T;
    let cases: Vec<(T, &str, &str)> = vec![
        (
            T::Int64,
            "v.nope + 1",
            "line 1, column 2: feature view \"v\" has no feature \"nope\"",
        ),
        (T::Int64, "w.i64", "\"w\" is not a source of this view"),
        (T::Int64, "missing * 2", "unknown name \"missing\""),
        (T::Int64, "v", "\"v\" is a feature view"),
        (
            T::Int64,
            "v.i64 + 1.5",
            "line 1, column 7: + (operands of one type",
        ),
        (
            T::Double,
            "v.i64 * 2",
            "the expression is int, but feature \"out\" is declared DOUBLE",
        ),
        (
            T::Int64,
            "v.b ? 1 : 2.0",
            "both branches of ?: must have one type",
        ),
        (T::Int64, "v.s > 1 ? 1 : 0", "comparison"),
        (T::Bool, "v.i64 && v.b", "&& and ||"),
        (T::Int64, "max(v.i64, 1)", "unknown function \"max\""),
        (
            T::Bool,
            "v.s.matches('a.*')",
            "unknown function \"matches\"",
        ),
        (T::Int64, "v.i64 +", "line 1"),
        (T::Bool, "v.i64 == null", "null is not supported"),
        (T::Bool, "has(v.i64)", "has() is not supported"),
        (T::Int64, "{'a': 1}['a']", "map literals are not supported"),
        (T::Int64, "[1, 'a'][0]", "a list holds one type"),
        (T::String, "v.i64s[0]", "declared STRING"),
        (T::Int64, "v.i64\n  + v.s", "line 2, column 3: +"),
    ];
    for (t, expression, want) in cases {
        let e = refused(t, expression);
        assert_eq!(e.field, "spec.features[0].expression", "{expression}");
        assert!(
            e.message.contains(want),
            "{expression}: {:?} does not contain {want:?}",
            e.message
        );
    }
}

#[test]
fn limits_on_size_and_nesting() {
    let deep = format!("{}v.i64{}", "(".repeat(40), ")".repeat(40));
    let e = refused(ValueType::Int64, &deep);
    assert!(e.message.contains("line 1"), "{}", e.message);
    let long = vec!["v.i64"; 600].join(" + ");
    let e = refused(ValueType::Int64, &long);
    assert!(e.message.contains("limit"), "{}", e.message);
    let nested = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    assert!(
        refused(ValueType::Int64List, &nested)
            .message
            .contains("line 1")
    );
}

#[test]
fn names_that_cel_cannot_read_are_refused() {
    let features = source_features();
    let def = odfv(&[("out", ValueType::Int64, "1")]);
    let e = CompiledView::compile(
        &def,
        &[SourceView {
            name: "driver-stats",
            features: &features,
        }],
    )
    .unwrap_err();
    assert_eq!(e.field, "spec.sources.featureViews[0]");
    let mut def = odfv(&[("out", ValueType::Int64, "1")]);
    def.request_fields[0].name = "in".into();
    assert_eq!(
        compile(&def).unwrap_err().field,
        "spec.sources.requestFields[0].name"
    );
}

#[test]
fn positions_count_characters_after_non_ascii_text() {
    let e = refused(ValueType::Int64, "size('héllo wörld') + 'x'");
    assert!(
        e.message.starts_with("line 1, column 21: +"),
        "{}",
        e.message
    );
    let e = refused(ValueType::Int64, "'ü' + 1");
    assert!(
        e.message.starts_with("line 1, column 5: +"),
        "{}",
        e.message
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Whatever text a manifest holds, compiling it answers, and whatever
    /// compiles evaluates without panicking on the sample row.
    #[test]
    fn arbitrary_expressions_never_panic(
        text in "[ -~éü\\n]{0,60}|[v.i64sf32+*/%()<>=!?:&|\\[\\] 0-9'-]{0,40}"
    ) {
        let def = odfv(&[("out", ValueType::Int64, &text)]);
        if let Ok(compiled) = compile(&def) {
            let values: Vec<Value> = compiled.inputs.iter().map(|i| sample(&i.name)).collect();
            let args: Vec<Arg<'_>> = values.iter().map(Arg::Present).collect();
            let mut out = Vec::new();
            compiled.evaluate(&args, &mut out);
            proptest::prop_assert_eq!(out.len(), 1);
        }
    }
}
