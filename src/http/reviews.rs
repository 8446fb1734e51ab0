//! `/housing/reviews`: joint case reviews and the high-risk register. Review members of
//! the tenant's team and auditors only; anyone else gets 403, audited.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::AppState;
use super::error::{AuditDraft, Audited, Failure};
use super::extract::JsonBody;
use crate::audit::Direction;
use crate::error::Error;
use crate::gateway::Call;
use crate::gateway::reviews::Review;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/housing/reviews", post(record))
        .route("/housing/reviews/due", get(due))
        .route("/housing/reviews/{id}", get(read))
}

async fn record(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("record-review", Direction::Internal);
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    audit.payload_digest = Some(body.digest.clone());
    let review: Review = super::extract::body_as(body.value, "a joint case review")
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let stored = state
        .gateway
        .record_review(&call, review, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let mut response = (
        StatusCode::CREATED,
        axum::Json(json!({"id": stored.id, "review": stored.review, "fhir": stored.careplan})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/housing/reviews/{}", stored.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.extensions_mut().insert(Audited);
    Ok(response)
}

async fn read(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-review", Direction::Internal);
    audit.resource_type = Some("CarePlan".into());
    let review = state
        .gateway
        .store
        .review(&id)
        .await
        .map_err(|e| Failure::new(e.into(), audit.clone()))?
        .ok_or_else(|| Failure::new(Error::NotFound(format!("no review {id}")), audit.clone()))?;
    audit.tenant = Some(review.review.tenant_id.clone());
    let review = state
        .gateway
        .read_review(&call, review, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let mut response =
        axum::Json(json!({"id": review.id, "review": review.review, "fhir": review.careplan}))
            .into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

async fn due(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-review-register", Direction::Internal);
    if !matches!(
        call.principal.role,
        crate::auth::Role::ReviewMember | crate::auth::Role::Auditor
    ) {
        return Err(Failure::new(
            Error::Forbidden("the high-risk register is for review members".into()),
            audit,
        ));
    }
    let due = state
        .gateway
        .reviews_due(&call)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    audit.count = Some(due.len());
    // The list names tenants: "who read what about this tenant" finds it.
    audit.tenants_read = due
        .iter()
        .filter_map(|d| d["tenant_id"].as_str())
        .map(crate::ids::TenantId::new)
        .collect();
    let mut response = axum::Json(json!({"due": due})).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}
