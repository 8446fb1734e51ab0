//! `/audit`: read and verify the trail (auditor and admin roles).

use axum::Router;
use axum::extract::Path;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::{AuditDraft, Audited, Failure};
use super::extract::JsonBody;
use crate::audit::Direction;
use crate::auth::Role;
use crate::error::Error;
use crate::gateway::Call;
use crate::store::AuditQuery;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/audit/records", get(records))
        .route("/audit/verify", get(verify))
        .route("/audit/break-glass", get(break_glass))
        .route(
            "/audit/break-glass/{reference}/review",
            post(review_break_glass),
        )
}

fn auditors_only(call: &Call) -> Result<(), Error> {
    call.require(&[Role::Auditor, Role::Admin], "the audit trail")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    reference_id: Option<String>,
    tenant: Option<String>,
    related_to: Option<String>,
}

async fn records(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-audit", Direction::Internal);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    auditors_only(&call).map_err(|e| fail(e, &audit))?;
    let q = super::extract::query(query).map_err(|e| fail(e, &audit))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(fail(
            Error::malformed_at("`limit` must be between 1 and 1000", "limit"),
            &audit,
        ));
    }
    // A reference ID is a ULID: anything else could match nothing, and an empty page
    // would read as "no such records".
    for (name, value) in [
        ("reference_id", &q.reference_id),
        ("related_to", &q.related_to),
    ] {
        if value
            .as_deref()
            .is_some_and(|v| v.parse::<crate::ids::ReferenceId>().is_err())
        {
            return Err(fail(
                Error::malformed_at(format!("`{name}` must be a reference ID (a ULID)"), name),
                &audit,
            ));
        }
    }
    if q.tenant.as_deref().is_some_and(str::is_empty) {
        return Err(fail(
            Error::malformed_at("`tenant` must name a tenant", "tenant"),
            &audit,
        ));
    }
    let rows = state
        .gateway
        .store
        .query(AuditQuery {
            after_seq: q.after.unwrap_or(0),
            limit,
            reference_id: q.reference_id,
            tenant: q.tenant,
            related_to: q.related_to,
        })
        .await
        .map_err(|e| fail(e.into(), &audit))?;
    audit.count = Some(rows.len());
    let next = rows.last().map(|r| r.seq);
    let mut response = axum::Json(json!({"records": rows, "next": next})).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    anchor: Option<String>,
}

async fn verify(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("verify-audit", Direction::Internal);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    auditors_only(&call).map_err(|e| fail(e, &audit))?;
    let q = super::extract::query(query).map_err(|e| fail(e, &audit))?;
    let anchor = q
        .anchor
        .map(|a| crate::audit::parse_anchor(&a).map_err(|m| Error::malformed_at(m, "anchor")))
        .transpose()
        .map_err(|e| fail(e, &audit))?;
    let v = state
        .gateway
        .store
        .verify(anchor)
        .await
        .map_err(|e| fail(e.into(), &audit))?;
    audit.count = Some(v.records as usize);
    let mut response = axum::Json(json!({"ok": v.ok(), "verification": v})).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassQuery {
    /// `true`: only the emergency exchanges no auditor has reviewed yet.
    unreviewed: Option<bool>,
}

/// Emergency exchanges, newest first, with their stated reasons and reviews.
async fn break_glass(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    query: Result<Query<BreakGlassQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-break-glass", Direction::Internal);
    // The stated reasons are free text about a tenant's situation: the auditor's, not
    // the operator's.
    call.require(&[Role::Auditor], "emergency exchanges and their reasons")
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let q = super::extract::query(query).map_err(|e| Failure::new(e, audit.clone()))?;
    let mut list = state
        .gateway
        .store
        .break_glass_records()
        .await
        .map_err(|e| Failure::new(e.into(), audit.clone()))?;
    if q.unreviewed == Some(true) {
        list.retain(|r| r.review.is_none());
    }
    audit.count = Some(list.len());
    let mut response = axum::Json(json!({"break_glass": list})).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

/// `POST /audit/break-glass/{reference}/review`: an auditor's finding on one emergency
/// exchange. No free text: what the reviewer concluded, in the chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    outcome: ReviewOutcome,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ReviewOutcome {
    Justified,
    NotJustified,
}

impl ReviewOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Justified => "justified",
            ReviewOutcome::NotJustified => "not-justified",
        }
    }
}

async fn review_break_glass(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(reference): Path<String>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("review-break-glass", Direction::Internal);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    // Reviewing is the auditor's; the operator reads the trail but does not judge it.
    call.require(&[Role::Auditor], "reviewing an emergency exchange")
        .map_err(|e| fail(e, &audit))?;
    let related: crate::ids::ReferenceId = reference.parse().map_err(|_| {
        fail(
            Error::NotFound(format!("no emergency exchange {reference}")),
            &audit,
        )
    })?;
    audit.related = Some(related);
    let body = body.map_err(|e| fail(e, &audit))?;
    let req: ReviewRequest = serde_json::from_value(body.value).map_err(|e| {
        fail(
            Error::Malformed {
                message: format!(
                    "a review is {{\"outcome\": \"justified\" | \"not-justified\"}} ({e})"
                ),
                expression: Some("outcome".into()),
            },
            &audit,
        )
    })?;
    let outcome = req.outcome.as_str();
    // The finding goes in the record of the review made; a refused one records none.
    let mut made = audit.clone();
    made.reason = Some(outcome.to_string());
    made.outcome = crate::audit::Outcome::Accepted;
    made.status = 200;
    let review = crate::store::BreakGlassReview {
        reviewed_at: crate::clock::rfc3339(call.at),
        reviewer: call.principal.id.clone(),
        outcome: outcome.to_string(),
    };
    state
        .gateway
        .store
        .review_break_glass(reference.clone(), review.clone(), made)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => fail(
                Error::NotFound(format!("no emergency exchange {reference}")),
                &audit,
            ),
            e => fail(e.into(), &audit),
        })?;
    let mut response =
        axum::Json(json!({"reference_id": reference, "review": review})).into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}
