//! Turns the documents a condition selected into result rows: `*`, projections with `AS`,
//! `TOP n`, and `GROUP BY` with `COUNT()`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::ast::{Expr, Item, Path, Projection, Query, Selected};
use super::eval::{eval, resolve};
use super::Document;

impl Query {
    /// Runs projection / TOP / GROUP BY + COUNT() over documents that already passed the
    /// condition (the caller filters, possibly through an index). Returns the result rows as JSON.
    ///
    /// A projected value that is undefined leaves its key out of the row. An item without `AS`
    /// is named after its path's last segment, or `$1`, `$2`, ... when it is not a path.
    /// Groups come out in the order their first document came in.
    pub fn project<'a, D: Document + 'a>(
        &self,
        rows: impl IntoIterator<Item = &'a D>,
    ) -> Vec<Value> {
        let limit = self
            .top
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let rows = rows.into_iter();
        match &self.projection {
            Projection::All => rows.take(limit).map(|doc| doc.to_json()).collect(),
            Projection::Items(items) => {
                let names = names(items);
                let aggregate =
                    !self.group_by.is_empty() || items.iter().any(|i| i.value == Selected::Count);
                if aggregate {
                    let groups = group(&self.group_by, rows);
                    groups
                        .into_iter()
                        .take(limit)
                        .map(|g| group_row(items, &names, &self.group_by, g))
                        .collect()
                } else {
                    rows.take(limit)
                        .map(|doc| plain_row(items, &names, doc))
                        .collect()
                }
            }
        }
    }
}

/// The output key of each item.
fn names(items: &[Item]) -> Vec<String> {
    let mut unnamed = 0;
    items
        .iter()
        .map(|item| match (&item.alias, &item.value) {
            (Some(alias), _) => alias.clone(),
            (None, Selected::Expr(Expr::Path(Path(segments)))) => {
                segments.last().cloned().unwrap_or_default()
            }
            (None, _) => {
                unnamed += 1;
                format!("${unnamed}")
            }
        })
        .collect()
}

fn plain_row<D: Document + ?Sized>(items: &[Item], names: &[String], doc: &D) -> Value {
    let mut row = Map::new();
    for (item, name) in items.iter().zip(names) {
        let value = match &item.value {
            // A path keeps its JSON exactly (objects, big integers); other values are computed.
            Selected::Expr(Expr::Path(path)) => resolve(path, doc).map(Cow::into_owned),
            Selected::Expr(expr) => eval(expr, doc).into_json(),
            // Only aggregate queries hold COUNT(); the parser sees to that.
            Selected::Count => None,
        };
        if let Some(value) = value {
            row.insert(name.clone(), value);
        }
    }
    Value::Object(row)
}

/// One group: the values of the GROUP BY paths (`None` when undefined) and its size.
struct Group {
    values: Vec<Option<Value>>,
    count: u64,
}

/// Splits `rows` by the values of `paths`; without paths, all rows form one group.
fn group<'a, D: Document + 'a>(paths: &[Path], rows: impl Iterator<Item = &'a D>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    // Keyed by the values' JSON text; "" (never valid JSON) stands for undefined.
    let mut index: HashMap<Vec<String>, usize> = HashMap::new();
    for doc in rows {
        let values: Vec<Option<Cow<'_, Value>>> = paths.iter().map(|p| resolve(p, doc)).collect();
        let key: Vec<String> = values
            .iter()
            .map(|v| v.as_ref().map_or(String::new(), |v| v.to_string()))
            .collect();
        let slot = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                values: values.into_iter().map(|v| v.map(Cow::into_owned)).collect(),
                count: 0,
            });
            groups.len() - 1
        });
        groups[slot].count += 1;
    }
    if paths.is_empty() && groups.is_empty() {
        groups.push(Group {
            values: Vec::new(),
            count: 0,
        });
    }
    groups
}

fn group_row(items: &[Item], names: &[String], paths: &[Path], group: Group) -> Value {
    let mut row = Map::new();
    for (item, name) in items.iter().zip(names) {
        let value = match &item.value {
            Selected::Count => Some(Value::from(group.count)),
            // The parser lets only GROUP BY paths through here.
            Selected::Expr(expr) => paths
                .iter()
                .position(|p| matches!(expr, Expr::Path(e) if e == p))
                .and_then(|i| group.values.get(i).cloned().flatten()),
        };
        if let Some(value) = value {
            row.insert(name.clone(), value);
        }
    }
    Value::Object(row)
}
