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
        // A client that sends its headers and then trickles the body would hold the
        // request for as long as it liked.
        let deadline = state.gateway.config.body_read_timeout_ms;
        let bytes = tokio::time::timeout(
            std::time::Duration::from_millis(deadline),
            axum::body::to_bytes(req.into_body(), limit),
        )
        .await
        .map_err(|_| Error::RequestTimeout(deadline))?
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

/// A housing request body as `T`, or a 400 whose `expression` names the field at fault:
/// serde's path to a value of the wrong type or a field not known, and to a missing
/// field's parent, with the field's name from serde's message added.
pub fn body_as<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = format!("not {what}: {}", e.inner());
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let field = field_named(&inner, &["missing field `"]);
        let expression = match (path.as_str(), field) {
            (".", None) => return Error::malformed(message),
            (".", Some(f)) => f.to_string(),
            (p, None) => p.to_string(),
            (p, Some(f)) => format!("{p}.{f}"),
        };
        Error::malformed_at(message, expression)
    })
}

/// The field serde's `message` names after one of `prefixes`: "missing field `reason`",
/// "unknown field `cursor`, expected …".
fn field_named<'a>(message: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes
        .iter()
        .find_map(|p| message.split_once(p))
        .and_then(|(_, rest)| rest.split('`').next())
}

/// A query string, or a 400 naming what is wrong with it: the parameter that is missing,
/// not known or not readable, when serde's message names it.
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Error> {
    q.map(|axum::extract::Query(v)| v).map_err(|e| {
        let text = e.body_text();
        let message = format!("bad query: {text}");
        match field_named(&text, &["missing field `", "unknown field `"]) {
            Some(name) => Error::malformed_at(message, name),
            None => Error::malformed(message),
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Form {
        tenant_id: String,
        #[serde(default)]
        facts: Vec<Fact>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Fact {
        item_id: String,
    }

    fn expression(body: serde_json::Value) -> Option<String> {
        match body_as::<Form>(body, "a form") {
            Err(Error::Malformed { expression, .. }) => expression,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn a_bad_body_names_the_field_at_fault() {
        assert_eq!(expression(json!({})).as_deref(), Some("tenant_id"));
        assert_eq!(
            expression(json!({"tenant_id": 7})).as_deref(),
            Some("tenant_id")
        );
        assert_eq!(
            expression(json!({"tenant_id": "T-1", "colour": "red"})).as_deref(),
            Some("colour")
        );
        assert_eq!(
            expression(json!({"tenant_id": "T-1", "facts": [{"item_id": "a"}, {}]})).as_deref(),
            Some("facts[1].item_id")
        );
        assert_eq!(
            expression(json!({"tenant_id": "T-1", "facts": "none"})).as_deref(),
            Some("facts")
        );
        assert_eq!(
            expression(json!({"tenant_id": "T-1", "facts": [{"item_id": 3}]})).as_deref(),
            Some("facts[0].item_id")
        );
    }
}
