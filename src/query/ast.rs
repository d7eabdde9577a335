//! The syntax tree of a query, and its canonical printing: printing a tree and parsing the
//! text again gives the same tree.

use std::fmt::{self, Display, Formatter};

/// A constant written in the query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Constant {
    Null,
    Bool(bool),
    /// Always finite.
    Number(f64),
    String(String),
}

/// An attribute path, split on '.' when parsed (`tags.location.building`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path(pub(crate) Vec<String>);

/// `= != < > <= >=` (`<>` parses as `!=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

/// `+ - * / %`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// `AND`, `OR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicOp {
    And,
    Or,
}

/// An expression: a condition, an operand, or a projected value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Const(Constant),
    Path(Path),
    /// `IS_DEFINED(path)`: true when the attribute exists, even with a null value.
    IsDefined(Path),
    Not(Box<Expr>),
    /// Unary minus on anything but a number constant (`-5` parses as a constant).
    Neg(Box<Expr>),
    Logic(LogicOp, Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `expr IN [...]`, or `expr NIN [...]` when `negated`.
    In {
        expr: Box<Expr>,
        list: Vec<Constant>,
        negated: bool,
    },
}

/// Binding strength, loosest first; a child looser than its slot needs parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Prec {
    Or,
    And,
    Not,
    Compare,
    Add,
    Mul,
    Unary,
    Primary,
}

impl ArithOp {
    pub(crate) fn prec(self) -> Prec {
        match self {
            ArithOp::Add | ArithOp::Sub => Prec::Add,
            ArithOp::Mul | ArithOp::Div | ArithOp::Rem => Prec::Mul,
        }
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Rem => "%",
        }
    }
}

impl LogicOp {
    pub(crate) fn prec(self) -> Prec {
        match self {
            LogicOp::And => Prec::And,
            LogicOp::Or => Prec::Or,
        }
    }
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        }
    }
}

/// The next binding strength up: the right operand of a left-associative operator.
fn tighter(prec: Prec) -> Prec {
    match prec {
        Prec::Or => Prec::And,
        Prec::And => Prec::Not,
        Prec::Not => Prec::Compare,
        Prec::Compare => Prec::Add,
        Prec::Add => Prec::Mul,
        Prec::Mul => Prec::Unary,
        Prec::Unary | Prec::Primary => Prec::Primary,
    }
}

impl Expr {
    fn prec(&self) -> Prec {
        match self {
            Expr::Const(_) | Expr::Path(_) | Expr::IsDefined(_) => Prec::Primary,
            Expr::Neg(_) => Prec::Unary,
            Expr::Not(_) => Prec::Not,
            Expr::Logic(op, ..) => op.prec(),
            Expr::Compare(..) | Expr::In { .. } => Prec::Compare,
            Expr::Arith(op, ..) => op.prec(),
        }
    }

    /// Prints `self` where an expression at least as tight as `min` is needed.
    fn write_at(&self, f: &mut Formatter<'_>, min: Prec) -> fmt::Result {
        if self.prec() < min {
            write!(f, "(")?;
            self.write_at(f, Prec::Or)?;
            return write!(f, ")");
        }
        match self {
            Expr::Const(c) => write!(f, "{c}"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::IsDefined(p) => write!(f, "IS_DEFINED({p})"),
            Expr::Not(e) => {
                write!(f, "NOT ")?;
                e.write_at(f, Prec::Not)
            }
            Expr::Neg(e) => {
                write!(f, "-")?;
                // `-5` would read back as the constant -5, not as minus applied to 5.
                if matches!(**e, Expr::Const(Constant::Number(_))) {
                    write!(f, "({e})")
                } else {
                    e.write_at(f, Prec::Unary)
                }
            }
            Expr::Logic(op, l, r) => {
                l.write_at(f, op.prec())?;
                write!(f, " {} ", if *op == LogicOp::And { "AND" } else { "OR" })?;
                r.write_at(f, tighter(op.prec()))
            }
            Expr::Compare(op, l, r) => {
                l.write_at(f, Prec::Add)?;
                write!(f, " {} ", op.symbol())?;
                r.write_at(f, Prec::Add)
            }
            Expr::Arith(op, l, r) => {
                l.write_at(f, op.prec())?;
                write!(f, " {} ", op.symbol())?;
                r.write_at(f, tighter(op.prec()))
            }
            Expr::In {
                expr,
                list,
                negated,
            } => {
                expr.write_at(f, Prec::Add)?;
                write!(f, " {} [", if *negated { "NIN" } else { "IN" })?;
                for (i, c) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{c}")?;
                }
                write!(f, "]")
            }
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.write_at(f, Prec::Or)
    }
}

impl Display for Path {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join("."))
    }
}

impl Display for Constant {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Constant::Null => write!(f, "null"),
            Constant::Bool(b) => write!(f, "{b}"),
            // Rust prints the shortest text that reads back as the same f64, never in exponent form.
            Constant::Number(n) => write!(f, "{n}"),
            Constant::String(s) => write!(f, "{}", quote(s)),
        }
    }
}

/// `s` in single quotes, with `'` and `\` escaped and control characters as `\uXXXX`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A parsed full query: `SELECT [TOP n] ... FROM ... [WHERE ...] [GROUP BY ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub(super) top: Option<u64>,
    pub(super) projection: Projection,
    pub(super) source: Source,
    pub(super) condition: Condition,
    pub(super) group_by: Vec<Path>,
}

/// What a query reads: device twins, or per-device job records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `FROM devices`: one document per device twin.
    Devices,
    /// `FROM devices.jobs`: one document per (device, job) record. Paths written with the
    /// `devices.jobs.` prefix name the record's own fields.
    DeviceJobs,
}

/// A parsed WHERE condition (or `*`, which matches everything).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// `None` for `*` (or a query without WHERE).
    pub(super) expr: Option<Expr>,
}

/// `*`, or the listed items.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Projection {
    All,
    Items(Vec<Item>),
}

/// One projected item, `value [AS alias]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) value: Selected,
    pub(crate) alias: Option<String>,
}

/// What an item projects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selected {
    /// `COUNT()`: the number of rows (per group with GROUP BY).
    Count,
    Expr(Expr),
}

impl Display for Condition {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.expr {
            None => write!(f, "*"),
            Some(expr) => write!(f, "{expr}"),
        }
    }
}

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "SELECT ")?;
        if let Some(n) = self.top {
            write!(f, "TOP {n} ")?;
        }
        match &self.projection {
            Projection::All => write!(f, "*")?,
            Projection::Items(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    match &item.value {
                        Selected::Count => write!(f, "COUNT()")?,
                        Selected::Expr(expr) => write!(f, "{expr}")?,
                    }
                    if let Some(alias) = &item.alias {
                        write!(f, " AS {alias}")?;
                    }
                }
            }
        }
        match self.source {
            Source::Devices => write!(f, " FROM devices")?,
            Source::DeviceJobs => write!(f, " FROM devices.jobs")?,
        }
        if let Some(expr) = &self.condition.expr {
            write!(f, " WHERE {expr}")?;
        }
        for (i, path) in self.group_by.iter().enumerate() {
            write!(f, "{}{path}", if i == 0 { " GROUP BY " } else { ", " })?;
        }
        Ok(())
    }
}
