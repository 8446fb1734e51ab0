//! `/housing`: the housing JSON API — register tenants, poll the updates feed, view a
//! tenant's current dataset, its disclosures and a sharing preview, request a consent
//! renewal, and record, list, revoke and confirm consents. Notes and reviews have their
//! own modules. All of it needs the housing (or admin) role.

use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::error::{AuditDraft, Audited, Failure};
use super::extract::JsonBody;
use super::{AppState, housing_only};
use crate::audit::Direction;
use crate::error::Error;
use crate::gateway::Call;
use crate::ids::TenantId;
use crate::tenancy::TenantRegistration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/housing/tenants", post(register))
        .route("/housing/tenants/{id}", get(tenant))
        .route("/housing/tenants/{id}/disclosures", get(disclosures))
        .route("/housing/tenants/{id}/preview", get(preview))
        .route(
            "/housing/tenants/{id}/renewal-request",
            post(renewal_request),
        )
        .route("/housing/updates", get(updates))
        .route("/housing/consents", post(record_consent).get(list_consents))
        .route("/housing/consents/due", get(consents_due))
        .route("/housing/consents/{id}/revoke", post(revoke_consent))
        .route("/housing/consents/{id}/confirm", post(confirm_consent))
}

async fn register(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("register-tenant", Direction::Internal);
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    let reg: TenantRegistration = super::extract::body_as(body.value, "a tenant registration")
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let tenant = reg.tenant_id.clone();
    let registered = state
        .gateway
        .register_tenant(&call, reg, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let identifiers = registered.identifiers;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        axum::Json(json!({"tenant_id": tenant, "identifiers": identifiers})),
    )
        .into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}

async fn tenant(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-tenant", Direction::Outbound);
    housing_only(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let tenant = TenantId::new(id);
    audit.tenant = Some(tenant.clone());
    let view = state
        .gateway
        .tenant_view(&call, &tenant, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    Ok(with_draft(axum::Json(view).into_response(), audit))
}

fn with_draft(mut response: Response, audit: crate::audit::AuditEntry) -> Response {
    response.extensions_mut().insert(AuditDraft(audit));
    response
}

fn with_audited(mut response: Response) -> Response {
    response.extensions_mut().insert(Audited);
    response
}

async fn disclosures(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-disclosures", Direction::Outbound);
    housing_only(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let tenant = TenantId::new(id);
    audit.tenant = Some(tenant.clone());
    let list = state
        .gateway
        .disclosures(&tenant)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    audit.count = Some(list.len());
    Ok(with_draft(
        axum::Json(json!({"tenant_id": tenant, "disclosures": list})).into_response(),
        audit,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    partner: String,
}

async fn preview(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
    query: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("preview", Direction::Internal);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    housing_only(&call).map_err(|e| fail(e, &audit))?;
    let q = super::extract::query(query).map_err(|e| fail(e, &audit))?;
    let tenant = TenantId::new(id);
    audit.tenant = Some(tenant.clone());
    audit.partner = Some(crate::ids::PartnerId::new(q.partner.clone()));
    let view = state
        .gateway
        .preview(
            &call,
            &tenant,
            &crate::ids::PartnerId::new(q.partner),
            &mut audit,
        )
        .await
        .map_err(|e| fail(e, &audit))?;
    Ok(with_draft(axum::Json(view).into_response(), audit))
}

async fn renewal_request(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("renewal-request", Direction::Internal);
    let tenant = TenantId::new(id);
    let (marked, due) = state
        .gateway
        .request_renewal(&call, &tenant, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    Ok(with_audited(
        axum::Json(json!({"tenant_id": tenant, "newly_marked": marked, "renewal_due": due}))
            .into_response(),
    ))
}

async fn record_consent(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("record-consent", Direction::Internal);
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    audit.payload_digest = Some(body.digest.clone());
    let form: crate::consent::form::ConsentForm =
        super::extract::body_as(body.value, "a consent form")
            .map_err(|e| Failure::new(e, audit.clone()))?;
    let stored = state
        .gateway
        .record_consent_form(&call, form, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let summary = state.gateway.summary(&stored, true);
    Ok(with_audited(
        (
            StatusCode::CREATED,
            axum::Json(json!({"consent": summary, "fhir": stored.resource})),
        )
            .into_response(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentListQuery {
    tenant: String,
}

async fn list_consents(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    query: Result<Query<ConsentListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("list-consents", Direction::Internal);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    housing_only(&call).map_err(|e| fail(e, &audit))?;
    let q = super::extract::query(query).map_err(|e| fail(e, &audit))?;
    let tenant = TenantId::new(q.tenant);
    audit.tenant = Some(tenant.clone());
    let list = state
        .gateway
        .consent_summaries(&tenant)
        .await
        .map_err(|e| fail(e, &audit))?;
    audit.count = Some(list.len());
    let due = state
        .gateway
        .store
        .renewal_due(&tenant)
        .await
        .map_err(|e| fail(e.into(), &audit))?;
    Ok(with_draft(
        axum::Json(json!({"tenant_id": tenant, "renewal_due": due, "consents": list}))
            .into_response(),
        audit,
    ))
}

async fn consents_due(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("list-renewals-due", Direction::Internal);
    housing_only(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let due = state
        .gateway
        .consents_due(call.at)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    audit.count = Some(due.len());
    // The list names tenants: "who read what about this tenant" finds it.
    audit.tenants_read = due.iter().map(|d| d.tenant_id.clone()).collect();
    Ok(with_draft(
        axum::Json(json!({"due": due})).into_response(),
        audit,
    ))
}

async fn revoke_consent(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("revoke-consent", Direction::Internal);
    let stored = state
        .gateway
        .revoke_consent(&call, &id, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    Ok(with_audited(
        axum::Json(json!({"consent": state.gateway.summary(&stored, true)})).into_response(),
    ))
}

async fn confirm_consent(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("confirm-consent", Direction::Internal);
    let stored = state
        .gateway
        .confirm_consent(&call, &id, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    Ok(with_audited(
        axum::Json(json!({"consent": state.gateway.summary(&stored, true)})).into_response(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    since: Option<String>,
    limit: Option<String>,
    /// Long-poll: wait up to this many seconds for something new when the page is empty.
    wait: Option<String>,
}

fn number(value: Option<&str>, name: &str) -> Result<Option<u64>, Error> {
    value
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                Error::malformed_at(
                    format!("`{name}` must be a non-negative whole number"),
                    name,
                )
            })
        })
        .transpose()
}

/// Longest long-poll a caller may ask for.
const MAX_WAIT_SECONDS: u64 = 60;

async fn updates(
    State(state): State<AppState>,
    Extension(mut call): Extension<Call>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-feed", Direction::Outbound);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    housing_only(&call).map_err(|e| fail(e, &audit))?;
    let q = super::extract::query(query).map_err(|e| fail(e, &audit))?;
    let feed = &state.gateway.config.feed;
    let since = number(q.since.as_deref(), "since")
        .map_err(|e| fail(e, &audit))?
        .unwrap_or(0);
    let limit = number(q.limit.as_deref(), "limit")
        .map_err(|e| fail(e, &audit))?
        .unwrap_or(feed.default_page as u64);
    if limit == 0 || limit > feed.max_page as u64 {
        return Err(fail(
            Error::malformed_at(
                format!("`limit` must be between 1 and {}", feed.max_page),
                "limit",
            ),
            &audit,
        ));
    }
    let wait = number(q.wait.as_deref(), "wait")
        .map_err(|e| fail(e, &audit))?
        .unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(fail(
            Error::malformed_at(
                format!("`wait` is at most {MAX_WAIT_SECONDS} seconds"),
                "wait",
            ),
            &audit,
        ));
    }

    // Subscribe before reading, so a write between the read and the wait is not missed.
    let mut changed = state.gateway.store.feed_head();
    let store = &state.gateway.store;
    // A cursor this store never issued (a backup restored under housing's saved cursor,
    // or another store behind the same address) would skip every update numbered up to
    // it, silently: housing is told to start again instead. The watched head can lag a
    // commit by a moment, so the store is asked before refusing.
    if since > *changed.borrow() {
        let newest = store
            .feed_newest()
            .await
            .map_err(|e| fail(e.into(), &audit))?;
        if since > newest {
            return Err(fail(
                Error::malformed_at(
                    format!(
                        "`since` is past the newest update ({newest}): this store never issued that cursor (restored from a backup?); read again from since=0"
                    ),
                    "since",
                ),
                &audit,
            ));
        }
    }
    let mut entries = store
        .feed(since, limit as usize)
        .await
        .map_err(|e| fail(e.into(), &audit))?;
    let mut parked = Duration::ZERO;
    if entries.is_empty() && wait > 0 {
        let _waiting = state.metrics.long_poll();
        let mut stopping = state.stopping.subscribe();
        let since_parked = std::time::Instant::now();
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_secs(wait), changed.changed()) => {}
            // Shutting down: answer now (an empty page) so the drain is not held.
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        parked = since_parked.elapsed();
        // What the page shows is read, decided and recorded as of now, not as of the
        // request: the wait may have been a minute, and the items arrived during it.
        call.at = state.gateway.now();
        audit.recorded = crate::clock::rfc3339(call.at);
        entries = store
            .feed(since, limit as usize)
            .await
            .map_err(|e| fail(e.into(), &audit))?;
    }
    state
        .gateway
        .filter_feed(&call, &mut entries)
        .await
        .map_err(|e| fail(e, &audit))?;
    let next = entries.last().map_or(since, |e| e.seq);
    audit.count = Some(entries.len());
    audit.items_read = entries
        .iter()
        .filter(|e| e.item.is_some())
        .filter_map(|e| e.item_id.clone())
        .collect();
    let mut tenants: Vec<TenantId> = entries.iter().map(|e| e.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    audit.tenants_read = tenants;
    let body = page_json(&entries, next, entries.len() as u64 == limit)
        .map_err(|e| fail(Error::Internal(e.to_string()), &audit))?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    response.extensions_mut().insert(super::Parked(parked));
    Ok(response)
}

/// A feed page: `{"entries": [...], "next": "<cursor>", "more": bool}`, written entry by
/// entry (see [`crate::store::FeedEntry::write_json`]).
fn page_json(
    entries: &[crate::store::FeedEntry],
    next: u64,
    more: bool,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + entries.len() * 2048);
    out.extend_from_slice(b"{\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_json(&mut out)?;
    }
    out.extend_from_slice(format!("],\"next\":\"{next}\",\"more\":{more}}}").as_bytes());
    Ok(out)
}
