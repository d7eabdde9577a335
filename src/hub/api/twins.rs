//! Twins and direct methods: `GET`, `PATCH` (merge) and `PUT` (replace) `/twins/{id}` with
//! `If-Match` (quoted or not; `*` matches any etag, a mismatch is 412), and
//! `POST /twins/{id}/methods`, which answers the device's `{"status", "payload"}`.

use axum::body::Bytes;
use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};

use crate::hub::error::HubError;
use crate::hub::jobs::parse_method_call;
use crate::hub::throttle::Metered;
use crate::hub::TwinWrite;

use super::body_json;
use super::call::{self, Call, Read, Service};
use super::errors::ApiError;

/// `GET /twins/{id}`.
pub(crate) async fn get(
    Path(id): Path<String>,
    Call { api, .. }: Call<Read>,
) -> Result<Json<Value>, ApiError> {
    api.meter(Metered::TwinRead, 1.0).await?;
    Ok(Json(api.hub.get_twin(&id).await?))
}

/// `PATCH /twins/{id}`.
pub(crate) async fn patch(
    id: Path<String>,
    call: Call<call::TwinWrite>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    write(id, call, body, TwinWrite::Patch).await
}

/// `PUT /twins/{id}`.
pub(crate) async fn replace(
    id: Path<String>,
    call: Call<call::TwinWrite>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    write(id, call, body, TwinWrite::Replace).await
}

async fn write(
    Path(id): Path<String>,
    Call { api, headers, .. }: Call<call::TwinWrite>,
    body: Bytes,
    mode: TwinWrite,
) -> Result<Json<Value>, ApiError> {
    api.meter(Metered::TwinUpdate, 1.0).await?;
    let body = body_json(&body)?;
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Json(api.hub.write_twin(&id, mode, body, if_match).await?))
}

/// Direct methods are metered in chunks of this many bytes of request body.
const METER_CHUNK: usize = 4096;

/// `POST /twins/{id}/methods`.
pub(crate) async fn invoke(
    Path(id): Path<String>,
    Call { api, .. }: Call<Service>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    api.meter(
        Metered::DirectMethod,
        body.len().div_ceil(METER_CHUNK).max(1) as f64,
    )
    .await?;
    let body = body_json(&body)?;
    let obj = body.as_object().ok_or_else(|| {
        HubError::invalid(format!(
            "the method call must be a JSON object with methodName, found {body}"
        ))
    })?;
    let call = parse_method_call(obj, "method call")?;
    let (status, payload) = api.hub.invoke_method(&id, call).await?;
    Ok(Json(json!({ "status": status, "payload": payload })))
}
