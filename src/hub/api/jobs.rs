//! Jobs v2: `PUT /jobs/v2/{id}` (create, answers 200 with status `queued`), `GET /jobs/v2/{id}`,
//! `POST /jobs/v2/{id}/cancel` and `GET /jobs/v2/query` (paged, filtered by `jobType` and
//! `jobStatus`, both case-insensitive). Each counts against the tier's job-operation rate.

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use crate::hub::error::HubError;
use crate::hub::jobs::{parse_job_type, JobRequest, JobStatus};
use crate::hub::throttle::Metered;

use super::body_json;
use super::call::{Call, Read, Service};
use super::errors::ApiError;
use super::query::Paging;

/// `PUT /jobs/v2/{id}`.
pub(crate) async fn create(
    Path(id): Path<String>,
    Call { api, .. }: Call<Service>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    api.meter(Metered::JobApi, 1.0).await?;
    let request = JobRequest::from_json(&body_json(&body)?, Some(&id))?;
    Ok(Json(api.hub.create_job(request).await?))
}

/// `GET /jobs/v2/{id}`.
pub(crate) async fn get(
    Path(id): Path<String>,
    Call { api, .. }: Call<Read>,
) -> Result<Json<Value>, ApiError> {
    api.meter(Metered::JobApi, 1.0).await?;
    Ok(Json(api.hub.get_job(&id).await?))
}

/// `POST /jobs/v2/{id}/cancel`.
pub(crate) async fn cancel(
    Path(id): Path<String>,
    Call { api, .. }: Call<Service>,
) -> Result<Json<Value>, ApiError> {
    api.meter(Metered::JobApi, 1.0).await?;
    Ok(Json(api.hub.cancel_job(&id).await?))
}

/// `GET /jobs/v2/query[?jobType=..][&jobStatus=..]`: a bare array of JobResponse, paged.
pub(crate) async fn list(
    Call {
        api,
        headers,
        params,
        ..
    }: Call<Read>,
) -> Result<Response, ApiError> {
    api.meter(Metered::JobApi, 1.0).await?;
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
