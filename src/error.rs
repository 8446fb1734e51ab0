//! The one error type of Hearth's operations. Each variant says what went wrong in terms
//! a caller can act on; `http::error` turns it into a status and an OperationOutcome in
//! one place.

use crate::fhir::Issue;
use crate::store::StoreError;

/// What a partner is told when the subject is unknown *or* no consent covers them: the
/// two must look the same, or a partner could probe who is a housing tenant.
pub const NO_AGREEMENT: &str = "no sharing agreement covers this subject for your organisation; ask the housing provider to record the tenant's consent";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// Role or consent refusal (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// 405: the route has no such method, or (R4 update) the resource does not exist and
    /// Hearth does not create resources under ids the client chose. `allow` is the
    /// `Allow` header's list; the router sets it itself for a method no route has.
    #[error("{message}")]
    MethodNotAllowed {
        message: String,
        allow: Option<&'static str>,
    },
    #[error("the body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    /// The body did not arrive within `body_read_timeout_ms` (408).
    #[error("the body did not arrive within {0} ms; send it again")]
    RequestTimeout(u64),
    #[error("send application/fhir+json or application/json (UTF-8)")]
    UnsupportedMediaType,
    /// A response format Hearth does not serve (`_format=xml`), 406.
    #[error("Hearth answers in JSON (application/fhir+json) only")]
    NotAcceptable,
    /// Not parseable, or not a resource of the expected type (400).
    #[error("{message}")]
    Malformed {
        message: String,
        expression: Option<String>,
    },
    /// Profile or business-rule failures (422), one issue each.
    #[error("the resource is not acceptable")]
    Invalid(Vec<Issue>),
    /// A version precondition (`If-Match`) that no longer holds (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Conditional-create criteria (`If-None-Exist`) matching more than one resource (412).
    #[error("{0}")]
    MultipleMatches(String),
    #[error("{0}")]
    Conflict(String),
    /// A failure inside Hearth: logged with the reference ID, shown generically.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn malformed(message: impl Into<String>) -> Self {
        Error::Malformed {
            message: message.into(),
            expression: None,
        }
    }

    /// A 400 about one query parameter, header or field: `expression` names it.
    pub fn malformed_at(message: impl Into<String>, expression: impl Into<String>) -> Self {
        Error::Malformed {
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    /// The reason code recorded in the audit log.
    pub fn audit_reason(&self) -> &'static str {
        match self {
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not-found",
            Error::MethodNotAllowed { .. } => "method-not-allowed",
            Error::PayloadTooLarge(_) => "payload-too-large",
            Error::RequestTimeout(_) => "request-timeout",
            Error::UnsupportedMediaType => "unsupported-media-type",
            Error::NotAcceptable => "not-acceptable",
            Error::Malformed { .. } => "malformed",
            Error::Invalid(_) => "invalid",
            Error::PreconditionFailed(_) => "precondition-failed",
            Error::MultipleMatches(_) => "multiple-matches",
            Error::Conflict(_) => "conflict",
            Error::Internal(_) => "internal-error",
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::NotFound => Error::NotFound("not found".into()),
            StoreError::Internal(m) => Error::Internal(m),
        }
    }
}
