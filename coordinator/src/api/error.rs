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

/// The most reports one `POST /api/v1/results` carries.
pub const MAX_REPORTS: usize = 256;

/// `POST /api/v1/results`'s body: one report, or an array of at most [`MAX_REPORTS`]. Decoded
/// without a JSON tree: an array's items are borrowed slices of the body, the decoding stops
/// at item 257, and each item is decoded on its own (a bad one is its own 400, named `[i]`).
/// So memory is the body plus the reports it carries, however the array is filled (a tree of
/// a 30 MiB array of zeros took 510 MB).
pub enum Reports {
    One(ResultReport),
    /// Each item's assignment id (0 where it has none) and the item.
    Many(Vec<(i64, Result<ResultReport, ApiError>)>),
}

impl Reports {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        use serde::de::{Error as _, SeqAccess, Visitor};
        use serde_json::value::RawValue;
        const TOO_MANY: &str = "at most 256 reports at once";
        struct Items<'a>(Vec<&'a RawValue>);
        struct ItemsVisitor;
        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = Items<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of reports")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items<'de>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    if items.len() == MAX_REPORTS {
                        return Err(A::Error::custom(TOO_MANY));
                    }
                    items.push(item);
                }
                Ok(Items(items))
            }
        }
        impl<'de> serde::Deserialize<'de> for Items<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_seq(ItemsVisitor)
            }
        }
        /// A bad item's `assignment_id`, if it is a number; anything else there is skipped
        /// unread (never a tree).
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(default, deserialize_with = "number_or_skip")]
            assignment_id: Option<i64>,
        }
        fn number_or_skip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Option<i64>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("anything")
                }
                fn visit_i64<E>(self, v: i64) -> Result<Option<i64>, E> {
                    Ok(Some(v))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Option<i64>, E> {
                    Ok(i64::try_from(v).ok())
                }
                fn visit_f64<E>(self, _: f64) -> Result<Option<i64>, E> {
                    Ok(None)
                }
                fn visit_bool<E>(self, _: bool) -> Result<Option<i64>, E> {
                    Ok(None)
                }
                fn visit_str<E>(self, _: &str) -> Result<Option<i64>, E> {
                    Ok(None)
                }
                fn visit_unit<E>(self) -> Result<Option<i64>, E> {
                    Ok(None)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Option<i64>, A::Error> {
                    while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    Ok(None)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Option<i64>, A::Error> {
                    while a
                        .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                        .is_some()
                    {}
                    Ok(None)
                }
            }
            d.deserialize_any(V)
        }
        let bad = |e: serde_json::Error| {
            if e.to_string().starts_with(TOO_MANY) {
                ApiError::field("reports", TOO_MANY)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
        };
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
            return serde_json::from_slice(body).map(Self::One).map_err(bad);
        }
        let Items(items) = serde_json::from_slice(body).map_err(bad)?;
        Ok(Self::Many(
            items
                .into_iter()
                .enumerate()
                .map(
                    |(i, raw)| match serde_json::from_str::<ResultReport>(raw.get()) {
                        Ok(r) => (r.assignment_id, Ok(r)),
                        Err(e) => {
                            let id = serde_json::from_str::<Id>(raw.get())
                                .ok()
                                .and_then(|x| x.assignment_id)
                                .unwrap_or(0);
                            (id, Err(ApiError::field(&format!("[{i}]"), e.to_string())))
                        }
                    },
                )
                .collect(),
        ))
    }
}

/// Whether a request says its body is JSON (`application/json` or `application/…+json`), as
/// axum's `Json` asks.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(v) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for Reports {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), r.body_text()))?;
        Self::parse(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_decoded_item_by_item_and_capped() {
        // One report.
        let one = br#"{"assignment_id": 7, "error": "boom"}"#;
        assert!(matches!(Reports::parse(one), Ok(Reports::One(r)) if r.assignment_id == 7));
        // An array: a bad item is its own error, named by position, with its id if it has one.
        let many = br#" [{"assignment_id": 1, "error": "x"}, {"assignment_id": 2, "nope": 1}, 3,
            {"assignment_id": [[0, 0], {"a": 1}]}]"#;
        let Ok(Reports::Many(items)) = Reports::parse(many) else {
            panic!("an array");
        };
        assert_eq!(items.len(), 4);
        assert!(matches!(&items[3], (0, Err(_))));
        assert!(matches!(&items[0], (1, Ok(_))));
        assert!(matches!(&items[1], (2, Err(e)) if e.body.field.as_deref() == Some("[1]")));
        assert!(matches!(&items[2], (0, Err(e)) if e.body.field.as_deref() == Some("[2]")));
        // 257 items (even zeros, which are no reports at all) are refused as a whole, naming
        // `reports`; 256 are decoded.
        let zeros = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        let e = Reports::parse(zeros(257).as_bytes())
            .err()
            .expect("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field.as_deref(), Some("reports"));
        assert!(
            matches!(Reports::parse(zeros(256).as_bytes()), Ok(Reports::Many(v)) if v.len() == 256)
        );
        // Not JSON: a plain 400.
        let e = Reports::parse(b"[{").err().expect("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field, None);
    }
}
