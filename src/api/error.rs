//! API errors: each maps to one HTTP status and a JSON body `{error, code}` whose text says
//! what is wrong and what to do. Expected trouble (no leader, not ready) is 503 so clients try
//! another member.

use super::model::ApiErrorBody;
use crate::dcs::handle::DcsError;
use crate::tls::pki::PkiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("this call changes the cluster and needs a client certificate of the cluster CA: use `pgha ctl`, which reads ctl.certfile and ctl.keyfile from the config")]
    NoClientCert,
    #[error("this call needs the REST API's basic auth (restapi.authentication): pgha ctl sends ctl.authentication or restapi.authentication from its config")]
    BasicAuth,
    #[error("certificate refused: {0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Patroni answers 412 when a check about the members fails (switchover, failover).
    #[error("{0}")]
    Precondition(String),
    /// Well-formed but impossible, like a time in the past (Patroni answers 422).
    #[error("{0}")]
    Unprocessable(String),
    #[error("this member has not received the cluster state yet; try another member")]
    NotReady,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DcsError> for ApiError {
    fn from(e: DcsError) -> Self {
        match e {
            DcsError::NotReady => ApiError::NotReady,
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<PkiError> for ApiError {
    fn from(e: PkiError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NoClientCert => (StatusCode::UNAUTHORIZED, "client_certificate_required"),
            ApiError::BasicAuth => (StatusCode::UNAUTHORIZED, "basic_auth_required"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "refused"),
            ApiError::Precondition(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ApiErrorBody { error: self.to_string(), code: code.to_string(), leader_api: None };
        (status, Json(body)).into_response()
    }
}
