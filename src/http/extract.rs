//! Request bodies: content type (415), size (413), JSON (400) — checked in that order,
//! before any handler logic runs.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::Value;

use super::AppState;
use crate::error::Error;

/// A JSON object body with the digest of its canonical form.
pub struct JsonBody {
    pub value: Value,
    pub digest: String,
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.gateway.config.body_limit_bytes;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut parts = content_type.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != "application/fhir+json" && essence != "application/json" {
            return Err(Error::UnsupportedMediaType);
        }
        // JSON is UTF-8; a body declared in another charset would only fail to parse,
        // with a less useful message.
        let other_charset = parts.filter_map(|p| p.split_once('=')).any(|(k, v)| {
            k.trim().eq_ignore_ascii_case("charset")
                && !matches!(
                    v.trim().trim_matches('"').to_ascii_lowercase().as_str(),
                    "utf-8" | "utf8"
                )
        });
        if other_charset {
            return Err(Error::UnsupportedMediaType);
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(Error::PayloadTooLarge(limit));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| Error::PayloadTooLarge(limit))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            // serde's message names a position, never the content.
            Error::malformed(format!("the body is not valid JSON ({e})"))
        })?;
        if !value.is_object() {
            return Err(Error::malformed("the body must be a JSON object"));
        }
        let canonical = serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Self {
            digest: crate::audit::digest(&canonical),
            value,
        })
    }
}

/// A query string, or a 400 naming what is wrong with it.
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Error> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| Error::malformed(format!("bad query: {}", e.body_text())))
}
