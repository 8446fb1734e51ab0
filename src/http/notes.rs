//! `/housing/notes`: care coordination notes — send, follow the thread, list the open
//! ones, and (for operators) see and replay dead letters.

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{AuditDraft, Audited, Failure};
use super::extract::JsonBody;
use super::{AppState, deliveries, housing_only};
use crate::audit::Direction;
use crate::error::Error;
use crate::gateway::Call;
use crate::gateway::notes::{NoteRequest, unix_ms};
use crate::ids::{ReferenceId, TenantId};
use crate::store::NoteThread;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/housing/notes", post(send).get(list))
        .route("/housing/notes/dead-letters", get(dead_letters))
        .route("/housing/notes/{reference}", get(thread))
        .route("/housing/notes/{reference}/replay", post(replay))
}

/// A thread as housing sees it: with whether its deadline has passed unanswered.
fn view(state: &AppState, t: &NoteThread) -> Value {
    let deadline = t.note["deadline"]
        .as_str()
        .and_then(|d| crate::consent::parse_fhir_instant(d, true));
    let open = t.responses.is_empty() && !matches!(t.delivery.state.as_str(), "stopped" | "dead");
    let overdue = open && deadline.is_some_and(|d| state.gateway.now() >= d);
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    v["open"] = json!(open);
    v["overdue"] = json!(overdue);
    v
}

async fn send(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("queue-note", Direction::Outbound);
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    audit.payload_digest = Some(body.digest.clone());
    housing_only(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let req: NoteRequest = super::extract::body_as(body.value, "a care coordination note")
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let note = state
        .gateway
        .queue_note(&call, req, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    state.relay.wake();
    let reference = call.reference_id.to_string();
    let mut response = (
        StatusCode::CREATED,
        axum::Json(json!({"reference_id": reference, "note": note, "delivery": {"state": "pending", "attempts": 0}})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/housing/notes/{reference}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.extensions_mut().insert(Audited);
    Ok(response)
}

async fn thread(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(reference): Path<String>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read-note", Direction::Internal);
    housing_only(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let not_found = || Error::NotFound(format!("no note {reference}"));
    let id: ReferenceId = reference
        .parse()
        .map_err(|_| Failure::new(not_found(), audit.clone()))?;
    let mut t = state
        .gateway
        .store
        .note_thread(&id)
        .await
        .map_err(|e| Failure::new(e.into(), audit.clone()))?
        .ok_or_else(|| Failure::new(not_found(), audit.clone()))?;
    audit.tenant = Some(t.tenant.clone());
    audit.related = Some(id);
    state
        .gateway
        .notes_for_housing(&call, std::slice::from_mut(&mut t))
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let mut response = axum::Json(view(&state, &t)).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
    open: Option<bool>,
}

async fn list(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("list-notes", Direction::Internal);
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    housing_only(&call).map_err(|e| fail(e, &audit))?;
    let q = super::extract::query(query).map_err(|e| fail(e, &audit))?;
    let tenant = q.tenant.map(TenantId::new);
    audit.tenant = tenant.clone();
    let mut threads = state
        .gateway
        .store
        .note_threads(tenant.as_ref())
        .await
        .map_err(|e| fail(e.into(), &audit))?;
    state
        .gateway
        .notes_for_housing(&call, &mut threads)
        .await
        .map_err(|e| fail(e, &audit))?;
    let notes: Vec<Value> = threads
        .iter()
        .map(|t| view(&state, t))
        .filter(|v| !q.open.unwrap_or(false) || v["open"] == true)
        .collect();
    audit.count = Some(notes.len());
    let mut response = axum::Json(json!({"notes": notes})).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

async fn dead_letters(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("list-dead-letters", Direction::Internal);
    deliveries(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let mut threads = state
        .gateway
        .store
        .dead_letters()
        .await
        .map_err(|e| Failure::new(e.into(), audit.clone()))?;
    audit.count = Some(threads.len());
    let notes: Vec<Value> = if call.principal.role == crate::auth::Role::Housing {
        state
            .gateway
            .notes_for_housing(&call, &mut threads)
            .await
            .map_err(|e| Failure::new(e, audit.clone()))?;
        threads.iter().map(|t| view(&state, t)).collect()
    } else {
        // The operator: where and why each delivery failed, not what the note says.
        threads
            .iter()
            .map(|t| {
                json!({"reference_id": t.reference_id, "partner": t.partner,
                       "created_at": t.created_at, "delivery": t.delivery})
            })
            .collect()
    };
    let mut response = axum::Json(json!({"notes": notes})).into_response();
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

/// Puts a dead-lettered note back in the queue, with a fresh deadline.
async fn replay(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(reference): Path<String>,
) -> Result<Response, Failure> {
    let audit = call.audit("replay-dead-letter", Direction::Internal);
    deliveries(&call).map_err(|e| Failure::new(e, audit.clone()))?;
    let id: ReferenceId = reference.parse().map_err(|_| {
        Failure::new(
            Error::NotFound(format!("no note {reference}")),
            audit.clone(),
        )
    })?;
    let g = &state.gateway;
    let now = unix_ms(g.now());
    let give_up = g.config.relay.give_up_ms(now);
    let replayed = g
        .store
        .replay_dead_letter(&id, now, give_up, crate::relay::replay_audit(&call, id))
        .await
        .map_err(|e| Failure::new(e.into(), audit.clone()))?;
    if !replayed {
        let known = g
            .store
            .note_thread(&id)
            .await
            .map_err(|e| Failure::new(e.into(), audit.clone()))?;
        let error = match known {
            None => Error::NotFound(format!("no note {reference}")),
            Some(_) => Error::Conflict(format!("note {reference} is not dead-lettered")),
        };
        return Err(Failure::new(error, audit));
    }
    state.relay.wake();
    let mut response =
        axum::Json(json!({"reference_id": reference, "delivery": {"state": "pending"}}))
            .into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}
