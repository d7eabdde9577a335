//! The IoT Hub service REST API over HTTP and HTTPS, as the official service
//! SDKs call it: jobs v2, device queries with paging, twins, direct methods, the device registry,
//! and `/metrics` for Prometheus.
//!
//! Every call but `/metrics` needs a known `api-version` and a SAS token of a policy with the
//! right permission. Handlers are thin: they check the request, send the job engine a command
//! through [`Hub`] and turn its answer into IoT Hub's wire form. Every failure, axum's own
//! rejections included, leaves as IoT Hub's error body with an `iothub-errorcode` header
//! ([`errors`]).

pub(crate) mod call;
pub(crate) mod devices;
pub(crate) mod errors;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod query;
pub(crate) mod twins;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::hub::auth::{Access, Authority};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::state::StateDir;
use crate::hub::throttle::{Metered, RateLimiter};
use crate::hub::{Hub, HubView};
use errors::ApiError;

/// The `api-version`s IoT Hub has published for the service API; others are refused (400001).
pub(crate) const API_VERSIONS: &[&str] = &[
    "2016-02-03",
    "2016-11-14",
    "2017-06-30",
    "2017-11-08-preview",
    "2018-01-26",
    "2018-04-01",
    "2018-06-30",
    "2018-08-30-preview",
    "2019-03-30",
    "2019-07-01-preview",
    "2019-10-01",
    "2020-03-13",
    "2020-05-31-preview",
    "2020-06-30",
    "2020-06-30-preview",
    "2020-09-30",
    "2021-04-12",
];

/// Largest request body, except the bulk registry call.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Largest bulk registry request (a large fleet in one call).
pub(crate) const BULK_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// How long a connection may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares.
#[derive(Debug)]
pub struct Api {
    /// The job engine.
    pub(crate) hub: Hub,
    /// Policies and device keys.
    pub(crate) auth: Arc<Authority>,
    /// Where device keys are persisted.
    pub(crate) state: StateDir,
    /// Time, for token expiry, throttling and error time stamps.
    pub(crate) clock: Clock,
    /// The engine's published view, for `/metrics`.
    pub(crate) view: watch::Receiver<Arc<HubView>>,
    limiter: Arc<RateLimiter>,
    cursors: query::Cursors,
    latency: metrics::Latency,
}

impl Api {
    /// The shared state of the API over `hub`, metered by `limiter` (shared with the MQTT endpoint).
    pub fn new(
        hub: Hub,
        auth: Arc<Authority>,
        state: StateDir,
        clock: Clock,
        limiter: Arc<RateLimiter>,
        view: watch::Receiver<Arc<HubView>>,
    ) -> Arc<Api> {
        Arc::new(Api {
            hub,
            auth,
            state,
            clock,
            view,
            limiter,
            cursors: query::Cursors::default(),
            latency: metrics::Latency::default(),
        })
    }

    /// Checks the `api-version` and the SAS token of a call needing `access`.
    pub(crate) fn admit(
        &self,
        headers: &HeaderMap,
        params: &HashMap<String, String>,
        access: Access,
    ) -> Result<(), ApiError> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let now = self.clock.wall_at(self.clock.now_us());
        self.auth.verify_service_token(token, access, now)?;
        match params.get("api-version") {
            None => Err(HubError::new(
                ErrorCode::InvalidProtocolVersion,
                "the api-version query parameter is missing; send e.g. ?api-version=2021-04-12",
            )
            .into()),
            Some(v) if API_VERSIONS.contains(&v.as_str()) => Ok(()),
            Some(v) => Err(HubError::new(
                ErrorCode::InvalidProtocolVersion,
                format!(
                    "api-version '{v}' is not a published IoT Hub version; use one of {}",
                    API_VERSIONS.join(", ")
                ),
            )
            .into()),
        }
    }

    /// Counts a call (`cost` of them: 4 KB chunks for direct methods) against the tier's
    /// allowance for `op`: shaped or refused past it as the hub's throttle model says.
    pub(crate) async fn meter(&self, op: Metered, cost: f64) -> Result<(), ApiError> {
        Ok(self.limiter.pass(op, cost, &self.clock).await?)
    }
}

/// Parses a request body as JSON (400 ArgumentInvalid naming the problem otherwise).
pub(crate) fn body_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HubError::invalid("the request body is empty; expected JSON").into());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| HubError::invalid(format!("the request body is not valid JSON: {e}")).into())
}

/// The API's routes over `api`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/jobs/v2/query", get(jobs::list))
        .route("/jobs/v2/{id}", put(jobs::create).get(jobs::get))
        .route("/jobs/v2/{id}/cancel", post(jobs::cancel))
        .route("/devices/query", post(query::devices))
        .route(
            "/devices",
            get(devices::list)
                .post(devices::bulk)
                .layer(DefaultBodyLimit::max(BULK_BODY_LIMIT)),
        )
        .route(
            "/devices/{id}",
            put(devices::put).get(devices::get).delete(devices::delete),
        )
        .route(
            "/twins/{id}",
            get(twins::get).patch(twins::patch).put(twins::replace),
        )
        .route("/twins/{id}/methods", post(twins::invoke))
        .route("/metrics", get(metrics::render))
        .fallback(errors::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            errors::finish,
        ))
        .with_state(api)
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`, then lets open
/// requests finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), service, shutdown).await,
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    serve_connection(TokioIo::new(stream), service, shutdown).await
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await;
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<Router>,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Small JSON answers: one flattened write per response beats a vectored one.
    builder.writev(false);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_json_names_the_problem() {
        assert!(body_json(b" ").unwrap_err().message().contains("empty"));
        assert!(body_json(b"{\"a\":")
            .unwrap_err()
            .message()
            .contains("not valid JSON"));
        assert_eq!(body_json(b"[1]").unwrap(), serde_json::json!([1]));
    }
}
