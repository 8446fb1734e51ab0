//! The HTTP surface: a thin translation between requests and [`Gateway`] calls.
//!
//! Layout: `fhir` (the FHIR REST API), `housing` (the housing JSON API: tenants, the
//! feed, consents), `notes` (care coordination notes), `reviews` (joint case reviews),
//! `audit` (query and verify), `ops` (health). `error` renders every failure; `extract` reads
//! bodies. The envelope middleware wraps every request: reference ID, authentication,
//! tracing span, audit record for anything a handler did not audit itself, and the
//! `X-Reference-Id` header.
//!
//! Invariant: no business rule lives here; handlers parse, call the gateway, shape the
//! answer.

pub mod audit;
pub mod error;
pub mod extract;
pub mod fhir;
pub mod housing;
pub mod notes;
pub mod ops;
pub mod refusals;
pub mod reviews;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::audit::{AuditEntry, Direction, Outcome};
use crate::auth::{Principal, Principals, Role};
use crate::clock::rfc3339;
use crate::error::Error;
use crate::gateway::{Call, Gateway};
use crate::ids::ReferenceId;
use error::{AuditDraft, Audited, PendingError};

/// Shared state: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub principals: Arc<Principals>,
    /// The outbound relay, woken when a note is queued.
    pub relay: crate::relay::Relay,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set when the server starts shutting down: the relay stops and long-polls return
    /// at once rather than holding the drain for their whole `wait`.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// Which refusals of requests without credentials the audit itemises.
    pub refusals: Arc<refusals::RefusalBudget>,
}

impl AppState {
    pub fn new(
        gateway: Arc<Gateway>,
        principals: Principals,
        relay: crate::relay::Relay,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let refusals = Arc::new(refusals::RefusalBudget::new(
            gateway.config.unauthenticated_audit_per_minute,
        ));
        Self {
            gateway,
            principals: Arc::new(principals),
            relay,
            metrics,
            stopping: tokio::sync::watch::channel(false).0,
            refusals,
        }
    }
}

/// The whole application, ready to serve.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(fhir::router())
        .merge(housing::router())
        .merge(notes::router())
        .merge(reviews::router())
        .merge(audit::router())
        .merge(ops::router())
        .fallback(|| async { Error::NotFound("there is nothing at this path".into()) })
        .method_not_allowed_fallback(|| async {
            Error::MethodNotAllowed {
                message: "this method is not supported here".into(),
                allow: None,
            }
        })
        // Outermost: every request, matched or not, gets a reference ID and an audit record.
        .layer(middleware::from_fn_with_state(state.clone(), envelope))
        .with_state(state)
}

/// The housing API, tenants' information: housing workers only (an operator, `admin`,
/// does not need it).
pub fn housing_only(call: &Call) -> Result<(), Error> {
    call.require(&[crate::auth::Role::Housing], "the housing API")
}

/// Delivery failures (dead letters): housing, and the operator who keeps deliveries
/// going, who sees where and why a note failed but not what it says.
pub fn deliveries(call: &Call) -> Result<(), Error> {
    call.require(
        &[crate::auth::Role::Housing, crate::auth::Role::Admin],
        "delivery failures",
    )
}

/// A request axum itself refused before a handler ran (a path segment that is not
/// UTF-8, say) answers in plain text; it becomes one of Hearth's errors, so every error
/// is an OperationOutcome and is audited with a reason.
fn framework_rejection(response: Response) -> Response {
    let plain_text = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if response.status() == axum::http::StatusCode::BAD_REQUEST
        && plain_text
        && response.extensions().get::<PendingError>().is_none()
    {
        return Error::malformed("the request's path or query could not be read").into_response();
    }
    response
}

/// How long a handler was parked waiting for something to happen (a feed long-poll's
/// `wait`), which the latency histogram leaves out: it measures Hearth's time to answer,
/// and a quiet feed would otherwise read as a slow one.
#[derive(Clone, Copy)]
pub struct Parked(pub std::time::Duration);

/// Paths anyone may call without credentials (and which are not audited).
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/fhir/metadata"
    )
}

/// An emergency exchange is asked for with `X-Purpose-Of-Use: BTG` (or `ETREAT`) and a
/// non-empty `X-Break-Glass-Reason`. Either without the other is refused outright.
fn break_glass(req: &Request) -> Result<Option<crate::consent::BreakGlass>, Error> {
    // A header that cannot be read is refused: read as absent, an emergency reason
    // would be dropped and the request go ahead as routine.
    let header = |name: &'static str| match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|v| Some(v.trim()).filter(|v| !v.is_empty()))
            .map_err(|_| Error::malformed(format!("{name} must be ASCII text"))),
    };
    let emergency =
        |p: &str| crate::consent::EMERGENCY_PURPOSES.contains(&p.to_ascii_uppercase().as_str());
    match (header("x-purpose-of-use")?, header("x-break-glass-reason")?) {
        (None, None) => Ok(None),
        (Some(p), None) if p.eq_ignore_ascii_case(crate::gateway::CARE_COORDINATION) => Ok(None),
        (Some(p), Some(reason)) if emergency(p) => Ok(Some(crate::consent::BreakGlass {
            purpose: p.to_ascii_uppercase(),
            reason: reason.to_string(),
        })),
        (Some(p), None) if emergency(p) => Err(Error::malformed(
            "an emergency exchange needs X-Break-Glass-Reason stating why",
        )),
        // A reason with any other purpose would be dropped unread: say so instead.
        (_, Some(_)) => Err(Error::malformed(
            "X-Break-Glass-Reason needs X-Purpose-Of-Use: BTG or ETREAT",
        )),
        (Some(_), None) => Err(Error::malformed(
            "X-Purpose-Of-Use must be COC (care coordination), BTG or ETREAT",
        )),
    }
}

/// The path as logs and audit records carry it. A segment the caller chose is kept only
/// when it is an identifier Hearth issued (a ULID: reference, consent and review IDs) or,
/// from housing itself (`tenant_ids`), a tenant ID; anything else shows as its place in
/// the route. A record number probed at `/fhir/Patient/…` would otherwise be logged, and
/// written into the audit chain for good.
fn logged_path(path: &str, route: &str, tenant_ids: bool) -> String {
    if route == "unmatched" {
        return "(unmatched)".into();
    }
    let tenant_route = route.starts_with("/housing/tenants/{id}");
    let mut out = Vec::new();
    for (template, given) in route.split('/').zip(path.split('/')) {
        let keep = match template {
            "{id}" if tenant_route => {
                tenant_ids
                    && !given.is_empty()
                    && given.len() <= 64
                    && given
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }
            // A resource type Hearth does not serve, and the rest of such a path.
            "{type}" => false,
            t if t.starts_with("{*") => false,
            t if t.starts_with('{') => given.parse::<ReferenceId>().is_ok(),
            _ => true,
        };
        out.push(if keep { given } else { template });
        if template.starts_with("{*") {
            break;
        }
    }
    out.join("/")
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn envelope(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let reference_id = ReferenceId::new();
    let at = state.gateway.now();
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let public = is_public(&path);
    let principal: Option<Principal> = bearer(&req)
        .and_then(|t| state.principals.authenticate(t))
        .cloned();
    let from_housing = principal.as_ref().is_some_and(|p| p.role == Role::Housing);
    let logged = logged_path(&path, &route, from_housing);
    let request_line = format!("{} {}", req.method(), logged);
    let span = tracing::info_span!(
        "request",
        reference_id = %reference_id,
        method = %req.method(),
        path = %logged,
        principal = principal.as_ref().map(|p| p.id.as_str()).unwrap_or("-"),
    );

    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let proxy = state.gateway.config.proxy.as_ref();
    // An IPv4 proxy seen on a dual-stack socket arrives as ::ffff:a.b.c.d: both canonical.
    let from_proxy =
        proxy.is_some_and(|proxy| peer.is_some_and(|ip| ip == proxy.address.to_canonical()));
    // `[proxy]` is what lets Hearth serve plain HTTP off loopback: the proxy terminates
    // TLS. A peer that is not the proxy would be sending bearer tokens in the clear.
    let bypasses_proxy =
        proxy.is_some() && state.gateway.config.tls.is_none() && !from_proxy && !public;
    // Behind a trusted proxy, the client certificate it verified arrives in a header;
    // from any other peer that header is ignored.
    if let Some(proxy) = proxy
        && let Some(header) = &proxy.client_cert_header
    {
        let cert = from_proxy
            .then(|| {
                req.headers()
                    .get(header.as_str())
                    .and_then(|v| v.to_str().ok())
            })
            .flatten()
            .map(|v| v.trim().to_ascii_lowercase());
        req.extensions_mut().insert(crate::tls::ClientCert(cert));
    }
    let pinned_cert_missing = principal.as_ref().is_some_and(|p| {
        let pinned = state
            .gateway
            .config
            .partner(&p.org)
            .and_then(|o| o.client_cert_sha256.as_deref());
        let presented = req
            .extensions()
            .get::<crate::tls::ClientCert>()
            .and_then(|c| c.0.as_deref());
        pinned.is_some_and(|want| presented.is_none_or(|got| !got.eq_ignore_ascii_case(want)))
    });
    let response = match (&principal, public, break_glass(&req)) {
        _ if bypasses_proxy => Error::Forbidden(
            "plain HTTP is accepted only from the configured proxy; connect through it".into(),
        )
        .into_response(),
        (None, false, _) => Error::Unauthenticated.into_response(),
        (Some(_), _, _) if pinned_cert_missing => Error::Forbidden(
            "this organisation must present its client certificate (mutual TLS)".into(),
        )
        .into_response(),
        (_, _, Err(e)) => e.into_response(),
        (_, _, Ok(break_glass)) => {
            if let Some(p) = &principal {
                req.extensions_mut().insert(Call {
                    reference_id,
                    principal: p.clone(),
                    at,
                    request: request_line.clone(),
                    parent: None,
                    break_glass,
                });
            }
            let response = next.run(req).instrument(span.clone()).await;
            framework_rejection(response)
        }
    };

    let mut response = async {
        let pending = response.extensions().get::<PendingError>().cloned();
        let audited = response.extensions().get::<Audited>().is_some();
        let status = response.status();
        let mut response = response;
        // A refusal of a request without credentials is itemised within its address's
        // budget, and counted into a summary beyond it (see `refusals`).
        let admission = (!audited
            && (!public || pending.is_some())
            && principal.is_none()
            && status.is_client_error())
        .then(|| state.refusals.admit(peer, at));
        if let Some(summary) = admission.as_ref().and_then(|a| a.summary)
            && let Err(e) = state.gateway.store.append(summary.record(at)).await
        {
            tracing::error!(error = %e, "could not write a refusals summary to the audit");
        }
        if admission.as_ref().is_some_and(|a| !a.itemise) {
            state.metrics.refusal_not_itemised();
        } else if !audited && (!public || pending.is_some()) {
            let mut entry = response
                .extensions_mut()
                .remove::<AuditDraft>()
                .map(|d| d.0)
                .unwrap_or_else(|| {
                    AuditEntry::new(
                        reference_id,
                        rfc3339(at),
                        request_line.clone(),
                        "request",
                        Direction::Internal,
                    )
                });
            entry.status = status.as_u16();
            if entry.actor.is_none() {
                entry.actor = principal.as_ref().map(Principal::actor);
            }
            if let Some(e) = &pending {
                entry
                    .reason
                    .get_or_insert_with(|| e.0.audit_reason().to_string());
            }
            entry.outcome = Outcome::of_status(status.as_u16(), entry.outcome);
            if let Err(e) = state.gateway.store.append(entry).await {
                tracing::error!(error = %e, "could not write the audit record; answering 500");
                response = Error::Internal(e.to_string()).into_response();
            }
        }
        if let Some(e) = response.extensions().get::<PendingError>().cloned() {
            if let Error::Internal(cause) = e.0.as_ref() {
                tracing::error!(cause = %cause, "internal error");
            }
            response = error::render(&e.0, &reference_id.to_string(), response);
        }
        let parked = response
            .extensions()
            .get::<Parked>()
            .map_or(std::time::Duration::ZERO, |p| p.0);
        state.metrics.request(
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed().saturating_sub(parked).as_secs_f64(),
        );
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        response
    }
    .instrument(span)
    .await;

    if let Ok(v) = HeaderValue::from_str(&reference_id.to_string()) {
        response.headers_mut().insert("x-reference-id", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::logged_path;

    #[test]
    fn paths_keep_hearths_identifiers_and_tenant_ids_but_not_what_a_caller_made_up() {
        let reference = "01KAQZ3D0000000000000000N1";
        let resource = format!("/fhir/Communication/{reference}");
        let cases = [
            (
                resource.as_str(),
                "/fhir/Communication/{id}",
                resource.as_str(),
            ),
            (
                "/fhir/Communication/MRN-004417",
                "/fhir/Communication/{id}",
                "/fhir/Communication/{id}",
            ),
            (
                "/fhir/Patient/MRN-004417",
                "/fhir/{type}/{*rest}",
                "/fhir/{type}/{*rest}",
            ),
            ("/fhir/Smith", "/fhir/{type}", "/fhir/{type}"),
            (
                "/housing/tenants/T-1001/preview",
                "/housing/tenants/{id}/preview",
                "/housing/tenants/T-1001/preview",
            ),
            (
                "/housing/tenants/Jane%20Doe",
                "/housing/tenants/{id}",
                "/housing/tenants/{id}",
            ),
            ("/nowhere/MRN-004417", "unmatched", "(unmatched)"),
        ];
        for (path, route, logged) in cases {
            assert_eq!(logged_path(path, route, true), logged, "{path}");
        }
        // A tenant ID is kept only from housing: anyone else's guess stays out.
        assert_eq!(
            logged_path(
                "/housing/tenants/MRN-004417",
                "/housing/tenants/{id}",
                false
            ),
            "/housing/tenants/{id}"
        );
    }
}
