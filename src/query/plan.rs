//! Index planning: what a condition needs, so the registry can avoid full scans.

use serde_json::Value;

use super::ast::{CmpOp, Condition, Constant, Expr, LogicOp, Path};

/// How to find the candidates for a condition. The caller still runs
/// [`Condition::matches`] on every candidate: a plan only narrows the search.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// No usable index predicate: scan every document.
    All,
    /// Only these devices can match: `deviceId = 'x'` or `deviceId IN ['x', ...]` is one of the
    /// conditions joined by the top-level `AND`s.
    DeviceIds(Vec<String>),
    /// Only documents whose `path` holds exactly `value` can match: `path = constant` is one of
    /// the conditions joined by the top-level `AND`s (e.g. `tags.building = '43'`).
    ///
    /// `value` is a string, a bool or null (an index must then keep null values). Number
    /// constants are left to the scan, since one number has many JSON spellings (`2`, `2.0`).
    Equals {
        /// The attribute path, split on '.'.
        path: Vec<String>,
        /// The constant it must equal.
        value: Value,
    },
}

impl Condition {
    /// The cheapest way to find this condition's candidates: device ids first, then the first
    /// `path = constant`, else a scan.
    pub(crate) fn plan(&self) -> Plan {
        let Some(expr) = &self.expr else {
            return Plan::All;
        };
        let mut conjuncts = Vec::new();
        conjuncts_of(expr, &mut conjuncts);
        conjuncts
            .iter()
            .find_map(|e| device_ids(e))
            .or_else(|| conjuncts.iter().find_map(|e| equals(e)))
            .unwrap_or(Plan::All)
    }
}

/// The operands of the top-level `AND`s.
fn conjuncts_of<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    if let Expr::Logic(LogicOp::And, l, r) = expr {
        conjuncts_of(l, out);
        conjuncts_of(r, out);
    } else {
        out.push(expr);
    }
}

/// `path = constant` or `constant = path`.
fn path_equals(expr: &Expr) -> Option<(&Path, &Constant)> {
    match expr {
        Expr::Compare(CmpOp::Eq, l, r) => match (&**l, &**r) {
            (Expr::Path(p), Expr::Const(c)) | (Expr::Const(c), Expr::Path(p)) => Some((p, c)),
            _ => None,
        },
        _ => None,
    }
}

fn is_device_id(path: &Path) -> bool {
    path.0.len() == 1 && path.0[0] == "deviceId"
}

fn device_ids(expr: &Expr) -> Option<Plan> {
    if let Some((path, Constant::String(id))) = path_equals(expr) {
        return is_device_id(path).then(|| Plan::DeviceIds(vec![id.clone()]));
    }
    let Expr::In {
        expr,
        list,
        negated: false,
    } = expr
    else {
        return None;
    };
    if !matches!(&**expr, Expr::Path(p) if is_device_id(p)) {
        return None;
    }
    list.iter()
        .map(|c| match c {
            Constant::String(id) => Some(id.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Plan::DeviceIds)
}

fn equals(expr: &Expr) -> Option<Plan> {
    let (path, constant) = path_equals(expr)?;
    let value = match constant {
        Constant::Null => Value::Null,
        Constant::Bool(b) => Value::Bool(*b),
        Constant::String(s) => Value::String(s.clone()),
        Constant::Number(_) => return None,
    };
    Some(Plan::Equals {
        path: path.0.clone(),
        value,
    })
}
