//! TEMPORARY stand-in for the query language (replaced by the full implementation on merge).

use serde_json::Value;
use std::borrow::Cow;

/// What a query evaluates against.
pub trait Document {
    /// Resolves a path; None = undefined.
    fn resolve(&self, path: &[&str]) -> Option<Cow<'_, Value>>;
    /// The whole document.
    fn to_json(&self) -> Value;
}

/// Parse error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

/// Source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Devices,
    DeviceJobs,
}

/// Plan.
pub enum Plan {
    All,
    DeviceIds(Vec<String>),
    Equals { path: Vec<String>, value: Value },
}

#[derive(Debug, Clone)]
enum Term {
    Eq(Vec<String>, Value),
    In(Vec<String>, Vec<Value>),
}

/// Condition.
#[derive(Debug, Clone)]
pub struct Condition(Vec<Term>);

/// Query.
#[derive(Debug, Clone)]
pub struct Query {
    source: Source,
    cond: Condition,
}

fn lit(s: &str) -> Result<Value, QueryError> {
    let s = s.trim();
    if let Some(x) = s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
        return Ok(Value::String(x.into()));
    }
    serde_json::from_str(s).map_err(|_| QueryError(format!("bad literal {s}")))
}

/// Parses a condition.
pub fn parse_condition(text: &str) -> Result<Condition, QueryError> {
    let t = text.trim();
    if t == "*" {
        return Ok(Condition(vec![]));
    }
    if t.to_ascii_uppercase().starts_with("SELECT") {
        return Err(QueryError(
            "a job's queryCondition is the WHERE part only; found a SELECT query".into(),
        ));
    }
    let mut terms = vec![];
    for part in t.split(" AND ") {
        if let Some((p, v)) = part.split_once(" IN ") {
            let v = v.trim().trim_start_matches('[').trim_end_matches(']');
            let vals = v.split(',').map(lit).collect::<Result<_, _>>()?;
            terms.push(Term::In(
                p.trim().split('.').map(String::from).collect(),
                vals,
            ));
        } else if let Some((p, v)) = part.split_once('=') {
            terms.push(Term::Eq(
                p.trim().split('.').map(String::from).collect(),
                lit(v)?,
            ));
        } else {
            return Err(QueryError(format!("cannot parse {part}")));
        }
    }
    Ok(Condition(terms))
}

/// Parses a query.
pub fn parse_query(text: &str) -> Result<Query, QueryError> {
    let up = text.to_ascii_uppercase();
    let source = if up.contains("FROM DEVICES.JOBS") {
        Source::DeviceJobs
    } else {
        Source::Devices
    };
    let cond = match up.find(" WHERE ") {
        Some(i) => parse_condition(&text[i + 7..])?,
        None => Condition(vec![]),
    };
    Ok(Query { source, cond })
}

impl Condition {
    /// Matches.
    pub fn matches(&self, doc: &impl Document) -> bool {
        self.0.iter().all(|t| match t {
            Term::Eq(p, v) => {
                let p: Vec<&str> = p.iter().map(|s| s.as_str()).collect();
                doc.resolve(&p).is_some_and(|x| *x == *v)
            }
            Term::In(p, vs) => {
                let p: Vec<&str> = p.iter().map(|s| s.as_str()).collect();
                doc.resolve(&p).is_some_and(|x| vs.contains(&x))
            }
        })
    }
    /// Plan.
    pub fn plan(&self) -> Plan {
        for t in &self.0 {
            match t {
                Term::Eq(p, Value::String(s)) if p.len() == 1 && p[0] == "deviceId" => {
                    return Plan::DeviceIds(vec![s.clone()])
                }
                Term::Eq(p, v) => {
                    return Plan::Equals {
                        path: p.clone(),
                        value: v.clone(),
                    }
                }
                _ => {}
            }
        }
        Plan::All
    }
}

impl Query {
    /// Source.
    pub fn source(&self) -> Source {
        self.source
    }
    /// Condition.
    pub fn condition(&self) -> &Condition {
        &self.cond
    }
    /// Projection.
    pub fn project<'a, D: Document + 'a>(
        &self,
        rows: impl IntoIterator<Item = &'a D>,
    ) -> Vec<Value> {
        rows.into_iter().map(|d| d.to_json()).collect()
    }
}

impl Document for Value {
    fn resolve(&self, path: &[&str]) -> Option<Cow<'_, Value>> {
        let mut cur = self;
        for k in path {
            cur = cur.get(*k)?;
        }
        Some(Cow::Borrowed(cur))
    }
    fn to_json(&self) -> Value {
        self.clone()
    }
}
