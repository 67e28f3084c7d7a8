//! The type checker of on-demand expressions.
//!
//! CEL's interpreter is dynamically typed; larder checks every expression
//! against the declared types of its inputs and output when definitions are
//! applied, so that a mistyped expression is refused at apply time rather
//! than failing on every request. The checker covers the part of CEL that
//! on-demand features use: literals, inputs, arithmetic, comparison, logic,
//! the conditional, lists (literals, indexing, `in`, `size`, the `all`,
//! `exists`, `exists_one`, `map` and `filter` macros), string tests and the
//! conversion functions. Anything else is refused with a message naming it.
//!
//! The rules follow CEL's: arithmetic needs operands of one type (`x + 1.0`
//! with an int `x` is refused: write `double(x) + 1.0`); comparisons and
//! equality may mix int, uint and double; both branches of `?:` must have
//! one type.

use std::collections::HashMap;
use std::fmt;

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

use crate::model::ValueType;

/// The static type of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Int,
    UInt,
    Double,
    Bool,
    String,
    Bytes,
    Null,
    List(Box<Ty>),
    /// The element type of an empty list literal: fits any type.
    Dyn,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Int => f.write_str("int"),
            Ty::UInt => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::Bool => f.write_str("bool"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Null => f.write_str("null"),
            Ty::List(e) => write!(f, "list({e})"),
            Ty::Dyn => f.write_str("dyn"),
        }
    }
}

impl Ty {
    /// The CEL type a Feast value of `t` is bound as: integers (and Unix
    /// timestamps, in seconds) are `int`, FLOAT and DOUBLE are `double`.
    pub fn of(t: ValueType) -> Ty {
        match t {
            ValueType::Int32 | ValueType::Int64 | ValueType::UnixTimestamp => Ty::Int,
            ValueType::Float | ValueType::Double => Ty::Double,
            ValueType::Bool => Ty::Bool,
            ValueType::String => Ty::String,
            ValueType::Bytes => Ty::Bytes,
            ValueType::Int32List | ValueType::Int64List | ValueType::UnixTimestampList => {
                Ty::List(Box::new(Ty::Int))
            }
            ValueType::FloatList | ValueType::DoubleList => Ty::List(Box::new(Ty::Double)),
            ValueType::BoolList => Ty::List(Box::new(Ty::Bool)),
            ValueType::StringList => Ty::List(Box::new(Ty::String)),
            ValueType::BytesList => Ty::List(Box::new(Ty::Bytes)),
        }
    }

    /// Whether a result of this type can be stored as `t`.
    pub fn fits(&self, t: ValueType) -> bool {
        let target = Ty::of(t);
        self.unify(&target).as_ref() == Some(&target)
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::UInt | Ty::Double)
    }

    /// The one type both fit, when there is one: equal types, or a type and
    /// `dyn` (inside lists).
    fn unify(&self, other: &Ty) -> Option<Ty> {
        match (self, other) {
            (a, b) if a == b => Some(a.clone()),
            (Ty::Dyn, b) => Some(b.clone()),
            (a, Ty::Dyn) => Some(a.clone()),
            (Ty::List(a), Ty::List(b)) => Some(Ty::List(Box::new(a.unify(b)?))),
            _ => None,
        }
    }

    /// Whether values of the two types can be compared or tested for
    /// equality.
    fn comparable(&self, other: &Ty) -> bool {
        (self.is_numeric() && other.is_numeric()) || self.unify(other).is_some()
    }
}

/// An expression that does not check, with the node it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub node: u64,
    pub message: String,
}

fn err<T>(node: &IdedExpr, message: impl Into<String>) -> Result<T, CheckError> {
    Err(CheckError {
        node: node.id,
        message: message.into(),
    })
}

/// What names mean to the checker: the inputs (already rewritten to
/// `#<index>` identifiers) and, while checking a macro, its variables.
pub struct Scope<'a> {
    /// Input `#i` has type `inputs[i]`.
    pub inputs: &'a [Ty],
    locals: HashMap<String, Ty>,
}

impl<'a> Scope<'a> {
    pub fn new(inputs: &'a [Ty]) -> Self {
        Scope {
            inputs,
            locals: HashMap::new(),
        }
    }
}

/// The functions and methods on-demand expressions may call.
pub const FUNCTIONS: &str = "int, uint, double, string, bytes, bool, size, contains, \
                             startsWith, endsWith, and the macros all, exists, exists_one, \
                             map, filter";

/// The type of `e`.
pub fn check(e: &IdedExpr, scope: &mut Scope<'_>) -> Result<Ty, CheckError> {
    match &e.expr {
        Expr::Literal(l) => Ok(match l {
            LiteralValue::Boolean(_) => Ty::Bool,
            LiteralValue::Bytes(_) => Ty::Bytes,
            LiteralValue::Double(_) => Ty::Double,
            LiteralValue::Int(_) => Ty::Int,
            LiteralValue::UInt(_) => Ty::UInt,
            LiteralValue::String(_) => Ty::String,
            LiteralValue::Null => {
                return err(
                    e,
                    "null is not supported: inputs are never null when an expression runs \
                     (a missing or null input gives the feature's default, or no value)",
                );
            }
        }),
        Expr::Ident(name) => {
            if let Some(t) = scope.locals.get(name) {
                return Ok(t.clone());
            }
            if let Some(i) = name.strip_prefix('#').and_then(|i| i.parse::<usize>().ok())
                && let Some(t) = scope.inputs.get(i)
            {
                return Ok(t.clone());
            }
            err(
                e,
                format!(
                    "unknown name {name:?}: an expression reads `view.feature` of the views in \
                     spec.sources.featureViews and request fields by name"
                ),
            )
        }
        Expr::Select(s) => {
            if s.test {
                return err(
                    e,
                    "has() is not supported: an expression runs only when its inputs are present",
                );
            }
            match &s.operand.expr {
                Expr::Ident(view) if !scope.locals.contains_key(view) => err(
                    e,
                    format!(
                        "unknown input {view}.{}: {view:?} is not a feature view of \
                         spec.sources.featureViews, or has no feature {:?}",
                        s.field, s.field
                    ),
                ),
                _ => err(
                    e,
                    format!(
                        "field selection .{} is not supported on a computed value",
                        s.field
                    ),
                ),
            }
        }
        Expr::List(list) => {
            if !list.optional_indices.is_empty() {
                return err(e, "optional list elements are not supported");
            }
            let mut elem = Ty::Dyn;
            for item in &list.elements {
                let t = check(item, scope)?;
                elem = match elem.unify(&t) {
                    Some(u) => u,
                    None => {
                        return err(
                            item,
                            format!(
                                "a list holds one type: this element is {t}, others are {elem}"
                            ),
                        );
                    }
                };
            }
            Ok(Ty::List(Box::new(elem)))
        }
        Expr::Map(_) => err(e, "map literals are not supported"),
        Expr::Struct(_) => err(e, "message literals are not supported"),
        Expr::Unspecified => err(e, "an empty expression"),
        Expr::Comprehension(c) => {
            let range = check(&c.iter_range, scope)?;
            let elem = match range {
                Ty::List(elem) => *elem,
                other => {
                    return err(
                        &c.iter_range,
                        format!("a macro iterates over a list, not {other}"),
                    );
                }
            };
            if c.iter_var2.is_some() {
                return err(e, "two-variable macros are not supported");
            }
            let mut accu = check(&c.accu_init, scope)?;
            let saved: Vec<(String, Option<Ty>)> = [&c.iter_var, &c.accu_var]
                .into_iter()
                .map(|n| (n.clone(), scope.locals.get(n).cloned()))
                .collect();
            let result = (|| {
                scope.locals.insert(c.iter_var.clone(), elem);
                // The accumulator may start as an empty list of `dyn`: the
                // step fixes its element type, then everything is checked
                // with that type.
                for _ in 0..2 {
                    scope.locals.insert(c.accu_var.clone(), accu.clone());
                    let cond = check(&c.loop_cond, scope)?;
                    if cond != Ty::Bool {
                        return err(
                            &c.loop_cond,
                            format!("a condition must be bool, not {cond}"),
                        );
                    }
                    let step = check(&c.loop_step, scope)?;
                    match accu.unify(&step) {
                        Some(u) if u == accu => break,
                        Some(u) => accu = u,
                        None => {
                            return err(
                                &c.loop_step,
                                format!("the macro's result changes type from {accu} to {step}"),
                            );
                        }
                    }
                }
                scope.locals.insert(c.accu_var.clone(), accu.clone());
                check(&c.result, scope)
            })();
            for (name, old) in saved {
                match old {
                    Some(t) => scope.locals.insert(name, t),
                    None => scope.locals.remove(&name),
                };
            }
            result
        }
        Expr::Call(call) => {
            let target = call
                .target
                .as_deref()
                .map(|t| check(t, scope))
                .transpose()?;
            let args = call
                .args
                .iter()
                .map(|a| check(a, scope))
                .collect::<Result<Vec<_>, _>>()?;
            call_type(e, &call.func_name, target, &args)
        }
    }
}

fn call_type(e: &IdedExpr, name: &str, target: Option<Ty>, args: &[Ty]) -> Result<Ty, CheckError> {
    let sig = || {
        let mut all: Vec<String> = target.iter().map(ToString::to_string).collect();
        all.extend(args.iter().map(ToString::to_string));
        all.join(", ")
    };
    let bad = |what: &str| -> Result<Ty, CheckError> {
        err(e, format!("{what} does not apply to ({})", sig()))
    };
    match (name, target.as_ref(), args) {
        (operators::ADD, None, [a, b]) => match a.unify(b) {
            Some(t @ (Ty::Int | Ty::UInt | Ty::Double | Ty::String | Ty::Bytes | Ty::List(_))) => {
                Ok(t)
            }
            _ => bad("+ (operands of one type: int, uint, double, string, bytes or list)"),
        },
        (operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE, None, [a, b]) => {
            match a.unify(b) {
                Some(t @ (Ty::Int | Ty::UInt | Ty::Double)) => Ok(t),
                _ => {
                    bad("arithmetic (operands of one numeric type; convert with int() or double())")
                }
            }
        }
        (operators::MODULO, None, [a, b]) => match a.unify(b) {
            Some(t @ (Ty::Int | Ty::UInt)) => Ok(t),
            _ => bad("% (two ints or two uints)"),
        },
        (operators::NEGATE, None, [a]) => match a {
            Ty::Int | Ty::Double => Ok(a.clone()),
            _ => bad("unary - (int or double)"),
        },
        (operators::LOGICAL_NOT, None, [Ty::Bool]) => Ok(Ty::Bool),
        (operators::LOGICAL_NOT, None, _) => bad("! (bool)"),
        (operators::LOGICAL_AND | operators::LOGICAL_OR | operators::NOT_STRICTLY_FALSE, ..) => {
            if target.is_none() && args.iter().all(|a| *a == Ty::Bool) {
                Ok(Ty::Bool)
            } else {
                bad("&& and || (bool operands)")
            }
        }
        (operators::CONDITIONAL, None, [c, a, b]) => {
            if *c != Ty::Bool {
                return bad("?: (a bool condition)");
            }
            a.unify(b).ok_or_else(|| CheckError {
                node: e.id,
                message: format!(
                    "both branches of ?: must have one type, not {a} and {b}; \
                     convert one with int() or double()"
                ),
            })
        }
        (operators::EQUALS | operators::NOT_EQUALS, None, [a, b]) => {
            if a.comparable(b) {
                Ok(Ty::Bool)
            } else {
                bad("== and != (comparable operands)")
            }
        }
        (
            operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS,
            None,
            [a, b],
        ) => {
            let ordered = |t: &Ty| {
                matches!(
                    t,
                    Ty::Int | Ty::UInt | Ty::Double | Ty::String | Ty::Bytes | Ty::Bool
                )
            };
            if ordered(a) && ordered(b) && a.comparable(b) {
                Ok(Ty::Bool)
            } else {
                bad("comparison (two numbers, or two strings, bytes or bools)")
            }
        }
        (operators::INDEX, None, [Ty::List(elem), Ty::Int | Ty::UInt]) => Ok((**elem).clone()),
        (operators::INDEX, None, _) => bad("indexing (a list and an int)"),
        (operators::IN, None, [a, Ty::List(elem)]) => {
            if a.comparable(elem) {
                Ok(Ty::Bool)
            } else {
                bad("in (a value and a list of its type)")
            }
        }
        (operators::IN, None, _) => bad("in (a value and a list)"),
        ("size", None, [a]) | ("size", Some(a), []) => match a {
            Ty::String | Ty::Bytes | Ty::List(_) => Ok(Ty::Int),
            _ => bad("size (a string, bytes or a list)"),
        },
        ("int", None, [a]) => match a {
            Ty::Int | Ty::UInt | Ty::Double | Ty::String => Ok(Ty::Int),
            _ => bad("int (int, uint, double or string)"),
        },
        ("uint", None, [a]) => match a {
            Ty::Int | Ty::UInt | Ty::Double | Ty::String => Ok(Ty::UInt),
            _ => bad("uint (int, uint, double or string)"),
        },
        ("double", None, [a]) => match a {
            Ty::Int | Ty::UInt | Ty::Double | Ty::String => Ok(Ty::Double),
            _ => bad("double (int, uint, double or string)"),
        },
        ("string", None, [a]) => match a {
            Ty::Int | Ty::UInt | Ty::Double | Ty::Bool | Ty::String | Ty::Bytes => Ok(Ty::String),
            _ => bad("string (a scalar)"),
        },
        ("bytes", None, [a]) => match a {
            Ty::String | Ty::Bytes => Ok(Ty::Bytes),
            _ => bad("bytes (string or bytes)"),
        },
        ("bool", None, [a]) => match a {
            Ty::Bool | Ty::String => Ok(Ty::Bool),
            _ => bad("bool (bool or string)"),
        },
        ("contains" | "startsWith" | "endsWith", Some(Ty::String), [Ty::String]) => Ok(Ty::Bool),
        ("contains" | "startsWith" | "endsWith", ..) => {
            bad(&format!("{name} (a string, called on a string)"))
        }
        (operators::OPT_INDEX | operators::OPT_SELECT, ..) => {
            err(e, "optional syntax is not supported")
        }
        _ => err(
            e,
            format!(
                "unknown function {name:?} for ({}); supported: {FUNCTIONS}",
                sig()
            ),
        ),
    }
}

/// The deepest nesting of `e`.
pub fn depth(e: &IdedExpr) -> usize {
    1 + children(e).map(depth).max().unwrap_or(0)
}

/// The number of nodes of `e`.
pub fn size(e: &IdedExpr) -> usize {
    1 + children(e).map(size).sum::<usize>()
}

fn children(e: &IdedExpr) -> Box<dyn Iterator<Item = &IdedExpr> + '_> {
    match &e.expr {
        Expr::Call(c) => Box::new(c.target.as_deref().into_iter().chain(c.args.iter())),
        Expr::Select(s) => Box::new(std::iter::once(&*s.operand)),
        Expr::List(l) => Box::new(l.elements.iter()),
        Expr::Comprehension(c) => Box::new(
            [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ]
            .into_iter(),
        ),
        Expr::Map(m) => Box::new(m.entries.iter().map(|en| match &en.expr {
            cel::common::ast::EntryExpr::MapEntry(me) => &me.value,
            cel::common::ast::EntryExpr::StructField(sf) => &sf.value,
        })),
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {
            Box::new(std::iter::empty())
        }
    }
}
