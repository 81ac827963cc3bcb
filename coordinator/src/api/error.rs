//! Errors as JSON bodies with the right status, and the JSON extractor whose rejections are
//! such errors too.

use crate::store::StoreError;
use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use protocol::api::*;
use shaders::Job;

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }
    pub fn field(field: &str, error: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: error.into(),
                field: Some(field.to_owned()),
            },
        }
    }
}

impl ApiError {
    /// The same error with another status (a field error that is a 404 or a 409).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// A report's canonical output: base64 of exactly the bytes `job` produces, or an error
/// naming `output` (shared by volunteers' reports and verifier workers' results).
pub(crate) fn decode_output(
    job: &Job,
    b64: Option<&str>,
    missing: &str,
) -> Result<Vec<u8>, ApiError> {
    let b64 = b64.ok_or_else(|| ApiError::field("output", missing))?;
    let output = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ApiError::field("output", format!("not base64: {e}")))?;
    let want = job.output_len();
    if output.len() as u64 != want {
        return Err(ApiError::field(
            "output",
            format!(
                "is {} bytes; {} with these params produces {want}",
                output.len(),
                job.kernel()
            ),
        ));
    }
    Ok(output)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = (self.status == StatusCode::SERVICE_UNAVAILABLE)
            .then_some([(axum::http::header::RETRY_AFTER, "60")]);
        (self.status, retry, Json(self.body)).into_response()
    }
}

/// Every API error is JSON: errors that axum's own extractors and router produce (a method
/// not allowed, a path parameter that is not a number, a body that is not UTF-8) come as
/// plain text, and are rewritten here as an [`ErrorBody`] with the same status and headers.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = ApiError::new(status, error).into_response();
    for (k, v) in &parts.headers {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            StoreError::Quota(m) => {
                let mut e = ApiError::field("units", m);
                e.status = StatusCode::TOO_MANY_REQUESTS;
                e
            }
            StoreError::Invalid { field, message } => ApiError::field(&field, message),
            StoreError::Db(m) | StoreError::Retry(m) => {
                tracing::error!("store: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal storage error")
            }
            // Nothing was stored: a client may send the same request again later.
            StoreError::Full(m) => {
                tracing::error!("store: {m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the coordinator's storage is full; try again later",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

/// `Json` whose rejections are JSON errors too.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
pub struct Body<T>(pub T);
