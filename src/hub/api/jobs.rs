//! Jobs v2: `PUT /jobs/v2/{id}` (create, answers 200 with status `queued`), `GET /jobs/v2/{id}`,
//! `POST /jobs/v2/{id}/cancel` and `GET /jobs/v2/query` (paged, filtered by `jobType` and
//! `jobStatus`, both case-insensitive). Each counts against the tier's job-operation rate.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use crate::hub::auth::Access;
use crate::hub::error::HubError;
use crate::hub::jobs::{parse_job_type, JobRequest, JobStatus};
use crate::hub::throttle::Metered;

use super::errors::ApiError;
use super::query::Paging;
use super::{body_json, Api, Params};

/// `PUT /jobs/v2/{id}`.
pub async fn create(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    api.admit(&headers, &params, Access::Service)?;
    api.meter(Metered::JobApi, 1.0)?;
    let request = JobRequest::from_json(&body_json(&body)?, Some(&id))?;
    Ok(Json(api.hub.create_job(request).await?))
}

/// `GET /jobs/v2/{id}`.
pub async fn get(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    api.admit(&headers, &params, Access::Read)?;
    api.meter(Metered::JobApi, 1.0)?;
    Ok(Json(api.hub.get_job(&id).await?))
}

/// `POST /jobs/v2/{id}/cancel`.
pub async fn cancel(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    api.admit(&headers, &params, Access::Service)?;
    api.meter(Metered::JobApi, 1.0)?;
    Ok(Json(api.hub.cancel_job(&id).await?))
}

/// `GET /jobs/v2/query[?jobType=..][&jobStatus=..]`: a bare array of JobResponse, paged.
pub async fn list(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, ApiError> {
    api.admit(&headers, &params, Access::Read)?;
    api.meter(Metered::JobApi, 1.0)?;
    let paging = Paging::read(&headers, &params)?;
    if paging.token.is_some() {
        return api.cursors.page(&paging, None);
    }
    let job_type = match params.get("jobType").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(parse_job_type(t).ok_or_else(|| {
            HubError::invalid(format!(
                "jobType '{t}' is unknown; expected scheduleDeviceMethod or scheduleUpdateTwin"
            ))
        })?),
    };
    let status = match params.get("jobStatus").filter(|t| !t.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            HubError::invalid(format!(
                "jobStatus '{s}' is unknown; expected queued, scheduled, running, completed, failed or cancelled"
            ))
        })?),
    };
    let jobs = api.hub.list_jobs(job_type, status).await?;
    api.cursors.page(&paging, Some((jobs, "JobResponse")))
}
