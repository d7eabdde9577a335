//! The device registry: `PUT`, `GET`, `DELETE /devices/{id}`, `GET /devices` (listing, `top`
//! at most 1000) and the bulk call `POST /devices` with an array of
//! `{id, importMode, authentication?}` (`create`, `createOrUpdate`, `delete`).
//!
//! IoT Hub caps a bulk call at 100 devices; fleetsim takes up to [`BULK_LIMIT`] so a large fleet
//! is registered in a few calls. A device created with `authentication.symmetricKey` keeps those
//! keys (persisted in the state directory); one created without gets the keys derived from the
//! hub's secret (see [`crate::sas`]), and the answer shows them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::hub::error::{ErrorCode, HubError};
use crate::hub::twin::Twin;
use crate::ids::check_device_id;
use crate::sas::DeviceKeys;

use super::call::{Call, RegistryRead, RegistryWrite};
use super::errors::ApiError;
use super::{body_json, Api};

/// Devices one bulk call may carry.
pub(crate) const BULK_LIMIT: usize = 100_000;
/// Devices a listing answers at most.
pub(crate) const LIST_LIMIT: usize = 1000;

/// The Device document IoT Hub answers, built from the twin and the keys.
fn device_json(twin: &Value, keys: &DeviceKeys) -> Value {
    json!({
        "deviceId": twin["deviceId"],
        "generationId": "0",
        "etag": twin["deviceEtag"],
        "connectionState": twin["connectionState"],
        "status": twin["status"],
        "statusReason": null,
        "connectionStateUpdatedTime": twin["lastActivityTime"],
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": twin["lastActivityTime"],
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": {
                "primaryKey": keys.primary_key,
                "secondaryKey": keys.secondary_key,
            },
            "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
            "type": "sas",
        },
        "capabilities": {"iotEdge": false},
    })
}

/// The keys a device document brings: `Some` for its own, `None` for derived ones.
fn keys_of(device: &Map<String, Value>) -> Result<Option<DeviceKeys>, HubError> {
    if let Some(status) = device.get("status") {
        match status.as_str().map(str::to_ascii_lowercase).as_deref() {
            None | Some("enabled") => {}
            Some(_) => {
                return Err(HubError::invalid(format!(
                    "status {status} is not supported; fleetsim devices are always enabled"
                )))
            }
        }
    }
    let auth = match device.get("authentication") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(a)) => a,
        Some(other) => {
            return Err(HubError::invalid(format!(
                "authentication is {other}; expected an object"
            )))
        }
    };
    if let Some(t) = auth.get("type").and_then(Value::as_str) {
        if !t.eq_ignore_ascii_case("sas") {
            return Err(HubError::invalid(format!(
                "authentication type '{t}' is not supported; fleetsim devices use sas keys"
            )));
        }
    }
    let key = |name: &str| -> Result<Option<String>, HubError> {
        match auth.get("symmetricKey").and_then(|k| k.get(name)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| {
                        HubError::invalid(format!(
                            "authentication.symmetricKey.{name} is not base64"
                        ))
                    })?;
                Ok(Some(s.clone()))
            }
            Some(other) => Err(HubError::invalid(format!(
                "authentication.symmetricKey.{name} is {other}; expected a base64 string"
            ))),
        }
    };
    match (key("primaryKey")?, key("secondaryKey")?) {
        (None, None) => Ok(None),
        (Some(primary_key), Some(secondary_key)) => Ok(Some(DeviceKeys {
            primary_key,
            secondary_key,
        })),
        _ => Err(HubError::invalid(
            "give both authentication.symmetricKey.primaryKey and secondaryKey, or neither",
        )),
    }
}

impl Api {
    /// Records a device's own keys (or forgets them) and persists the change.
    fn set_keys(&self, id: &str, keys: Option<DeviceKeys>) -> Result<(), ApiError> {
        let auth = &self.auth;
        let saved = self
            .state
            .save_device_keys(|| auth.set_device_keys(id, keys));
        saved.map_err(|e| {
            ApiError::from(HubError::new(
                ErrorCode::IotHubQuotaExceeded,
                format!("cannot save device keys: {e}"),
            ))
        })
    }

    async fn create_device(&self, id: &str, keys: Option<DeviceKeys>) -> Result<Value, ApiError> {
        check_device_id(id).map_err(HubError::from)?;
        let empty = Arc::new(Map::new());
        let twin = self
            .hub
            .add_device(id, Twin::new(empty.clone(), empty.clone(), empty))
            .await?;
        if keys.is_some() {
            self.set_keys(id, keys)?;
        }
        Ok(device_json(&twin, &self.auth.device_keys(id)))
    }

    async fn delete_device(&self, id: &str) -> Result<(), ApiError> {
        self.hub.remove_device(id).await?;
        if self.auth.device_keys(id) != self.auth.derived_keys(id) {
            self.set_keys(id, None)?;
        }
        Ok(())
    }
}

/// `PUT /devices/{id}`: creates a device, or with `If-Match` updates its keys.
pub(crate) async fn put(
    Path(id): Path<String>,
    Call { api, headers, .. }: Call<RegistryWrite>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = body_json(&body)?;
    let device = body.as_object().ok_or_else(|| {
        HubError::invalid(format!("the device must be a JSON object, found {body}"))
    })?;
    match device.get("deviceId") {
        None => {}
        Some(Value::String(d)) if *d == id => {}
        Some(other) => {
            return Err(HubError::invalid(format!(
                "deviceId {other} in the body differs from '{id}' in the path"
            ))
            .into())
        }
    }
    let keys = keys_of(device)?;
    let Some(if_match) = headers.get("if-match").and_then(|v| v.to_str().ok()) else {
        return Ok(Json(api.create_device(&id, keys).await?));
    };
    // An update: the device must exist and match the etag.
    let twin = api.hub.get_twin(&id).await?;
    let bare = if_match.trim().trim_matches('"');
    if bare != "*" && twin["deviceEtag"].as_str() != Some(bare) {
        return Err(HubError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "If-Match {if_match} does not match the device's etag {}",
                twin["deviceEtag"]
            ),
        )
        .into());
    }
    if keys.is_some() {
        api.set_keys(&id, keys)?;
    }
    Ok(Json(device_json(&twin, &api.auth.device_keys(&id))))
}

/// `GET /devices/{id}`.
pub(crate) async fn get(
    Path(id): Path<String>,
    Call { api, .. }: Call<RegistryRead>,
) -> Result<Json<Value>, ApiError> {
    let twin = api.hub.get_twin(&id).await?;
    Ok(Json(device_json(&twin, &api.auth.device_keys(&id))))
}

/// `DELETE /devices/{id}`: 204.
pub(crate) async fn delete(
    Path(id): Path<String>,
    Call { api, .. }: Call<RegistryWrite>,
) -> Result<StatusCode, ApiError> {
    api.delete_device(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /devices[?top=N]`: the first devices of the registry.
pub(crate) async fn list(
    Call { api, params, .. }: Call<RegistryRead>,
) -> Result<Json<Value>, ApiError> {
    let top = match params.get("top") {
        None => LIST_LIMIT,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                HubError::invalid(format!(
                    "top '{t}' is not an integer from 1 to {LIST_LIMIT}"
                ))
            })?,
    };
    let twins = api.hub.query("SELECT * FROM devices").await?;
    let devices = twins
        .iter()
        .take(top)
        .map(|t| {
            let id = t["deviceId"].as_str().unwrap_or_default();
            device_json(t, &api.auth.device_keys(id))
        })
        .collect();
    Ok(Json(Value::Array(devices)))
}

/// `POST /devices`: bulk create or delete. 200 when every device succeeded, else 400 with the
/// per-device errors (as IoT Hub's BulkRegistryOperationResult).
pub(crate) async fn bulk(
    Call { api, .. }: Call<RegistryWrite>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = body_json(&body)?;
    let items = body
        .as_array()
        .ok_or_else(|| HubError::invalid("the bulk registry call takes a JSON array of devices"))?;
    if items.len() > BULK_LIMIT {
        return Err(HubError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "{} devices in one bulk call; the limit is {BULK_LIMIT}",
                items.len()
            ),
        )
        .into());
    }
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = item
            .get("id")
            .or_else(|| item.get("deviceId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Err(e) = bulk_one(&api, &id, item).await {
            errors.push(json!({
                "deviceId": if id.is_empty() { json!(format!("#{i}")) } else { json!(id) },
                "errorCode": e.name(),
                "errorStatus": e.message(),
            }));
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let result = json!({
        "isSuccessful": errors.is_empty(),
        "errors": errors,
        "warnings": [],
    });
    // A partial failure is an answer, not an error: keep the body and add the code header.
    let mut r = (status, Json(result)).into_response();
    if status != StatusCode::OK {
        r.headers_mut().insert(
            "iothub-errorcode",
            axum::http::HeaderValue::from_static("ArgumentInvalid"),
        );
    }
    Ok(r)
}

async fn bulk_one(api: &Api, id: &str, item: &Value) -> Result<(), ApiError> {
    let obj = item.as_object().ok_or_else(|| {
        HubError::invalid(format!("each bulk entry must be an object, found {item}"))
    })?;
    if id.is_empty() {
        return Err(HubError::invalid("the entry has no id").into());
    }
    let mode = obj
        .get("importMode")
        .and_then(Value::as_str)
        .unwrap_or("create");
    match mode.to_ascii_lowercase().as_str() {
        "create" => api.create_device(id, keys_of(obj)?).await.map(drop),
        "createorupdate" => {
            let keys = keys_of(obj)?;
            match api.create_device(id, keys.clone()).await {
                Err(e) if e.name() == ErrorCode::DeviceAlreadyExists.name() => {
                    if keys.is_some() {
                        api.set_keys(id, keys)?;
                    }
                    Ok(())
                }
                other => other.map(drop),
            }
        }
        "delete" => api.delete_device(id).await,
        other => Err(HubError::invalid(format!(
            "importMode '{other}' is not supported; expected create, createOrUpdate or delete"
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_are_checked() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(keys_of(&obj(json!({"deviceId": "x"}))).unwrap(), None);
        let own = keys_of(&obj(json!({"authentication": {"symmetricKey": {
            "primaryKey": "AAAA", "secondaryKey": "BBBB"}}})))
        .unwrap()
        .unwrap();
        assert_eq!(own.secondary_key, "BBBB");
        for bad in [
            json!({"authentication": {"symmetricKey": {"primaryKey": "AAAA"}}}),
            json!({"authentication": {"symmetricKey": {"primaryKey": "!!", "secondaryKey": "AAAA"}}}),
            json!({"authentication": {"type": "selfSigned"}}),
            json!({"status": "disabled"}),
        ] {
            assert!(keys_of(&obj(bad)).is_err());
        }
    }
}
