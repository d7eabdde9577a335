//! What every service call checks before its handler runs, as one extractor: a [`Call`] has a
//! published `api-version` and a SAS token of a policy with the access its type names, and
//! carries the API state, the headers and the query parameters the handler goes on with.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::hub::auth::Access;
use crate::hub::error::HubError;

use super::errors::ApiError;
use super::Api;

/// An admitted call needing the access `A` names.
pub(crate) struct Call<A> {
    /// The API's shared state.
    pub(crate) api: Arc<Api>,
    /// The request headers (paging, `If-Match`).
    pub(crate) headers: HeaderMap,
    /// The query parameters (`api-version`, paging, filters).
    pub(crate) params: HashMap<String, String>,
    access: PhantomData<A>,
}

/// The access a [`Call`] needs, named by a type.
pub(crate) trait Needs {
    /// The access.
    const ACCESS: Access;
}

macro_rules! needs {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl Needs for $name {
            const ACCESS: Access = Access::$name;
        }
    )*};
}

needs! {
    /// Read twins, jobs and query results.
    Read;
    /// Write twins.
    TwinWrite;
    /// Create or cancel jobs, invoke direct methods.
    Service;
    /// Read device identities.
    RegistryRead;
    /// Create or delete device identities.
    RegistryWrite;
}

impl<A: Needs> FromRequestParts<Arc<Api>> for Call<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, api)
            .await
            .map_err(|e| HubError::invalid(format!("bad query string: {}", e.body_text())))?;
        api.admit(&parts.headers, &params, A::ACCESS)?;
        Ok(Call {
            api: api.clone(),
            headers: parts.headers.clone(),
            params,
            access: PhantomData,
        })
    }
}
