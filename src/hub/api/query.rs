//! Paged answers (jobs query and device query alike) and `POST /devices/query`.
//!
//! The page size comes from `x-ms-max-item-count` or `pageSize`, the continuation from
//! `x-ms-continuation` or `continuationToken`. The first page runs the query; when more rows
//! remain they are kept under a cursor (a consistent snapshot, so later pages cost only their
//! own rows) and the answer carries `x-ms-continuation`. The last page carries none: an empty
//! continuation would make the Node SDK ask forever.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::hub::error::HubError;
use crate::hub::throttle::Metered;

use super::body_json;
use super::call::{Call, Read};
use super::errors::ApiError;

/// Rows per page when the caller does not say.
pub(crate) const DEFAULT_PAGE: usize = 100;
/// The largest page a caller may ask for.
pub(crate) const MAX_PAGE: usize = 1000;
/// Cursors kept at once; the oldest goes first.
const MAX_CURSORS: usize = 256;

/// The rows still to be paged for one query.
#[derive(Debug)]
struct Cursor {
    rows: Arc<Vec<Value>>,
    item_type: &'static str,
}

/// Open cursors by id. A std mutex held for a map operation only, never across `.await`.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    open: Mutex<(u64, BTreeMap<u64, Cursor>)>,
}

/// What page a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paging {
    /// Rows per page.
    pub(crate) size: usize,
    /// The continuation token, if any.
    pub(crate) token: Option<String>,
}

impl Paging {
    /// Reads the page size and continuation from headers or query parameters.
    pub(crate) fn read(
        headers: &HeaderMap,
        params: &HashMap<String, String>,
    ) -> Result<Paging, ApiError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let size = match header("x-ms-max-item-count").or_else(|| params.get("pageSize").cloned()) {
            None => DEFAULT_PAGE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(HubError::invalid(format!(
                        "page size '{text}' is not an integer from 1 to {MAX_PAGE}"
                    ))
                    .into())
                }
            },
        };
        let token = header("x-ms-continuation").or_else(|| {
            params
                .get("continuationToken")
                .filter(|t| !t.is_empty())
                .cloned()
        });
        Ok(Paging { size, token })
    }
}

impl Cursors {
    /// Answers one page. With no continuation, `first` holds the query's rows and their item
    /// type; with one, the page comes from the cursor it names.
    pub(crate) fn page(
        &self,
        paging: &Paging,
        first: Option<(Vec<Value>, &'static str)>,
    ) -> Result<Response, ApiError> {
        let (rows, item_type, offset) = match (&paging.token, first) {
            (None, Some((rows, item_type))) => (Arc::new(rows), item_type, 0),
            (Some(token), _) => {
                let (id, offset) = parse_token(token)?;
                let open = self.lock();
                let c = open.1.get(&id).ok_or_else(|| expired(token))?;
                (c.rows.clone(), c.item_type, offset)
            }
            (None, None) => return Err(HubError::invalid("nothing to page").into()),
        };
        // The offset is the client's (a token it may have made up): past the rows, it is not
        // a token this hub gave.
        if offset > rows.len() {
            return Err(expired(paging.token.as_deref().unwrap_or_default()));
        }
        let end = offset.saturating_add(paging.size).min(rows.len());
        let page: Vec<Value> = rows.get(offset..end).unwrap_or_default().to_vec();
        let mut next = None;
        {
            let mut open = self.lock();
            if let Some(token) = &paging.token {
                if end >= rows.len() {
                    if let Ok((id, _)) = parse_token(token) {
                        open.1.remove(&id);
                    }
                }
                if end < rows.len() {
                    next = parse_token(token)
                        .ok()
                        .map(|(id, _)| format!("{id:x}.{end:x}"));
                }
            } else if end < rows.len() {
                let id = open.0;
                open.0 += 1;
                if open.1.len() >= MAX_CURSORS {
                    open.1.pop_first();
                }
                open.1.insert(id, Cursor { rows, item_type });
                next = Some(format!("{id:x}.{end:x}"));
            }
        }
        let mut r = Json(Value::Array(page)).into_response();
        let h = r.headers_mut();
        h.insert("x-ms-item-type", HeaderValue::from_static(item_type));
        if let Some(t) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
            h.insert("x-ms-continuation", t);
        }
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Cursor>)> {
        // A poisoned map is still a valid map: each change is a single insert or remove.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn expired(token: &str) -> ApiError {
    HubError::invalid(format!(
        "continuation token '{token}' is unknown or expired; run the query again"
    ))
    .into()
}

fn parse_token(token: &str) -> Result<(u64, usize), ApiError> {
    let (id, offset) = token.split_once('.').ok_or_else(|| expired(token))?;
    match (
        u64::from_str_radix(id, 16),
        usize::from_str_radix(offset, 16),
    ) {
        (Ok(id), Ok(offset)) => Ok((id, offset)),
        _ => Err(expired(token)),
    }
}

/// The `x-ms-item-type` of a query's rows: `DeviceJob` for `devices.jobs`, `Twin` for
/// `SELECT *` over devices, `Raw` for projections and aggregates.
pub(crate) fn item_type(sql: &str) -> &'static str {
    let upper = sql.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    let from = words.iter().position(|w| *w == "FROM");
    if from.and_then(|i| words.get(i + 1)) == Some(&"DEVICES.JOBS") {
        return "DeviceJob";
    }
    let mut select = words.get(1..from.unwrap_or(0)).unwrap_or_default();
    if select.first() == Some(&"TOP") {
        select = select.get(2..).unwrap_or_default();
    }
    if select == ["*"] {
        "Twin"
    } else {
        "Raw"
    }
}

/// `POST /devices/query` with `{"query": "..."}`.
pub(crate) async fn devices(
    Call {
        api,
        headers,
        params,
        ..
    }: Call<Read>,
    body: Bytes,
) -> Result<Response, ApiError> {
    api.meter(Metered::Query, 1.0).await?;
    let paging = Paging::read(&headers, &params)?;
    if paging.token.is_some() {
        return api.cursors.page(&paging, None);
    }
    let body = body_json(&body)?;
    let sql = match body.get("query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(other) => {
            return Err(HubError::invalid(format!(
                "query is {other}; expected the query text, e.g. SELECT * FROM devices"
            ))
            .into())
        }
        None => {
            return Err(HubError::invalid(
                "the body has no query; send {\"query\": \"SELECT * FROM devices\"}",
            )
            .into())
        }
    };
    let rows = api.hub.query(&sql).await?;
    api.cursors.page(&paging, Some((rows, item_type(&sql))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_types_follow_the_query() {
        assert_eq!(item_type("SELECT * FROM devices"), "Twin");
        assert_eq!(item_type("select top 5 * from devices where x = 1"), "Twin");
        assert_eq!(item_type("SELECT deviceId FROM devices"), "Raw");
        assert_eq!(
            item_type("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j'"),
            "DeviceJob"
        );
        assert_eq!(item_type("nonsense"), "Raw");
    }

    #[test]
    fn pages_end_without_a_continuation() {
        let cursors = Cursors::default();
        let rows: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let first = Paging {
            size: 2,
            token: None,
        };
        let r = cursors.page(&first, Some((rows, "Raw"))).unwrap();
        let token = r.headers()["x-ms-continuation"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(r.headers()["x-ms-item-type"], "Raw");
        let second = Paging {
            size: 3,
            token: Some(token),
        };
        let r = cursors.page(&second, None).unwrap();
        assert!(r.headers().get("x-ms-continuation").is_none());
        assert!(cursors.page(&second, None).is_err(), "the cursor is gone");
        let r = cursors
            .page(&first, Some((vec![json!(1)], "Twin")))
            .unwrap();
        assert!(r.headers().get("x-ms-continuation").is_none());
        let mut h = HeaderMap::new();
        h.insert("x-ms-max-item-count", HeaderValue::from_static("0"));
        assert!(Paging::read(&h, &HashMap::new()).is_err());
        let p: HashMap<String, String> = [("pageSize".to_string(), "7".to_string())].into();
        assert_eq!(Paging::read(&HeaderMap::new(), &p).unwrap().size, 7);
    }
}
