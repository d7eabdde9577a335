//! IoT Hub's error answers: a status, the `iothub-errorcode` header and the body
//! `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:<id>-TimeStamp:<time>"}`.
//!
//! Handlers return [`ApiError`]; the [`finish`] middleware renders it (it knows the time), and
//! also turns axum's own rejections (bad path encoding, body over the limit, wrong method) into
//! the same form, so no failure leaves without an IoT Hub code.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::macros::format_description;

use crate::hub::error::{ErrorCode, HubError};
use crate::sas::AuthError;

use super::Api;

/// A failed call, before it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    name: &'static str,
    message: String,
}

impl ApiError {
    /// An error with an explicit status and IoT Hub name.
    pub(crate) fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            name,
            message: message.into(),
        }
    }

    /// The IoT Hub error name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The text for people.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            name: e.code.name(),
            message: e.message,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        HubError::new(ErrorCode::IotHubUnauthorizedAccess, e.to_string()).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = self.status.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

/// The fallback for paths the API does not have.
pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "IotHubNotFound",
        format!(
            "{method} {} is not an IoT Hub service API call fleetsim serves",
            uri.path()
        ),
    )
}

/// Middleware around every call: times it for `/metrics` and renders errors.
pub(crate) async fn finish(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    // The route template (`/jobs/v2/{id}`), not the path: a bounded set of labels.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = api.clock.now_us();
    let mut response = next.run(req).await;
    if let Some(err) = response.extensions_mut().remove::<ApiError>() {
        response = render(&api, err);
    } else if !response.status().is_success()
        && !response.headers().contains_key("iothub-errorcode")
    {
        response = render(&api, rejection(response).await);
    }
    api.latency.record(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
        api.clock.now_us().saturating_sub(started),
    );
    response
}

/// An axum rejection (plain-text body) as an IoT Hub error.
async fn rejection(response: Response) -> ApiError {
    let status = response.status();
    let text = to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let name = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::MessageTooLarge.name(),
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::NOT_FOUND => "IotHubNotFound",
        _ => ErrorCode::ArgumentInvalid.name(),
    };
    // Anything axum rejects is the request's fault: never answer 5xx for it.
    let status = if status.is_server_error() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, name, text)
}

fn render(api: &Api, err: ApiError) -> Response {
    let now = api.clock.wall_at(api.clock.now_us());
    let stamp = now
        .format(format_description!(
            "[month]/[day]/[year] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    let tracking = {
        use rand::Rng;
        format!("{:032x}", rand::thread_rng().gen::<u128>())
    };
    let body = json!({
        "Message": format!("ErrorCode:{};{}", err.name, err.message),
        "ExceptionMessage": format!("Tracking ID:{tracking}-TimeStamp:{stamp}"),
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = err.status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(err.name) {
        h.insert("iothub-errorcode", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_and_auth_errors_map_to_their_status() {
        let e: ApiError = HubError::new(ErrorCode::JobAlreadyExists, "dup").into();
        assert_eq!(
            (e.status, e.name),
            (StatusCode::CONFLICT, "JobAlreadyExists")
        );
        let e: ApiError = AuthError::Missing.into();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.name, "IotHubUnauthorizedAccess");
    }
}
