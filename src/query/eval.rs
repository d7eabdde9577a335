//! Evaluates expressions against a [`Document`]. With a document that lends its values
//! (`Cow::Borrowed`), evaluating a condition allocates nothing.
//!
//! Values follow the IoT Hub (Cosmos DB) rules: a missing attribute is *undefined*, not null;
//! comparisons hold only between primitives of one type; anything else is undefined, and
//! `AND`/`OR`/`NOT` pass undefined through (`false AND undefined` is false, `true OR undefined`
//! is true, `NOT undefined` is undefined). A condition selects only when it is `true`.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::ast::{ArithOp, CmpOp, Constant, Expr, LogicOp, Path};
use super::Document;

/// The value of an expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    /// An object or array: it can be projected, never compared.
    Json(Cow<'a, Value>),
}

impl<'a> Val<'a> {
    fn from_json(value: Cow<'a, Value>) -> Self {
        match value {
            Cow::Borrowed(Value::String(s)) => Val::Str(Cow::Borrowed(s)),
            Cow::Owned(Value::String(s)) => Val::Str(Cow::Owned(s)),
            Cow::Borrowed(v) => Self::from_scalar(v).unwrap_or(Val::Json(Cow::Borrowed(v))),
            Cow::Owned(v) => Self::from_scalar(&v).unwrap_or(Val::Json(Cow::Owned(v))),
        }
    }

    /// Null, bool or number; `None` for anything else.
    fn from_scalar(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(Val::Null),
            Value::Bool(b) => Some(Val::Bool(*b)),
            Value::Number(n) => Some(n.as_f64().map_or(Val::Undefined, Val::Num)),
            _ => None,
        }
    }

    fn from_constant(constant: &'a Constant) -> Self {
        match constant {
            Constant::Null => Val::Null,
            Constant::Bool(b) => Val::Bool(*b),
            Constant::Number(n) => Val::Num(*n),
            Constant::String(s) => Val::Str(Cow::Borrowed(s)),
        }
    }

    /// The JSON for a projected value; `None` when undefined (the key is then left out).
    pub(crate) fn into_json(self) -> Option<Value> {
        match self {
            Val::Undefined => None,
            Val::Null => Some(Value::Null),
            Val::Bool(b) => Some(Value::Bool(b)),
            Val::Num(n) => Some(number_json(n)),
            Val::Str(s) => Some(Value::String(s.into_owned())),
            Val::Json(v) => Some(v.into_owned()),
        }
    }
}

/// A finite f64 as JSON: whole numbers as integers (`2`, not `2.0`).
fn number_json(n: f64) -> Value {
    // Whole and within ±2^63: the cast is exact.
    if n.fract() == 0.0 && n.abs() < 9.223_372_036_854_776e18 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// Looks `path` up in `doc` without allocating for paths of up to 16 segments.
pub(crate) fn resolve<'a, D: Document + ?Sized>(path: &Path, doc: &'a D) -> Option<Cow<'a, Value>> {
    const INLINE: usize = 16;
    let segments = &path.0;
    if segments.len() <= INLINE {
        let mut buf = [""; INLINE];
        for (slot, segment) in buf.iter_mut().zip(segments) {
            *slot = segment;
        }
        doc.resolve(&buf[..segments.len()])
    } else {
        let split: Vec<&str> = segments.iter().map(String::as_str).collect();
        doc.resolve(&split)
    }
}

/// The value of `expr` for `doc`.
pub(crate) fn eval<'a, D: Document + ?Sized>(expr: &'a Expr, doc: &'a D) -> Val<'a> {
    match expr {
        Expr::Const(c) => Val::from_constant(c),
        Expr::Path(p) => resolve(p, doc).map_or(Val::Undefined, Val::from_json),
        Expr::IsDefined(p) => Val::Bool(resolve(p, doc).is_some()),
        Expr::Not(e) => match eval(e, doc) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Undefined,
        },
        Expr::Neg(e) => match eval(e, doc) {
            Val::Num(n) => Val::Num(-n),
            _ => Val::Undefined,
        },
        Expr::Logic(op, l, r) => logic(*op, l, r, doc),
        Expr::Compare(op, l, r) => compare(*op, &eval(l, doc), &eval(r, doc)),
        Expr::Arith(op, l, r) => match (eval(l, doc), eval(r, doc)) {
            (Val::Num(a), Val::Num(b)) => arith(*op, a, b),
            _ => Val::Undefined,
        },
        Expr::In {
            expr,
            list,
            negated,
        } => match eval(expr, doc) {
            v @ (Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_)) => {
                let found = list
                    .iter()
                    .any(|c| compare(CmpOp::Eq, &v, &Val::from_constant(c)) == Val::Bool(true));
                Val::Bool(found != *negated)
            }
            Val::Undefined | Val::Json(_) => Val::Undefined,
        },
    }
}

/// `AND` / `OR` with undefined passed through; the right side is skipped when the left decides.
fn logic<'a, D: Document + ?Sized>(op: LogicOp, l: &'a Expr, r: &'a Expr, doc: &'a D) -> Val<'a> {
    let decisive = op == LogicOp::Or;
    let left = eval(l, doc);
    if left == Val::Bool(decisive) {
        return left;
    }
    match eval(r, doc) {
        right @ Val::Bool(b) if b == decisive => right,
        Val::Bool(_) if left == Val::Bool(!decisive) => Val::Bool(!decisive),
        _ => Val::Undefined,
    }
}

/// Compares two primitives of one type; anything else is undefined.
fn compare(op: CmpOp, l: &Val<'_>, r: &Val<'_>) -> Val<'static> {
    let ordering = match (l, r) {
        (Val::Null, Val::Null) => {
            return match op {
                CmpOp::Eq => Val::Bool(true),
                CmpOp::Ne => Val::Bool(false),
                _ => Val::Undefined,
            }
        }
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let Some(ordering) = ordering else {
        return Val::Undefined;
    };
    Val::Bool(match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    })
}

/// Arithmetic on two numbers; a non-finite result (division by zero) is undefined.
fn arith(op: ArithOp, a: f64, b: f64) -> Val<'static> {
    let n = match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div => a / b,
        ArithOp::Rem => a % b,
    };
    if n.is_finite() {
        Val::Num(n)
    } else {
        Val::Undefined
    }
}
