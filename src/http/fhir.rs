//! `/fhir`: the FHIR R4 REST surface. The [`RESOURCES`] table drives both the router and
//! the CapabilityStatement, so the statement is true by construction.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use serde_json::{Value, json};

use super::AppState;
use super::error::{AuditDraft, Audited, Failure, fhir_json, issues_of, status_of};
use super::extract::JsonBody;
use crate::audit::Direction;
use crate::error::Error;
use crate::fhir::bundle::{self, LocalPatients};
use crate::fhir::capability::{ResourceSupport, capability_statement};
use crate::fhir::{Issue, outcome};
use crate::gateway::consents::RecordedConsent;
use crate::gateway::{Call, IfNoneExist, Prepared, Receipt};
use crate::store::ExchangeOutcome;

/// What `/fhir` serves, per resource type.
pub const RESOURCES: &[ResourceSupport] = &[
    ResourceSupport {
        resource: "Communication",
        interactions: &["create", "read"],
        search: &[],
        profile: "https://hearth.example/profiles/Communication",
        conditional_create: true,
    },
    ResourceSupport {
        resource: "CarePlan",
        interactions: &["create", "read"],
        search: &[],
        profile: "https://hearth.example/profiles/CarePlan",
        conditional_create: true,
    },
    ResourceSupport {
        resource: "Consent",
        interactions: &[
            "create",
            "read",
            "update",
            "vread",
            "history-instance",
            "search-type",
        ],
        search: &[("patient", "reference"), ("status", "token")],
        profile: "https://hearth.example/profiles/Consent",
        conditional_create: false,
    },
];

/// System-level interactions (`POST /fhir` with a Bundle).
pub const SYSTEM_INTERACTIONS: &[&str] = &["batch", "transaction"];

pub fn router() -> Router<AppState> {
    let mut router = Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir", post(bundle));
    // Each interaction in the table gets its handler here; the CapabilityStatement is
    // built from the same table, so neither can claim what the other lacks.
    for r in RESOURCES {
        let rt = r.resource;
        let mut on_type: MethodRouter<AppState> = MethodRouter::new();
        let mut on_instance: MethodRouter<AppState> = MethodRouter::new();
        for interaction in r.interactions {
            match (rt, *interaction) {
                (_, "create") => {
                    on_type = on_type.post(
                        move |state: State<AppState>,
                              call: Extension<Call>,
                              headers: HeaderMap,
                              body: Result<JsonBody, Error>| {
                            create(state, call, headers, body, rt)
                        },
                    )
                }
                (_, "read") => {
                    on_instance = on_instance.get(
                        move |state: State<AppState>, call: Extension<Call>, id: Path<String>| {
                            read(state, call, id, rt)
                        },
                    )
                }
                ("Consent", "update") => on_instance = on_instance.put(update_consent),
                ("Consent", "search-type") => on_type = on_type.get(search_consents),
                ("Consent", "history-instance") => {
                    router = router.route("/fhir/Consent/{id}/_history", get(consent_history))
                }
                ("Consent", "vread") => {
                    router = router.route("/fhir/Consent/{id}/_history/{vid}", get(consent_vread))
                }
                (rt, other) => panic!("RESOURCES lists {rt} {other}, but no handler serves it"),
            }
        }
        router = router
            .route(&format!("/fhir/{rt}"), on_type)
            .route(&format!("/fhir/{rt}/{{id}}"), on_instance);
    }
    router
        .route("/fhir/{type}", any(unsupported))
        .route("/fhir/{type}/{*rest}", any(unsupported))
}

async fn unsupported(Path(params): Path<Vec<(String, String)>>) -> Error {
    let ty = params.first().map(|(_, v)| v.as_str()).unwrap_or_default();
    Error::NotFound(format!(
        "Hearth does not serve {ty} resources; see /fhir/metadata"
    ))
}

async fn metadata(State(state): State<AppState>) -> Response {
    let date = crate::clock::rfc3339(state.gateway.now());
    fhir_json(capability_statement(
        RESOURCES,
        SYSTEM_INTERACTIONS,
        env!("CARGO_PKG_VERSION"),
        &date,
    ))
}

/// What one create produced, before it becomes a response or a Bundle entry.
enum Created {
    Notice(Receipt),
    /// A Consent (or a joint case review CarePlan): the stored resource itself.
    Resource {
        id: String,
        version: u32,
        resource: Value,
    },
    /// A partner's proposed Consent, taken for housing to confirm (202, nothing to read).
    Proposal,
}

/// What a partner proposing a consent is told, whether or not its subject is a tenant.
const PROPOSAL_TAKEN: &str = "proposed consent received; the housing provider confirms consents with the tenant before any is enforced";

async fn create_one(
    state: &AppState,
    call: &Call,
    rt: &str,
    body: JsonBody,
    if_none_exist: Option<&IfNoneExist>,
    audit: &mut crate::audit::AuditEntry,
) -> Result<Created, Error> {
    let g = &state.gateway;
    let review = rt == "CarePlan" && crate::gateway::reviews::is_review(&body.value);
    if if_none_exist.is_some() && (rt == "Consent" || review) {
        // Refused, not ignored: ignoring it would store a retry twice.
        return Err(Error::malformed(
            "conditional create (If-None-Exist) applies to notices only; send a Consent or a case review without it",
        ));
    }
    if rt == "Consent" {
        return Ok(
            match g
                .record_consent(call, body.value, body.digest, audit)
                .await?
            {
                RecordedConsent::Stored(stored) => Created::Resource {
                    id: stored.version.id.clone(),
                    version: stored.version.version,
                    resource: stored.resource,
                },
                RecordedConsent::Proposed => Created::Proposal,
            },
        );
    }
    if review {
        let stored = g.record_review_fhir(call, body.value, audit).await?;
        return Ok(Created::Resource {
            id: stored.id,
            version: 1,
            resource: stored.careplan,
        });
    }
    let receipt = g
        .receive(call, rt, body.value, body.digest, if_none_exist, audit)
        .await?;
    // Only when routing rules queued something: each wake is an outbox query.
    if receipt.forwards_queued > 0 {
        state.relay.wake();
    }
    Ok(Created::Notice(receipt))
}

/// The status, `Location` and `ETag` a created resource is answered with.
fn status_and_location(
    rt: &str,
    created: &Created,
) -> (StatusCode, Option<String>, Option<String>) {
    match created {
        Created::Notice(r) => {
            let status = match r.outcome {
                ExchangeOutcome::Accepted | ExchangeOutcome::Corrected { .. } => {
                    StatusCode::CREATED
                }
                ExchangeOutcome::Replayed { .. }
                | ExchangeOutcome::Retracted { .. }
                | ExchangeOutcome::Overtaken { .. } => StatusCode::OK,
            };
            (
                status,
                Some(format!("/fhir/{rt}/{}", r.location)),
                Some("W/\"1\"".to_string()),
            )
        }
        // A Consent's versions can be read (vread): R4 has Location name the version.
        Created::Resource { id, version, .. } => (
            StatusCode::CREATED,
            Some(if rt == "Consent" {
                format!("/fhir/{rt}/{id}/_history/{version}")
            } else {
                format!("/fhir/{rt}/{id}")
            }),
            Some(format!("W/\"{version}\"")),
        ),
        Created::Proposal => (StatusCode::ACCEPTED, None, None),
    }
}

fn receipt_issues(r: &Receipt) -> Vec<Issue> {
    let summary = match &r.outcome {
        ExchangeOutcome::Accepted => format!(
            "accepted; {} integration-dataset item(s) stored",
            r.items_written
        ),
        ExchangeOutcome::Corrected { supersedes } => format!(
            "accepted as a correction of reference ID {supersedes}; {} item(s) stored, the earlier ones superseded",
            r.items_written
        ),
        ExchangeOutcome::Retracted { of: Some(of) } => {
            format!("retracted the items of reference ID {of}")
        }
        ExchangeOutcome::Retracted { of: None } => {
            "marked entered-in-error; there was nothing to retract".into()
        }
        ExchangeOutcome::Replayed { original } => {
            format!("already received as reference ID {original}; nothing new stored")
        }
        ExchangeOutcome::Overtaken { by } => format!(
            "a later version of this resource (reference ID {by}) was stored first; this one is kept as superseded and changes nothing"
        ),
    };
    let mut issues = vec![Issue::information(summary)];
    issues.extend(r.dropped.iter().map(|p| Issue::dropped(p)));
    issues
}

async fn create(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Result<JsonBody, Error>,
    rt: &'static str,
) -> Result<Response, Failure> {
    let mut audit = call.audit("create", Direction::Inbound);
    audit.resource_type = Some(rt.to_string());
    audit.partner = Some(call.principal.org.clone());
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    let if_none_exist = header_condition(&headers).map_err(|e| Failure::new(e, audit.clone()))?;
    let created = create_one(&state, &call, rt, body, if_none_exist.as_ref(), &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit))?;
    let (status, location, etag) = status_and_location(rt, &created);
    let body = match &created {
        Created::Notice(r) => fhir_json(outcome::OperationOutcome {
            reference_id: &call.reference_id.to_string(),
            issues: &receipt_issues(r),
        }),
        Created::Resource { resource, .. } => fhir_json(resource),
        Created::Proposal => fhir_json(outcome::OperationOutcome {
            reference_id: &call.reference_id.to_string(),
            issues: &[Issue::information(PROPOSAL_TAKEN)],
        }),
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, v);
    }
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    response.extensions_mut().insert(Audited);
    Ok(response)
}

async fn read(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
    rt: &'static str,
) -> Result<Response, Failure> {
    let mut audit = call.audit("read", Direction::Outbound);
    let g = &state.gateway;
    if rt == "CarePlan"
        && let Some(review) = g
            .store
            .review(&id)
            .await
            .map_err(|e| Failure::new(e.into(), audit.clone()))?
    {
        audit.resource_type = Some("CarePlan".into());
        audit.tenant = Some(review.review.tenant_id.clone());
        let review = g
            .read_review(&call, review, &mut audit)
            .await
            .map_err(|e| Failure::new(e, audit.clone()))?;
        let mut response = fhir_json(review.careplan);
        response.extensions_mut().insert(AuditDraft(audit));
        return Ok(response);
    }
    let (body, etag) = if rt == "Consent" {
        audit.resource_type = Some("Consent".into());
        let not_found = || Error::NotFound(format!("Consent/{id} is not known here"));
        let stored = g
            .store
            .consent(&id)
            .await
            .map_err(|e| Failure::new(e.into(), audit.clone()))?
            .ok_or_else(|| Failure::new(not_found(), audit.clone()))?;
        if !g.may_see_consent(&call, &stored) {
            return Err(Failure::new(not_found(), audit));
        }
        audit.tenant = Some(stored.tenant.clone());
        audit.consent = Some(stored.version.citation());
        (stored.resource, format!("W/\"{}\"", stored.version.version))
    } else {
        let copy = g
            .exchange_copy(&call, rt, &id, &mut audit)
            .await
            .map_err(|e| Failure::new(e, audit.clone()))?;
        (copy, "W/\"1\"".to_string())
    };
    let mut response = fhir_json(body);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

/// `POST /fhir` with a Bundle: `batch` answers each entry on its own; `transaction`
/// stores all entries or none.
async fn bundle(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("bundle", Direction::Inbound);
    audit.resource_type = Some("Bundle".into());
    audit.partner = Some(call.principal.org.clone());
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    let body = body.map_err(|e| fail(e, &audit))?;
    audit.payload_digest = Some(body.digest.clone());
    if crate::fhir::resource_type(&body.value) != Some("Bundle") {
        return Err(fail(
            Error::Malformed {
                message: "POST /fhir takes a Bundle of type batch or transaction".into(),
                expression: Some("resourceType".into()),
            },
            &audit,
        ));
    }
    state
        .gateway
        .validate(&body.value)
        .map_err(|e| fail(e, &audit))?;
    let kind = body.value["type"].as_str().unwrap_or_default().to_string();
    let entries = body
        .value
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let response = if kind == "transaction" {
        transaction(&state, &call, entries, &mut audit)
            .await
            .map_err(|e| fail(e, &audit))?
    } else {
        batch(&state, &call, entries).await
    };
    let mut response = fhir_json(response);
    audit.count = Some(
        body.value
            .get("entry")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    );
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

/// The resource type an entry creates, from `request.method` and `request.url`.
fn entry_target(entry: &Value, index: usize) -> Result<&'static str, Error> {
    let method = entry
        .pointer("/request/method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let url = entry
        .pointer("/request/url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if method != "POST" {
        return Err(Error::Invalid(vec![
            Issue::error(
                crate::fhir::IssueCode::NotSupported,
                "Hearth accepts only POST (create) entries",
            )
            .at(format!("Bundle.entry[{index}].request.method")),
        ]));
    }
    let ty = url
        .trim_start_matches('/')
        .split(['?', '/'])
        .next()
        .unwrap_or_default();
    RESOURCES
        .iter()
        .find(|r| r.resource == ty && r.interactions.contains(&"create"))
        .map(|r| r.resource)
        .ok_or_else(|| {
            Error::Invalid(vec![
                Issue::error(
                    crate::fhir::IssueCode::NotSupported,
                    if ty == "Patient" {
                        // Batch entries are independent: nothing can point at this one.
                        "Hearth keeps no Patient resources; a Patient entry can name the subject of a transaction's other entries, but a batch's entries must each identify their subject".to_string()
                    } else {
                        format!("Hearth does not create `{ty}` resources")
                    },
                )
                .at(format!("Bundle.entry[{index}].request.url")),
            ])
        })
}

fn entry_body(entry: &Value) -> JsonBody {
    body_of(entry.get("resource").cloned().unwrap_or(Value::Null))
}

fn body_of(value: Value) -> JsonBody {
    let digest = crate::audit::digest(&serde_json::to_vec(&value).unwrap_or_default());
    JsonBody { value, digest }
}

/// Rewrites an entry's issue expressions to point into the Bundle.
fn in_entry(mut issues: Vec<Issue>, index: usize) -> Vec<Issue> {
    for issue in &mut issues {
        for x in &mut issue.expression {
            *x = entry_expression(x, index);
        }
    }
    issues
}

/// The `If-None-Exist` header, if sent. A header that is not the one search Hearth
/// matches is refused, not ignored: ignoring it would store a retry twice.
fn header_condition(headers: &HeaderMap) -> Result<Option<IfNoneExist>, Error> {
    let Some(value) = headers.get("if-none-exist") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        Error::malformed("If-None-Exist must be ASCII: percent-encode any other character")
    })?;
    IfNoneExist::parse(value)
        .map(Some)
        .ok_or_else(|| Error::malformed(IfNoneExist::EXPECTED))
}

/// A Bundle entry's `request.ifNoneExist`, if it has one; a bad one is reported there.
fn entry_condition(entry: &Value, index: usize) -> Result<Option<IfNoneExist>, Error> {
    let Some(value) = entry.pointer("/request/ifNoneExist") else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(IfNoneExist::parse)
        .map(Some)
        .ok_or_else(|| Error::Malformed {
            message: IfNoneExist::EXPECTED.into(),
            expression: Some(format!("Bundle.entry[{index}].request.ifNoneExist")),
        })
}

/// `expression` about an entry's resource, rooted at the Bundle: `Communication.status`
/// or a bare `status` becomes `Bundle.entry[i].resource.status`.
fn entry_expression(expression: &str, index: usize) -> String {
    if expression.starts_with("Bundle.") {
        return expression.to_string();
    }
    // A leading resource type (capitalised, as FHIR types are) is the entry's resource.
    let rest = match expression.split_once('.') {
        _ if expression.starts_with(|c: char| !c.is_ascii_uppercase()) => {
            format!(".{expression}")
        }
        Some((_, rest)) => format!(".{rest}"),
        None => String::new(),
    };
    format!("Bundle.entry[{index}].resource{rest}")
}

fn entry_response(
    status: StatusCode,
    location: Option<String>,
    etag: Option<String>,
    outcome: Value,
) -> Value {
    let mut r = json!({
        "status": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or_default()),
        "outcome": outcome,
    });
    if let Some(l) = location {
        r["location"] = json!(l.trim_start_matches("/fhir/"));
    }
    if let Some(e) = etag {
        r["etag"] = json!(e);
    }
    json!({ "response": r })
}

async fn batch(state: &AppState, call: &Call, entries: Vec<Value>) -> Value {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let entry_call = call.entry(i);
        let mut audit = entry_call.audit("create", Direction::Inbound);
        audit.partner = Some(call.principal.org.clone());
        let result =
            match entry_target(entry, i).and_then(|rt| Ok((rt, entry_condition(entry, i)?))) {
                Ok((rt, if_none_exist)) => {
                    audit.resource_type = Some(rt.to_string());
                    create_one(
                        state,
                        &entry_call,
                        rt,
                        entry_body(entry),
                        if_none_exist.as_ref(),
                        &mut audit,
                    )
                    .await
                    .map(|c| (rt, c))
                }
                Err(e) => Err(e),
            };
        let reference = entry_call.reference_id.to_string();
        match result {
            Ok((rt, created)) => {
                let (status, location, etag) = status_and_location(rt, &created);
                let issues = match &created {
                    Created::Notice(r) => receipt_issues(r),
                    Created::Resource { .. } => vec![Issue::information("recorded")],
                    Created::Proposal => vec![Issue::information(PROPOSAL_TAKEN)],
                };
                out.push(entry_response(
                    status,
                    location,
                    etag,
                    outcome::operation_outcome(&reference, &issues),
                ));
            }
            Err(e) => {
                let status = status_of(&e);
                audit.status = status.as_u16();
                audit
                    .reason
                    .get_or_insert_with(|| e.audit_reason().to_string());
                audit.outcome = crate::audit::Outcome::of_status(status.as_u16(), audit.outcome);
                if let Error::Internal(cause) = &e {
                    tracing::error!(cause = %cause, "internal error in a batch entry");
                }
                // An answer the trail does not hold is not given, as for a whole request.
                let (status, e) = match state.gateway.store.append(audit).await {
                    Ok(()) => (status, e),
                    Err(store_error) => {
                        tracing::error!(error = %store_error, "could not audit a failed batch entry; answering 500");
                        let e = Error::Internal(store_error.to_string());
                        (status_of(&e), e)
                    }
                };
                let issues = in_entry(issues_of(&e), i);
                out.push(entry_response(
                    status,
                    None,
                    None,
                    outcome::operation_outcome(&reference, &issues),
                ));
            }
        }
    }
    bundle_of("batch-response", None, out)
}

async fn transaction(
    state: &AppState,
    call: &Call,
    entries: Vec<Value>,
    bundle_audit: &mut crate::audit::AuditEntry,
) -> Result<Value, Error> {
    let g = &state.gateway;
    // Checked before any notice: a notice may reference a Patient entry after it.
    let patients = LocalPatients::of(&entries).map_err(|(i, issue)| {
        bundle_audit.reason = Some(format!("entry {i}: invalid"));
        Error::Invalid(vec![issue])
    })?;
    let identities = bundle::entry_identities(&entries);
    let mut prepared: Vec<(usize, &'static str, Call, Prepared)> = Vec::new();
    // A Patient entry is read, never kept; its own record says so, under its reference ID.
    let mut subjects: Vec<(usize, crate::audit::AuditEntry)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let entry_call = call.entry(i);
        if bundle::is_patient_entry(entry) {
            let audit = patient_request(entry, i)
                .and_then(|()| g.identify_subject(&entry_call, entry_body(entry).digest))
                .inspect_err(|e| {
                    bundle_audit.reason = Some(format!("entry {i}: {}", e.audit_reason()));
                })?;
            subjects.push((i, audit));
            continue;
        }
        let mut audit = entry_call.audit("create", Direction::Inbound);
        let step = async {
            let rt = entry_target(entry, i)?;
            let review = rt == "CarePlan"
                && entry
                    .get("resource")
                    .is_some_and(crate::gateway::reviews::is_review);
            if rt == "Consent" || review {
                // Transactions hold notices only: a consent or a case review has its own
                // rules (who may record it) that a notice transaction does not apply.
                let what = if review { "A case review" } else { "A Consent" };
                return Err(Error::Invalid(vec![
                    Issue::error(
                        crate::fhir::IssueCode::NotSupported,
                        format!("{what} cannot be part of a transaction; send it on its own or in a batch"),
                    )
                    .at(format!("Bundle.entry[{i}].request.url")),
                ]));
            }
            let if_none_exist = entry_condition(entry, i)?;
            let mut resource = entry.get("resource").cloned().unwrap_or(Value::Null);
            let rewritten = patients
                .resolve(&mut resource)
                .map_err(|issue| Error::Invalid(vec![issue]))?;
            // Replays are recognised by the rewritten notice, with references to other
            // entries by what they are; the trail keeps the digest of the entry as sent.
            let replay_key = bundle::by_identity(&resource, &identities);
            let mut body = body_of(resource);
            let sent_digest = if rewritten || replay_key.is_some() {
                entry_body(entry).digest
            } else {
                body.digest.clone()
            };
            if let Some(key) = replay_key {
                body.digest = body_of(key).digest;
            }
            let mut p = g
                .prepare(
                    &entry_call,
                    rt,
                    body.value,
                    body.digest,
                    if_none_exist.as_ref(),
                    &mut audit,
                )
                .await?;
            p.audit_mut().payload_digest = Some(sent_digest);
            Ok((rt, p))
        };
        match step.await {
            Ok((rt, p)) => prepared.push((i, rt, entry_call, p)),
            Err(e) => {
                bundle_audit.reason = Some(format!(
                    "entry {i}: {}",
                    audit.reason.as_deref().unwrap_or(e.audit_reason())
                ));
                bundle_audit.tenant = audit.tenant.clone();
                return Err(match e {
                    Error::Invalid(issues) => Error::Invalid(in_entry(issues, i)),
                    Error::Malformed {
                        message,
                        expression,
                    } => Error::Malformed {
                        message,
                        expression: Some(entry_expression(
                            expression.as_deref().unwrap_or_default(),
                            i,
                        )),
                    },
                    other => other,
                });
            }
        }
    }
    let order: Vec<(usize, &'static str, Call)> = prepared
        .iter()
        .map(|(i, rt, c, _)| (*i, *rt, c.clone()))
        .collect();
    let subject_answers: Vec<(usize, String)> = subjects
        .iter()
        .map(|(i, a)| (*i, a.reference_id.to_string()))
        .collect();
    let receipts = g
        .commit_with(
            prepared.into_iter().map(|(_, _, _, p)| p).collect(),
            subjects.into_iter().map(|(_, a)| a).collect(),
        )
        .await?;
    if receipts.iter().any(|r| r.forwards_queued > 0) {
        state.relay.wake();
    }
    let mut answered: Vec<(usize, Value)> = order
        .iter()
        .zip(receipts)
        .map(|((i, rt, entry_call), r)| {
            let created = Created::Notice(r);
            let (status, location, etag) = status_and_location(rt, &created);
            let Created::Notice(r) = &created else {
                unreachable!()
            };
            let response = entry_response(
                status,
                location,
                etag,
                outcome::operation_outcome(
                    &entry_call.reference_id.to_string(),
                    &receipt_issues(r),
                ),
            );
            (*i, response)
        })
        .collect();
    answered.extend(subject_answers.into_iter().map(|(i, reference)| {
        let issues = [Issue::information(PATIENT_ENTRY_READ)];
        let outcome = outcome::operation_outcome(&reference, &issues);
        (i, entry_response(StatusCode::OK, None, None, outcome))
    }));
    answered.sort_by_key(|(i, _)| *i);
    Ok(bundle_of(
        "transaction-response",
        None,
        answered.into_iter().map(|(_, r)| r).collect(),
    ))
}

/// What a transaction's Patient entry is answered with.
const PATIENT_ENTRY_READ: &str = "Hearth keeps no Patient resources: this entry named the subject of the entries that reference it, and nothing else of it was kept";

/// A Patient entry creates or updates nothing, so only a create or an update makes sense.
fn patient_request(entry: &Value, index: usize) -> Result<(), Error> {
    match entry.pointer("/request/method").and_then(Value::as_str) {
        Some("POST" | "PUT") => Ok(()),
        _ => Err(Error::Invalid(vec![
            Issue::error(
                crate::fhir::IssueCode::NotSupported,
                "a Patient entry only names the subject of other entries: its request is POST or PUT",
            )
            .at(format!("Bundle.entry[{index}].request.method")),
        ])),
    }
}

/// The version an `If-Match` header names (`W/"3"`, as Hearth's ETags, or `"3"`).
fn if_match(headers: &HeaderMap) -> Result<Option<u32>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/"))
        .and_then(|v| v.strip_prefix('"')?.strip_suffix('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| Error::malformed("If-Match must be a version ETag such as W/\"3\""))
}

/// `PUT /fhir/Consent/{id}`: housing records a new version.
async fn update_consent(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody, Error>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("update", Direction::Internal);
    audit.resource_type = Some("Consent".into());
    let body = body.map_err(|e| Failure::new(e, audit.clone()))?;
    let if_match = if_match(&headers).map_err(|e| Failure::new(e, audit.clone()))?;
    let stored = state
        .gateway
        .update_consent(&call, &id, if_match, body.value, body.digest, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit))?;
    let mut response = (StatusCode::OK, fhir_json(stored.resource)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "/fhir/Consent/{id}/_history/{}",
        stored.version.version
    )) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.extensions_mut().insert(Audited);
    Ok(response)
}

async fn visible_history(
    state: &AppState,
    call: &Call,
    id: &str,
    audit: &mut crate::audit::AuditEntry,
) -> Result<Vec<crate::store::StoredConsent>, Error> {
    let history = state.gateway.store.consent_history(id).await?;
    match history.last() {
        Some(latest) if state.gateway.may_see_consent(call, latest) => {
            audit.tenant = Some(latest.tenant.clone());
            audit.count = Some(history.len());
            Ok(history)
        }
        _ => Err(Error::NotFound(format!("Consent/{id} is not known here"))),
    }
}

/// `GET /fhir/Consent/{id}/_history`: every version, newest first.
async fn consent_history(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let base = fhir_base(&state, &headers);
    let mut audit = call.audit("history", Direction::Outbound);
    audit.resource_type = Some("Consent".into());
    let history = visible_history(&state, &call, &id, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    // R4 history entries say how each version came about (bdl-3, bdl-4): the first was
    // created, each later one an update.
    let entries: Vec<Value> = history
        .iter()
        .rev()
        .map(|c| {
            let v = c.version.version;
            let (method, url, status) = if v == 1 {
                ("POST", "Consent".to_string(), "201 Created")
            } else {
                ("PUT", format!("Consent/{id}"), "200 OK")
            };
            json!({
                "fullUrl": format!("{base}/Consent/{id}"),
                "resource": c.resource,
                "request": {"method": method, "url": url},
                "response": {"status": status, "etag": format!("W/\"{v}\""), "lastModified": c.recorded_at},
            })
        })
        .collect();
    let total = entries.len();
    let mut bundle = bundle_of("history", Some(total), entries);
    bundle["link"] = json!([{"relation": "self", "url": format!("{base}/Consent/{id}/_history")}]);
    let mut response = fhir_json(bundle);
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

/// `GET /fhir/Consent/{id}/_history/{vid}`.
async fn consent_vread(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    Path((id, vid)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let mut audit = call.audit("vread", Direction::Outbound);
    audit.resource_type = Some("Consent".into());
    let history = visible_history(&state, &call, &id, &mut audit)
        .await
        .map_err(|e| Failure::new(e, audit.clone()))?;
    let version = history
        .into_iter()
        .find(|c| c.version.version.to_string() == vid)
        .ok_or_else(|| {
            Failure::new(
                Error::NotFound(format!("Consent/{id} has no version {vid}")),
                audit.clone(),
            )
        })?;
    audit.consent = Some(version.version.citation());
    let mut response = fhir_json(version.resource);
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{vid}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentSearch {
    /// The housing tenant ID.
    patient: Option<String>,
    /// `system|value` of any identifier the tenant is known by.
    #[serde(rename = "patient:identifier")]
    patient_identifier: Option<String>,
    /// A FHIR consent state (`active`, or as a token with its code system); anything else
    /// is refused rather than matching nothing.
    status: Option<String>,
    /// Only JSON is served (`json`, `application/json`, `application/fhir+json`).
    #[serde(rename = "_format")]
    format: Option<String>,
    /// Accepted and ignored: answers are compact JSON either way.
    #[serde(rename = "_pretty")]
    _pretty: Option<String>,
}

/// The consent state a `status` search token names: `code` or `system|code`, the system
/// being FHIR's consent-state-codes.
fn consent_state(token: &str) -> Option<crate::consent::ConsentStatus> {
    let code = match token.split_once('|') {
        Some(("http://hl7.org/fhir/consent-state-codes" | "", code)) => code,
        Some(_) => return None,
        None => token,
    };
    serde_json::from_value(json!(code)).ok()
}

/// Whether a `_format` value asks for JSON, the only format served.
fn wants_json(format: &str) -> bool {
    matches!(
        format.split(';').next().unwrap_or_default().trim(),
        "json" | "application/json" | "application/fhir+json"
    )
}

/// `GET /fhir/Consent?patient=…&status=…`: the latest version of each matching consent
/// the caller may see. `total` counts only what is returned.
async fn search_consents(
    State(state): State<AppState>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    query: Result<axum::extract::Query<ConsentSearch>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let base = fhir_base(&state, &headers);
    let mut audit = call.audit("search", Direction::Outbound);
    audit.resource_type = Some("Consent".into());
    let fail = |e: Error, a: &crate::audit::AuditEntry| Failure::new(e, a.clone());
    let axum::extract::Query(q) = query.map_err(|e| {
        fail(
            Error::malformed(format!(
                "supported search parameters: patient, patient:identifier, status, _format, _pretty ({})",
                e.body_text()
            )),
            &audit,
        )
    })?;
    if q.format.as_deref().is_some_and(|f| !wants_json(f)) {
        return Err(fail(Error::NotAcceptable, &audit));
    }
    // Before any identifier is resolved: a role that may see no consent (the operator)
    // must not learn, from the trail, which tenant an MRN belongs to.
    state
        .gateway
        .may_search_consents(&call)
        .map_err(|e| fail(e, &audit))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(token) => Some(consent_state(token).ok_or_else(|| {
            fail(
                Error::malformed(format!(
                    "`status` {token} is not a consent state (draft, proposed, active, rejected, inactive, entered-in-error)"
                )),
                &audit,
            )
        })?),
    };
    let g = &state.gateway;
    let tenant = match (&q.patient, &q.patient_identifier) {
        (Some(t), None) => Some(crate::ids::TenantId::new(t.trim_start_matches("Patient/"))),
        (None, Some(token)) => {
            let (system, value) = token.split_once('|').ok_or_else(|| {
                fail(
                    Error::malformed("patient:identifier is system|value"),
                    &audit,
                )
            })?;
            g.store
                .resolve(&[crate::ids::Identifier::new(system, value)])
                .await
                .map_err(|e| fail(e.into(), &audit))?
                .pop()
                .flatten()
        }
        _ => {
            return Err(fail(
                Error::malformed("search Consent by patient or patient:identifier"),
                &audit,
            ));
        }
    };
    let mut entries = Vec::new();
    if let Some(tenant) = &tenant {
        audit.tenant = Some(tenant.clone());
        let found = g
            .search_consents(&call, tenant, status)
            .await
            .map_err(|e| fail(e, &audit))?;
        entries = found
            .into_iter()
            .map(|c| {
                json!({
                    "fullUrl": format!("{base}/Consent/{}", c.version.id),
                    "resource": c.resource,
                    "search": {"mode": "match"},
                })
            })
            .collect();
    }
    audit.count = Some(entries.len());
    let total = entries.len();
    let mut bundle = bundle_of("searchset", Some(total), entries);
    // The search as it was understood: the query the client sent.
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    bundle["link"] = json!([{"relation": "self", "url": format!("{base}/Consent{query}")}]);
    let mut response = fhir_json(bundle);
    response.extensions_mut().insert(AuditDraft(audit));
    Ok(response)
}

/// The FHIR base URL clients use: `public_base_url`, or this request's own host (a
/// `Host` that is not a plain authority falls back to the listen address).
fn fhir_base(state: &AppState, headers: &HeaderMap) -> String {
    let config = &state.gateway.config;
    if let Some(base) = &config.public_base_url {
        return base.trim_end_matches('/').to_string();
    }
    // Behind the proxy, clients reached Hearth over TLS too.
    let scheme = if config.tls.is_some() || config.proxy.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.contains('@')
                && h.parse::<axum::http::uri::Authority>()
                    .is_ok_and(|a| a.as_str() == *h)
        })
        .map_or_else(|| config.listen.to_string(), str::to_string);
    format!("{scheme}://{host}/fhir")
}

/// A Bundle of `kind`. FHIR JSON has no empty arrays: with no entries, `entry` is left out.
fn bundle_of(kind: &str, total: Option<usize>, entries: Vec<Value>) -> Value {
    let mut b = json!({"resourceType": "Bundle", "type": kind});
    if let Some(total) = total {
        b["total"] = json!(total);
    }
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::entry_expression;

    /// A problem inside a Bundle entry points into that entry's resource, whether the
    /// expression named the resource type, a bare element, or nothing.
    #[test]
    fn entry_problems_point_into_the_entry() {
        for (given, expected) in [
            ("Communication.status", "Bundle.entry[2].resource.status"),
            (
                "Communication.category",
                "Bundle.entry[2].resource.category",
            ),
            ("resourceType", "Bundle.entry[2].resource.resourceType"),
            ("Communication", "Bundle.entry[2].resource"),
            ("", "Bundle.entry[2].resource"),
            ("Bundle.entry[0].request", "Bundle.entry[0].request"),
        ] {
            assert_eq!(entry_expression(given, 2), expected, "{given}");
        }
    }
}
