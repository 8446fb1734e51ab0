//! Errors become responses here, and only here: status, OperationOutcome, headers.
//!
//! Handlers return [`Failure`] (an [`Error`] plus the audit draft built so far). Its
//! `IntoResponse` does not render a body itself: it parks the error in the response's
//! extensions, and the envelope middleware — which knows the reference ID — writes the
//! audit record and renders the OperationOutcome.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audit::AuditEntry;
use crate::error::Error;
use crate::fhir::{Issue, IssueCode, outcome};

/// An error waiting to be rendered by the envelope.
#[derive(Clone)]
pub struct PendingError(pub std::sync::Arc<Error>);

/// The audit draft of a request whose handler did not write its own record.
#[derive(Clone)]
pub struct AuditDraft(pub AuditEntry);

/// Marks a response whose audit record was written with its data.
#[derive(Clone, Copy)]
pub struct Audited;

/// An error with what the audit should remember about it.
pub struct Failure {
    pub error: Error,
    pub audit: Option<AuditEntry>,
}

impl Failure {
    pub fn new(error: Error, audit: AuditEntry) -> Self {
        Self {
            error,
            audit: Some(audit),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, audit: None }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = status_of(&self.error).into_response();
        if let Some(a) = self.audit {
            response.extensions_mut().insert(AuditDraft(a));
        }
        response
            .extensions_mut()
            .insert(PendingError(std::sync::Arc::new(self.error)));
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Failure::from(self).into_response()
    }
}

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Unauthenticated => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        Error::Malformed { .. } => StatusCode::BAD_REQUEST,
        Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::PreconditionFailed(_) | Error::MultipleMatches(_) => StatusCode::PRECONDITION_FAILED,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The issues a client sees for an error. Internal causes are never shown.
pub fn issues_of(e: &Error) -> Vec<Issue> {
    let one = |code, msg: String| vec![Issue::error(code, msg)];
    match e {
        Error::Invalid(issues) => issues.clone(),
        Error::Malformed { message, expression } => {
            let mut i = Issue::error(IssueCode::Structure, message.clone());
            if let Some(x) = expression {
                i = i.at(x.clone());
            }
            vec![i]
        }
        Error::Unauthenticated => one(IssueCode::Login, e.to_string()),
        Error::Forbidden(_) => one(IssueCode::Forbidden, e.to_string()),
        Error::NotFound(_) => one(IssueCode::NotFound, e.to_string()),
        Error::MethodNotAllowed { .. } | Error::UnsupportedMediaType | Error::NotAcceptable => {
            one(IssueCode::NotSupported, e.to_string())
        }
        Error::PayloadTooLarge(_) => one(IssueCode::TooLong, e.to_string()),
        Error::RequestTimeout(_) => one(IssueCode::Timeout, e.to_string()),
        // An edit conflict (R4 `conflict`), or criteria that are not specific enough.
        Error::PreconditionFailed(_) => one(IssueCode::Conflict, e.to_string()),
        Error::MultipleMatches(_) => one(IssueCode::MultipleMatches, e.to_string()),
        Error::Conflict(_) => one(IssueCode::Conflict, e.to_string()),
        Error::Internal(_) => one(
            IssueCode::Exception,
            "Hearth could not complete this request; nothing was stored. Quote the reference ID when reporting it".into(),
        ),
    }
}

/// Renders a parked error as an OperationOutcome body, keeping status and headers.
pub fn render(e: &Error, reference_id: &str, response: Response) -> Response {
    let body = outcome::operation_outcome(reference_id, &issues_of(e));
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::fhir::FHIR_JSON),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    match e {
        Error::Unauthenticated => {
            parts
                .headers
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Error::MethodNotAllowed {
            allow: Some(allow), ..
        } => {
            parts
                .headers
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        _ => {}
    }
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// A JSON body served as `application/fhir+json`.
pub fn fhir_json(body: impl serde::Serialize) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::fhir::FHIR_JSON),
        )],
        axum::Json(body),
    )
        .into_response()
}
