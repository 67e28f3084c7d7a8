//! On-demand transforms: features computed by CEL expressions from other
//! features and from request data.
//!
//! A [`CompiledView`] is built once per registry snapshot from an
//! [`OnDemandFeatureView`]: each expression is parsed by the `cel` crate,
//! its inputs (`view.feature` and request fields) are bound to numbered
//! slots, and it is type-checked ([`check`]) against the declared input and
//! output types. Serving, training-set retrieval and write-time transforms
//! all evaluate that one compiled program with [`CompiledView::evaluate`],
//! so the same inputs give the same outputs everywhere.
//!
//! # Missing inputs, runtime errors
//!
//! An expression runs only when every input it reads is present. Otherwise
//! the feature gets its `default` when it declares one, and else no value:
//! [`Outcome::Missing`] when an input was not found (or outside its view's
//! TTL), [`Outcome::Null`] when an input was null. A runtime error (division
//! by zero, overflow, a failed conversion) gives [`Outcome::Failed`] for that
//! one value: callers serve it as NULL_VALUE and count it.

pub mod check;

use std::sync::{Arc, OnceLock};

use cel::common::ast::{Expr, IdedExpr};
use cel::common::types::{CelBool, CelBytes, CelDouble, CelInt, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env};

use crate::model::{Feature, OnDemandFeatureView, Value, ValueType};

use check::{Scope, Ty};

/// The deepest nesting an expression may have.
pub const MAX_DEPTH: usize = 32;
/// The most nodes an expression may have.
pub const MAX_NODES: usize = 1000;

/// A feature view an on-demand view reads, as the compiler sees it.
pub struct SourceView<'a> {
    pub name: &'a str,
    pub features: &'a [Feature],
}

/// Where an input's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSource {
    /// Feature `feature` of source view `view` (indexes into the on-demand
    /// view's `source_views` and that view's features).
    View { view: usize, feature: usize },
    /// Request field `field` (index into `request_fields`).
    Request { field: usize },
}

/// A value some expression reads.
#[derive(Debug, Clone)]
pub struct Input {
    /// `view.feature`, or the request field's name.
    pub name: String,
    pub source: InputSource,
    pub value_type: ValueType,
}

/// One compiled feature.
#[derive(Debug)]
pub struct CompiledFeature {
    pub name: String,
    pub value_type: ValueType,
    pub default: Option<Value>,
    /// The expression with its inputs bound to slots `#0`, `#1`, ...
    expr: IdedExpr,
    /// The inputs it reads (indexes into [`CompiledView::inputs`]).
    pub reads: Vec<usize>,
}

/// The compiled expressions of one on-demand view.
#[derive(Debug)]
pub struct CompiledView {
    /// Every input read by some feature, each once.
    pub inputs: Vec<Input>,
    pub features: Vec<CompiledFeature>,
}

/// An expression or source that does not compile: the manifest field and
/// what is wrong, with the position in the expression where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub field: String,
    pub message: String,
}

/// An input's value for one row.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Present(&'a Value),
    /// Stored (or sent) as null, or not decodable.
    Null,
    /// Not found, or older than its view's TTL.
    Missing,
}

/// What evaluating one feature for one row gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Value(Value),
    /// An input was null.
    Null,
    /// An input was missing.
    Missing,
    /// The expression failed at run time.
    Failed(String),
}

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// CEL's reserved words, which cannot name an input.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.contains(&name)
}

impl CompiledView {
    /// Compiles every feature of `odfv`; `views` are its source views, in
    /// the order of `odfv.source_views`.
    pub fn compile(
        odfv: &OnDemandFeatureView,
        views: &[SourceView<'_>],
    ) -> Result<CompiledView, CompileError> {
        for (i, v) in views.iter().enumerate() {
            if !is_identifier(v.name) {
                return Err(CompileError {
                    field: format!("spec.sources.featureViews[{i}]"),
                    message: format!(
                        "feature view {:?} cannot be named in an expression: an on-demand view \
                         reads views whose names are identifiers (letters, digits, '_'; '-' \
                         would read as minus)",
                        v.name
                    ),
                });
            }
        }
        for (i, f) in odfv.request_fields.iter().enumerate() {
            let field = format!("spec.sources.requestFields[{i}].name");
            if !is_identifier(&f.name) {
                return Err(CompileError {
                    field,
                    message: format!(
                        "request field {:?} cannot be named in an expression (letters, digits \
                         and '_', not a CEL reserved word)",
                        f.name
                    ),
                });
            }
            if views.iter().any(|v| v.name == f.name) {
                return Err(CompileError {
                    field,
                    message: format!(
                        "request field {:?} has the name of a source feature view",
                        f.name
                    ),
                });
            }
        }
        let mut binder = Binder {
            odfv,
            views,
            inputs: Vec::new(),
        };
        let mut features = Vec::with_capacity(odfv.features.len());
        for (i, f) in odfv.features.iter().enumerate() {
            let field = format!("spec.features[{i}].expression");
            let (mut expr, info) = cel::parser::Parser::new()
                .max_recursion_depth(MAX_DEPTH as u16)
                .parse_with_source_info(&f.expression)
                .map_err(|errors| CompileError {
                    field: field.clone(),
                    message: errors
                        .errors
                        .iter()
                        .map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1 + 1, e.msg))
                        .collect::<Vec<_>>()
                        .join("; "),
                })?;
            let at = |node: u64| -> String {
                match info.offset_for(node) {
                    Some((start, _)) => {
                        let (line, column) = line_column(&f.expression, start as usize);
                        format!("line {line}, column {column}")
                    }
                    None => "in the expression".to_owned(),
                }
            };
            let nodes = check::size(&expr);
            if nodes > MAX_NODES {
                return Err(CompileError {
                    field,
                    message: format!("the expression has {nodes} nodes; the limit is {MAX_NODES}"),
                });
            }
            let depth = check::depth(&expr);
            if depth > MAX_DEPTH {
                return Err(CompileError {
                    field,
                    message: format!("the expression nests {depth} deep; the limit is {MAX_DEPTH}"),
                });
            }
            let mut reads = Vec::new();
            binder
                .bind(&mut expr, &mut Vec::new(), &mut reads)
                .map_err(|(node, message)| CompileError {
                    field: field.clone(),
                    message: format!("{}: {message}", at(node)),
                })?;
            reads.sort_unstable();
            reads.dedup();
            let types: Vec<Ty> = binder.inputs.iter().map(|i| Ty::of(i.value_type)).collect();
            let ty = check::check(&expr, &mut Scope::new(&types)).map_err(|e| CompileError {
                field: field.clone(),
                message: format!("{}: {}", at(e.node), e.message),
            })?;
            if !ty.fits(f.value_type) {
                return Err(CompileError {
                    field,
                    message: format!(
                        "the expression is {ty}, but feature {:?} is declared {} (which takes \
                         {}); convert it, or declare another valueType",
                        f.name,
                        f.value_type,
                        Ty::of(f.value_type)
                    ),
                });
            }
            features.push(CompiledFeature {
                name: f.name.clone(),
                value_type: f.value_type,
                default: f.default.clone(),
                expr,
                reads,
            });
        }
        Ok(CompiledView {
            inputs: binder.inputs,
            features,
        })
    }

    /// Evaluates every feature for one row. `args[i]` is the value of
    /// `self.inputs[i]`; `out` receives one outcome per feature.
    pub fn evaluate(&self, args: &[Arg<'_>], out: &mut Vec<Outcome>) {
        let slots: Vec<Slot<'_>> = args.iter().map(|a| Slot::of(*a)).collect();
        let row = Row { slots: &slots };
        let root = Context::with_env(Arc::clone(env()));
        let mut ctx = root.new_inner_scope();
        ctx.set_variable_resolver(&row);
        for f in &self.features {
            let mut missing = false;
            let mut null = false;
            for &i in &f.reads {
                match args.get(i) {
                    Some(Arg::Present(_)) => {}
                    Some(Arg::Null) => null = true,
                    Some(Arg::Missing) | None => missing = true,
                }
            }
            let outcome = if missing || null {
                match &f.default {
                    Some(d) => Outcome::Value(d.clone()),
                    None if missing => Outcome::Missing,
                    None => Outcome::Null,
                }
            } else {
                match cel::Value::resolve_val(&f.expr, &ctx) {
                    Ok(v) => match to_value(v.as_ref(), f.value_type) {
                        Ok(v) => Outcome::Value(v),
                        Err(e) => Outcome::Failed(e),
                    },
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            };
            out.push(outcome);
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
/// An offset inside a character counts as that character.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (at, c) in text.char_indices() {
        if at >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Binds input names to slots while walking an expression.
struct Binder<'a> {
    odfv: &'a OnDemandFeatureView,
    views: &'a [SourceView<'a>],
    inputs: Vec<Input>,
}

impl Binder<'_> {
    fn slot(&mut self, name: String, source: InputSource, value_type: ValueType) -> usize {
        if let Some(i) = self.inputs.iter().position(|i| i.source == source) {
            return i;
        }
        self.inputs.push(Input {
            name,
            source,
            value_type,
        });
        self.inputs.len() - 1
    }

    /// Rewrites the inputs of `e` into slot identifiers, noting each slot
    /// read in `reads`. `locals` are the macro variables in scope, which
    /// shadow inputs.
    fn bind(
        &mut self,
        e: &mut IdedExpr,
        locals: &mut Vec<String>,
        reads: &mut Vec<usize>,
    ) -> Result<(), (u64, String)> {
        let node = e.id;
        match &mut e.expr {
            Expr::Select(s) if !s.test => {
                if let Expr::Ident(view) = &s.operand.expr
                    && !locals.contains(view)
                {
                    let Some(v) = self.views.iter().position(|x| x.name == view) else {
                        return Err((
                            node,
                            format!(
                                "{view:?} is not a source of this view: list it in \
                                 spec.sources.featureViews"
                            ),
                        ));
                    };
                    let Some(f) = self.views[v]
                        .features
                        .iter()
                        .position(|x| x.name == s.field)
                    else {
                        return Err((
                            node,
                            format!("feature view {view:?} has no feature {:?}", s.field),
                        ));
                    };
                    let name = format!("{view}.{}", s.field);
                    let value_type = self.views[v].features[f].value_type;
                    let i = self.slot(
                        name,
                        InputSource::View {
                            view: v,
                            feature: f,
                        },
                        value_type,
                    );
                    reads.push(i);
                    e.expr = Expr::Ident(format!("#{i}"));
                    return Ok(());
                }
                self.bind(&mut s.operand, locals, reads)
            }
            Expr::Select(_) => Err((
                node,
                "has() is not supported: an expression runs only when its inputs are present"
                    .into(),
            )),
            Expr::Ident(name) => {
                if locals.contains(name) {
                    return Ok(());
                }
                if let Some(field) = self
                    .odfv
                    .request_fields
                    .iter()
                    .position(|f| f.name == *name)
                {
                    let value_type = self.odfv.request_fields[field].value_type;
                    let i = self.slot(name.clone(), InputSource::Request { field }, value_type);
                    reads.push(i);
                    e.expr = Expr::Ident(format!("#{i}"));
                    return Ok(());
                }
                if self.views.iter().any(|v| v.name == name) {
                    return Err((
                        node,
                        format!(
                            "{name:?} is a feature view: read one of its features, {name}.<feature>"
                        ),
                    ));
                }
                Err((
                    node,
                    format!(
                        "unknown name {name:?}: not a request field (spec.sources.requestFields) \
                         or a macro variable"
                    ),
                ))
            }
            Expr::Call(c) => {
                if let Some(t) = c.target.as_deref_mut() {
                    self.bind(t, locals, reads)?;
                }
                for a in &mut c.args {
                    self.bind(a, locals, reads)?;
                }
                Ok(())
            }
            Expr::List(l) => {
                for item in &mut l.elements {
                    self.bind(item, locals, reads)?;
                }
                Ok(())
            }
            Expr::Comprehension(c) => {
                self.bind(&mut c.iter_range, locals, reads)?;
                self.bind(&mut c.accu_init, locals, reads)?;
                let before = locals.len();
                locals.push(c.iter_var.clone());
                locals.push(c.accu_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    locals.push(v2.clone());
                }
                let result = (|| {
                    self.bind(&mut c.loop_cond, locals, reads)?;
                    self.bind(&mut c.loop_step, locals, reads)?;
                    self.bind(&mut c.result, locals, reads)
                })();
                locals.truncate(before);
                result
            }
            // Refused by the checker with a message of its own.
            Expr::Map(_) | Expr::Struct(_) | Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }
}

/// An input bound for one row, borrowing the row's values.
enum Slot<'r> {
    Int(CelInt),
    Double(CelDouble),
    Bool(CelBool),
    Str(CelString<'r>),
    Bytes(CelBytes<'r>),
    Boxed(Box<dyn Val>),
    Absent,
}

impl<'r> Slot<'r> {
    fn of(arg: Arg<'r>) -> Slot<'r> {
        let Arg::Present(v) = arg else {
            return Slot::Absent;
        };
        let list = |items: Vec<cel::Value>| -> Slot<'r> {
            match Box::<dyn Val>::try_from(cel::Value::List(Arc::new(items))) {
                Ok(b) => Slot::Boxed(b),
                Err(_) => Slot::Absent,
            }
        };
        match v {
            Value::Null => Slot::Absent,
            Value::Int32(i) => Slot::Int(CelInt::from(i64::from(*i))),
            Value::Int64(i) | Value::UnixTimestamp(i) => Slot::Int(CelInt::from(*i)),
            Value::Float(f) => Slot::Double(CelDouble::from(f64::from(*f))),
            Value::Double(f) => Slot::Double(CelDouble::from(*f)),
            Value::Bool(b) => Slot::Bool(CelBool::from(*b)),
            Value::String(s) => Slot::Str(CelString::from(s.as_str())),
            Value::Bytes(b) => Slot::Bytes(CelBytes::from(b.as_slice())),
            Value::Int32List(l) => list(l.iter().map(|i| cel::Value::Int(i64::from(*i))).collect()),
            Value::Int64List(l) | Value::UnixTimestampList(l) => {
                list(l.iter().map(|i| cel::Value::Int(*i)).collect())
            }
            Value::FloatList(l) => {
                list(l.iter().map(|f| cel::Value::Float(f64::from(*f))).collect())
            }
            Value::DoubleList(l) => list(l.iter().map(|f| cel::Value::Float(*f)).collect()),
            Value::BoolList(l) => list(l.iter().map(|b| cel::Value::Bool(*b)).collect()),
            Value::StringList(l) => list(
                l.iter()
                    .map(|s| cel::Value::String(Arc::new(s.clone())))
                    .collect(),
            ),
            Value::BytesList(l) => list(
                l.iter()
                    .map(|b| cel::Value::Bytes(Arc::new(b.clone())))
                    .collect(),
            ),
        }
    }

    fn val(&self) -> Option<&(dyn Val + 'r)> {
        Some(match self {
            Slot::Int(v) => v,
            Slot::Double(v) => v,
            Slot::Bool(v) => v,
            Slot::Str(v) => v,
            Slot::Bytes(v) => v,
            Slot::Boxed(v) => v.as_ref(),
            Slot::Absent => return None,
        })
    }
}

/// Resolves slot identifiers `#i` to a row's inputs.
struct Row<'s, 'r> {
    slots: &'s [Slot<'r>],
}

impl VariableResolver for Row<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i: usize = variable.strip_prefix('#')?.parse().ok()?;
        self.slots.get(i)?.val().map(CowVal::Borrowed)
    }
}

/// Converts a result to the declared type; the checker has made sure the
/// CEL type fits, so only range and list elements can still fail.
fn to_value(v: &dyn Val, t: ValueType) -> Result<Value, String> {
    let value = cel::Value::try_from(v).map_err(|e| format!("unexpected result: {e}"))?;
    convert(value, t)
}

fn convert(value: cel::Value, t: ValueType) -> Result<Value, String> {
    use cel::Value as C;
    let int = |v: &C| -> Result<i64, String> {
        match v {
            C::Int(i) => Ok(*i),
            C::UInt(u) => i64::try_from(*u).map_err(|_| format!("{u} overflows int64")),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    };
    let double = |v: &C| -> Result<f64, String> {
        match v {
            C::Float(f) => Ok(*f),
            other => Err(format!("expected a double, found {other:?}")),
        }
    };
    let float = |v: &C| -> Result<f32, String> {
        let d = double(v)?;
        let f = d as f32;
        if d.is_finite() && !f.is_finite() {
            return Err(format!("{d} overflows FLOAT"));
        }
        Ok(f)
    };
    let int32 = |v: &C| -> Result<i32, String> {
        let i = int(v)?;
        i32::try_from(i).map_err(|_| format!("{i} overflows INT32"))
    };
    let text = |v: &C| -> Result<String, String> {
        match v {
            C::String(s) => Ok(s.as_ref().clone()),
            other => Err(format!("expected a string, found {other:?}")),
        }
    };
    let bytes = |v: &C| -> Result<Vec<u8>, String> {
        match v {
            C::Bytes(b) => Ok(b.as_ref().clone()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    };
    let boolean = |v: &C| -> Result<bool, String> {
        match v {
            C::Bool(b) => Ok(*b),
            other => Err(format!("expected a bool, found {other:?}")),
        }
    };
    fn items<T>(
        v: &cel::Value,
        f: impl Fn(&cel::Value) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        match v {
            cel::Value::List(l) => l.iter().map(f).collect(),
            other => Err(format!("expected a list, found {other:?}")),
        }
    }
    Ok(match t {
        ValueType::Int32 => Value::Int32(int32(&value)?),
        ValueType::Int64 => Value::Int64(int(&value)?),
        ValueType::UnixTimestamp => Value::UnixTimestamp(int(&value)?),
        ValueType::Double => Value::Double(double(&value)?),
        ValueType::Float => Value::Float(float(&value)?),
        ValueType::Bool => Value::Bool(boolean(&value)?),
        ValueType::String => Value::String(text(&value)?),
        ValueType::Bytes => Value::Bytes(bytes(&value)?),
        ValueType::Int32List => Value::Int32List(items(&value, int32)?),
        ValueType::Int64List => Value::Int64List(items(&value, int)?),
        ValueType::UnixTimestampList => Value::UnixTimestampList(items(&value, int)?),
        ValueType::DoubleList => Value::DoubleList(items(&value, double)?),
        ValueType::FloatList => Value::FloatList(items(&value, float)?),
        ValueType::BoolList => Value::BoolList(items(&value, boolean)?),
        ValueType::StringList => Value::StringList(items(&value, text)?),
        ValueType::BytesList => Value::BytesList(items(&value, bytes)?),
    })
}

#[cfg(test)]
pub(crate) mod tests;
