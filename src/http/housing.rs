//! `/housing`: the housing JSON API — register tenants, poll the updates feed, view a
//! tenant's current dataset. All of it needs the housing (or admin) role.

use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
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
use crate::gateway::{Call, tenant_view};
use crate::ids::TenantId;
use crate::tenancy::TenantRegistration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/housing/tenants", post(register))
        .route("/housing/tenants/{id}", get(tenant))
        .route("/housing/updates", get(updates))
}

fn housing_only(call: &Call) -> Result<(), Error> {
    if matches!(call.principal.role, Role::Housing | Role::Admin) {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "the housing API needs the housing role".into(),
        ))
    }
}

async fn register(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("register-tenant", Direction::Internal);
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    let reg: TenantRegistration = serde_json::from_value(body.value).map_err(|e| {
        Failure::new(
            Error::malformed(format!("not a tenant registration: {e}")),
            audit.clone(),
        )
    })?;
    let tenant = reg.tenant_id.clone();
    let created = state
        .gateway
        .register_tenant(&call, reg, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let identifiers = state
        .gateway
        .store
        .tenant_identifiers(&tenant)
        .await
        .map_err(|e| Failure::from(Error::from(e)))?;
    let status = if created {
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
    let store = &state.gateway.store;
    let fail = |e: crate::store::StoreError, a: &crate::audit::AuditEntry| {
        Failure::new(e.into(), a.clone())
    };
    if !store
        .tenant_exists(&tenant)
        .await
        .map_err(|e| fail(e, &audit))?
    {
        return Err(Failure::new(
            Error::NotFound(format!("no tenant {tenant}")),
            audit,
        ));
    }
    let identifiers = store
        .tenant_identifiers(&tenant)
        .await
        .map_err(|e| fail(e, &audit))?;
    let items = store
        .tenant_items(&tenant)
        .await
        .map_err(|e| fail(e, &audit))?;
    audit.count = Some(items.len());
    let mut response = axum::Json(tenant_view(&tenant, &identifiers, items)).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
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
                Error::malformed(format!("`{name}` must be a non-negative whole number"))
            })
        })
        .transpose()
}

/// Longest long-poll a caller may ask for.
const MAX_WAIT_SECONDS: u64 = 60;

async fn updates(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-feed", Direction::Outbound);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    housing_only(&call).map_err(|e| fail(e, &audit))?;
    let Query(q) = query.map_err(|e| {
        fail(
            Error::malformed(format!("bad query: {}", e.body_text())),
            &audit,
        )
    })?;
    let feed = &state.gateway.config.feed;
    let since = number(q.since.as_deref(), "since")
        .map_err(|e| fail(e, &audit))?
        .unwrap_or(0);
    let limit = number(q.limit.as_deref(), "limit")
        .map_err(|e| fail(e, &audit))?
        .unwrap_or(feed.default_page as u64);
    if limit == 0 || limit > feed.max_page as u64 {
        return Err(fail(
            Error::malformed(format!("`limit` must be between 1 and {}", feed.max_page)),
            &audit,
        ));
    }
    let wait = number(q.wait.as_deref(), "wait")
        .map_err(|e| fail(e, &audit))?
        .unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(fail(
            Error::malformed(format!("`wait` is at most {MAX_WAIT_SECONDS} seconds")),
            &audit,
        ));
    }

    // Subscribe before reading, so a write between the read and the wait is not missed.
    let mut changed = state.feed_changed.subscribe();
    let store = &state.gateway.store;
    let mut entries = store
        .feed(since, limit as usize)
        .await
        .map_err(|e| fail(e.into(), &audit))?;
    if entries.is_empty() && wait > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(wait), changed.changed()).await;
        entries = store
            .feed(since, limit as usize)
            .await
            .map_err(|e| fail(e.into(), &audit))?;
    }
    let next = entries.last().map_or(since, |e| e.seq);
    audit.count = Some(entries.len());
    let mut response = axum::Json(json!({
        "entries": entries,
        "next": next.to_string(),
        "more": entries.len() as u64 == limit,
    }))
    .into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}
