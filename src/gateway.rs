//! The gateway's operations, independent of HTTP: receive an inbound resource, record a
//! consent, register a tenant, read the feed and a tenant's dataset.
//!
//! Order of work for an inbound resource (fixed by design):
//! authenticate (done by the caller) → parse → validate → link tenant → map and classify
//! → consent decision → store + audit (one durable transaction) → answer.
//! The original resource is never stored; only its digest.
//!
//! Each operation fills the audit draft it is given as it learns things (tenant,
//! consent, dropped paths, the real refusal reason). On success the operation has
//! written the record itself, atomically with its data; on failure the caller writes
//! the draft.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::audit::{AuditEntry, ItemRef};
use crate::auth::{Principal, Role};
use crate::clock::{Clock, rfc3339};
use crate::config::Config;
use crate::consent::{self, Decision, ExchangeRequest};
use crate::dataset::{Provenance, StoredItem};
use crate::error::{Error, NO_AGREEMENT};
use crate::fhir::{self, Issue, IssueCode, Profiles};
use crate::ids::{Identifier, ReferenceId, TenantId};
use crate::mapping::{Mappings, Translation};
use crate::store::{
    ExchangeKey, ExchangeOutcome, NewExchange, Store, StoredConsent, StoredExchange,
};
use crate::tenancy::{self, LinkFailure, TenantRegistration};

/// Resource types a partner may push as notices.
pub const NOTICE_TYPES: &[&str] = &["Communication", "CarePlan"];

/// The purpose of use for routine exchanges (v3-ActReason): coordination of care.
pub const CARE_COORDINATION: &str = "COC";

/// Everything an operation needs, shared by all requests.
pub struct Gateway {
    pub store: Arc<dyn Store>,
    pub mappings: Arc<Mappings>,
    pub profiles: Arc<Profiles>,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
}

/// One authenticated call: who, when, under which reference ID.
#[derive(Debug, Clone)]
pub struct Call {
    pub reference_id: ReferenceId,
    pub principal: Principal,
    pub at: OffsetDateTime,
    /// `METHOD /path`, for the audit record.
    pub request: String,
    /// The enclosing Bundle, for entries.
    pub parent: Option<ReferenceId>,
}

impl Call {
    /// A fresh audit draft for this call.
    pub fn audit(&self, action: &str, direction: crate::audit::Direction) -> AuditEntry {
        let mut a = AuditEntry::new(
            self.reference_id,
            rfc3339(self.at),
            self.request.clone(),
            action,
            direction,
        );
        a.actor = Some(self.principal.actor());
        a.parent = self.parent;
        a
    }

    /// The same caller, for an entry inside a Bundle: its own reference ID.
    pub fn entry(&self, index: usize) -> Call {
        Call {
            reference_id: ReferenceId::new(),
            principal: self.principal.clone(),
            at: self.at,
            request: format!("{} entry[{index}]", self.request),
            parent: Some(self.reference_id),
        }
    }
}

/// An inbound resource that passed every check and is ready to store.
#[derive(Debug)]
pub enum Prepared {
    Store {
        exchange: Box<NewExchange>,
        dropped: Vec<String>,
    },
    /// `If-None-Exist` matched an earlier exchange: nothing to store.
    Replay {
        original: ReferenceId,
        audit: Box<AuditEntry>,
    },
}

/// What the caller is told about an inbound resource.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub outcome: ExchangeOutcome,
    pub resource_type: String,
    /// The exchange whose copy `Location` names (the original, for a replay).
    pub location: ReferenceId,
    pub dropped: Vec<String>,
    pub items_written: usize,
}

impl Gateway {
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn require_role(&self, call: &Call, roles: &[Role]) -> Result<(), Error> {
        if roles.contains(&call.principal.role) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the {} role may not do this",
                call.principal.role.as_str()
            )))
        }
    }

    /// Profile validation: 422 with one issue per problem.
    pub fn validate(&self, resource: &Value) -> Result<(), Error> {
        let issues = static_checks(&self.profiles, resource);
        if issues.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(issues))
        }
    }

    /// Links the subject to a tenant; the failure's real reason goes to the audit.
    async fn link(
        &self,
        resource: &Value,
        audit: &mut AuditEntry,
    ) -> Result<Result<TenantId, LinkFailure>, Error> {
        let ids = tenancy::subject_identifiers(resource).map_err(|i| Error::Invalid(vec![i]))?;
        let resolved = self.store.resolve(&ids).await?;
        let link = tenancy::decide_link(&resolved);
        match &link {
            Ok(t) => audit.tenant = Some(t.clone()),
            Err(f) => audit.reason = Some(f.as_str().to_string()),
        }
        Ok(link)
    }

    /// Checks and maps one inbound notice without storing anything.
    pub async fn prepare(
        &self,
        call: &Call,
        endpoint_type: &str,
        resource: Value,
        digest: String,
        if_none_exist: Option<&str>,
        audit: &mut AuditEntry,
    ) -> Result<Prepared, Error> {
        audit.partner = Some(call.principal.org.clone());
        audit.payload_digest = Some(digest.clone());
        audit.resource_type = Some(endpoint_type.to_string());
        self.require_role(call, &[Role::Clinic, Role::Mco])?;
        match fhir::resource_type(&resource) {
            Some(t) if t == endpoint_type => {}
            Some(t) => {
                return Err(Error::Malformed {
                    message: format!("this endpoint takes {endpoint_type}, not {t}"),
                    expression: Some("resourceType".into()),
                });
            }
            None => {
                return Err(Error::Malformed {
                    message: format!("the body is not a FHIR {endpoint_type} (no resourceType)"),
                    expression: Some("resourceType".into()),
                });
            }
        }
        self.validate(&resource)?;
        let key = ExchangeKey {
            partner: call.principal.org.clone(),
            resource_type: endpoint_type.to_string(),
            identifier: first_identifier(&resource).ok_or_else(|| {
                Error::Invalid(vec![
                    Issue::error(IssueCode::Required, "an identifier with system and value is required, so retries are recognised")
                        .at(format!("{endpoint_type}.identifier")),
                ])
            })?,
        };

        if let Some(query) = if_none_exist {
            let (system, value) = parse_identifier_query(query)?;
            let found = self
                .store
                .find_exchanges(&key.partner, endpoint_type, system.as_deref(), &value)
                .await?;
            match found.as_slice() {
                [] => {}
                [original] => {
                    audit.outcome = crate::audit::Outcome::Replayed;
                    audit.related = Some(*original);
                    return Ok(Prepared::Replay {
                        original: *original,
                        audit: Box::new(audit.clone()),
                    });
                }
                _ => {
                    return Err(Error::PreconditionFailed(
                        "If-None-Exist matches more than one resource; make the criteria specific"
                            .into(),
                    ));
                }
            }
        }

        let tenant = match self.link(&resource, audit).await? {
            Ok(t) => t,
            Err(_) => return Err(Error::Forbidden(NO_AGREEMENT.into())),
        };
        let retract = resource.get("status").and_then(Value::as_str) == Some("entered-in-error");
        let translation = self.mappings.translate(&resource);
        audit.dropped_paths = translation.dropped.clone();

        // A retraction removes data, so it needs no consent; anything else does.
        let (consent, withheld) = if retract {
            (None, Vec::new())
        } else {
            let consents = self.store.consents(&tenant).await?;
            let labels: Vec<BTreeSet<String>> =
                translation.items.iter().map(|i| i.labels.clone()).collect();
            let decision = consent::decide(
                &consents,
                &ExchangeRequest {
                    partner: &call.principal.org,
                    purpose: CARE_COORDINATION,
                    item_labels: &labels,
                    at: call.at,
                },
            );
            match decision {
                Decision::Permit { consent, withheld } => (Some(consent), withheld),
                Decision::Deny { reason, consent } => {
                    audit.reason = Some(reason.code().to_string());
                    audit.consent = consent;
                    return Err(Error::Forbidden(NO_AGREEMENT.into()));
                }
            }
        };
        audit.consent = consent.clone();
        check_translation(&translation, retract)?;

        let received_at = rfc3339(call.at);
        let mut items = Vec::new();
        for (i, mapped) in translation.items.iter().enumerate() {
            let item_ref = ItemRef {
                kind: mapped.item.kind().as_str().to_string(),
                id: None,
                labels: mapped.labels.iter().cloned().collect(),
            };
            if withheld.contains(&i) {
                audit.items_withheld.push(item_ref);
                continue;
            }
            let id = format!("{}-{}", call.reference_id, items.len());
            audit.items_written.push(ItemRef {
                id: Some(id.clone()),
                ..item_ref
            });
            items.push(StoredItem {
                id,
                item: mapped.item.clone(),
                labels: mapped.labels.iter().cloned().collect(),
                provenance: Provenance {
                    partner: call.principal.org.clone(),
                    reference_id: call.reference_id,
                    received_at: received_at.clone(),
                    consent: consent.clone(),
                },
            });
        }
        Ok(Prepared::Store {
            exchange: Box::new(NewExchange {
                reference_id: call.reference_id,
                key,
                tenant,
                digest,
                received_at,
                consent,
                items,
                retract,
                audit: audit.clone(),
            }),
            dropped: translation.dropped,
        })
    }

    /// Stores prepared notices in one transaction (all or nothing) and reports each.
    pub async fn commit(&self, prepared: Vec<Prepared>) -> Result<Vec<Receipt>, Error> {
        let mut to_store = Vec::new();
        for p in &prepared {
            match p {
                Prepared::Store { exchange, .. } => to_store.push((**exchange).clone()),
                Prepared::Replay { audit, .. } => self.store.append((**audit).clone()).await?,
            }
        }
        let mut outcomes = self.store.commit_exchanges(to_store).await?.into_iter();
        prepared
            .into_iter()
            .map(|p| match p {
                Prepared::Replay { original, audit } => Ok(Receipt {
                    outcome: ExchangeOutcome::Replayed { original },
                    resource_type: audit.resource_type.clone().unwrap_or_default(),
                    location: original,
                    dropped: Vec::new(),
                    items_written: 0,
                }),
                Prepared::Store { exchange, dropped } => {
                    let outcome = outcomes.next().ok_or_else(|| {
                        Error::Internal(
                            "the store answered fewer exchanges than it was given".into(),
                        )
                    })?;
                    let (location, written) = match &outcome {
                        ExchangeOutcome::Replayed { original } => (*original, 0),
                        ExchangeOutcome::Retracted { .. } => (exchange.reference_id, 0),
                        _ => (exchange.reference_id, exchange.items.len()),
                    };
                    Ok(Receipt {
                        outcome,
                        resource_type: exchange.key.resource_type.clone(),
                        location,
                        dropped,
                        items_written: written,
                    })
                }
            })
            .collect()
    }

    /// One inbound notice, end to end.
    pub async fn receive(
        &self,
        call: &Call,
        endpoint_type: &str,
        resource: Value,
        digest: String,
        if_none_exist: Option<&str>,
        audit: &mut AuditEntry,
    ) -> Result<Receipt, Error> {
        let prepared = self
            .prepare(call, endpoint_type, resource, digest, if_none_exist, audit)
            .await?;
        let mut receipts = self.commit(vec![prepared]).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::Internal("no receipt for a committed exchange".into()))
    }

    /// Records a FHIR Consent (a new consent; every version is kept).
    pub async fn record_consent(
        &self,
        call: &Call,
        resource: Value,
        digest: String,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        audit.partner = Some(call.principal.org.clone());
        audit.payload_digest = Some(digest);
        audit.resource_type = Some("Consent".into());
        self.require_role(call, &[Role::Housing, Role::Clinic, Role::Mco, Role::Admin])?;
        if fhir::resource_type(&resource) != Some("Consent") {
            return Err(Error::Malformed {
                message: "this endpoint takes a FHIR Consent".into(),
                expression: Some("resourceType".into()),
            });
        }
        self.validate(&resource)?;
        let tenant = match self.link(&resource, audit).await? {
            Ok(t) => t,
            Err(_) if call.principal.role.is_partner() => {
                return Err(Error::Forbidden(NO_AGREEMENT.into()));
            }
            Err(f) => {
                return Err(Error::Invalid(vec![
                    Issue::error(
                        IssueCode::BusinessRule,
                        match f {
                            LinkFailure::Unknown => "no registered tenant has this identifier; register the tenant first",
                            LinkFailure::Ambiguous => "these identifiers belong to different tenants",
                        },
                    )
                    .at("Consent.patient"),
                ]));
            }
        };
        let partners = &self.config.partners;
        let terms = consent::terms_from_fhir(&resource, |reference| {
            let id = reference.strip_prefix("Organization/")?;
            partners
                .iter()
                .find(|p| p.id.as_str() == id)
                .map(|p| p.id.clone())
        })
        .map_err(Error::Invalid)?;
        Ok(self
            .store
            .save_consent(None, tenant, terms, resource, audit.clone())
            .await?)
    }

    /// Registers a tenant and the identifiers partners know them by.
    pub async fn register_tenant(
        &self,
        call: &Call,
        reg: TenantRegistration,
        audit: &mut AuditEntry,
    ) -> Result<bool, Error> {
        self.require_role(call, &[Role::Housing, Role::Admin])?;
        let ids = reg
            .identifiers_to_link(&self.config.tenancy.identifier_system)
            .map_err(Error::malformed)?;
        audit.tenant = Some(reg.tenant_id.clone());
        audit.outcome = crate::audit::Outcome::Accepted;
        audit.status = 201;
        Ok(self
            .store
            .register_tenant(reg.tenant_id, ids, audit.clone())
            .await?)
    }

    /// Hearth's own copy of an exchange, built from its stored dataset items. Visible to
    /// the partner that sent it, housing, auditors and admins; to others it does not exist.
    pub async fn exchange_copy(
        &self,
        call: &Call,
        resource_type: &str,
        id: &str,
        audit: &mut AuditEntry,
    ) -> Result<Value, Error> {
        audit.resource_type = Some(resource_type.to_string());
        let not_found = || Error::NotFound(format!("{resource_type}/{id} is not known here"));
        let reference: ReferenceId = id.parse().map_err(|_| not_found())?;
        let ex = self
            .store
            .exchange(&reference)
            .await?
            .ok_or_else(not_found)?;
        let visible = ex.resource_type == resource_type
            && (matches!(
                call.principal.role,
                Role::Housing | Role::Auditor | Role::Admin
            ) || (call.principal.role.is_partner() && call.principal.org == ex.partner));
        if !visible {
            return Err(not_found());
        }
        audit.tenant = Some(ex.tenant.clone());
        audit.related = Some(ex.reference_id);
        audit.count = Some(ex.items.len());
        Ok(minimised_copy(&ex, &self.config.tenancy.identifier_system))
    }
}

/// Every check that needs no store: the profile, and (for anything but a Bundle) that
/// the subject is identified so it can be linked. `hearth validate` prints exactly these.
pub fn static_checks(profiles: &Profiles, resource: &Value) -> Vec<Issue> {
    let mut issues = profiles.validate(resource);
    if issues.is_empty()
        && fhir::resource_type(resource) != Some("Bundle")
        && let Err(issue) = tenancy::subject_identifiers(resource)
    {
        issues.push(issue);
    }
    issues
}

fn first_identifier(resource: &Value) -> Option<Identifier> {
    let i = resource.get("identifier")?.as_array()?.first()?;
    Some(Identifier::new(
        i.get("system")?.as_str()?,
        i.get("value")?.as_str()?,
    ))
}

/// `identifier=system|value` or `identifier=value` (the only search Hearth matches).
fn parse_identifier_query(query: &str) -> Result<(Option<String>, String), Error> {
    let bad = || Error::malformed("If-None-Exist must be identifier=system|value");
    let token = query
        .trim()
        .trim_start_matches('?')
        .strip_prefix("identifier=")
        .ok_or_else(bad)?;
    if token.is_empty() || token.contains('&') {
        return Err(bad());
    }
    let decoded = token
        .replace("%7C", "|")
        .replace("%7c", "|")
        .replace("%3A", ":")
        .replace("%2F", "/");
    Ok(match decoded.split_once('|') {
        Some((s, v)) if !v.is_empty() => ((!s.is_empty()).then(|| s.to_string()), v.to_string()),
        Some(_) => return Err(bad()),
        None => (None, decoded),
    })
}

fn check_translation(t: &Translation, retract: bool) -> Result<(), Error> {
    if !t.problems.is_empty() {
        return Err(Error::Invalid(
            t.problems
                .iter()
                .map(|p| {
                    Issue::error(IssueCode::BusinessRule, p.message.clone())
                        .at(p.expression.clone())
                })
                .collect(),
        ));
    }
    if t.items.is_empty() && !retract {
        return Err(Error::Invalid(vec![
            Issue::error(
                IssueCode::BusinessRule,
                "nothing in this resource maps to the integration dataset; check its category and contained resources",
            )
            .at("category"),
        ]));
    }
    Ok(())
}

/// Builds Hearth's minimised copy of an exchange: the envelope plus one extension per
/// dataset item. Nothing from the inbound resource is copied.
pub fn minimised_copy(ex: &StoredExchange, tenant_system: &str) -> Value {
    use base64_json as b64;
    let status = match (ex.resource_type.as_str(), ex.state.as_str()) {
        (_, "retracted") => "entered-in-error",
        ("CarePlan", "superseded") => "revoked",
        ("CarePlan", _) => "active",
        (_, "superseded") => "stopped",
        _ => "completed",
    };
    let mut copy = json!({
        "resourceType": ex.resource_type,
        "id": ex.reference_id.to_string(),
        "meta": {"versionId": "1", "lastUpdated": ex.received_at},
        "identifier": [
            {"system": fhir::REFERENCE_ID_SYSTEM, "value": ex.reference_id.to_string()},
            {"system": ex.identifier.system, "value": ex.identifier.value},
        ],
        "status": status,
        "subject": {"identifier": {"system": tenant_system, "value": ex.tenant.as_str()}},
        "extension": ex.items.iter().map(|item| json!({
            "url": format!("{}/StructureDefinition/dataset-item", fhir::HEARTH_BASE),
            "valueAttachment": {
                "contentType": "application/json",
                "title": item.item.kind().as_str(),
                "data": b64::encode(item),
            }
        })).collect::<Vec<_>>(),
    });
    if ex.resource_type == "CarePlan" {
        copy["intent"] = json!("plan");
    } else {
        copy["received"] = json!(ex.received_at);
    }
    copy
}

mod base64_json {
    use base64::Engine;
    pub fn encode<T: serde::Serialize>(v: &T) -> String {
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap_or_default())
    }
}

/// The housing view of a tenant: current items with provenance.
pub fn tenant_view(tenant: &TenantId, identifiers: &[Identifier], items: Vec<StoredItem>) -> Value {
    json!({
        "tenant_id": tenant,
        "identifiers": identifiers,
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_exist_takes_an_identifier_token() {
        assert_eq!(
            parse_identifier_query("identifier=https://x.example/id|42").unwrap(),
            (Some("https://x.example/id".into()), "42".into())
        );
        assert_eq!(
            parse_identifier_query("identifier=42").unwrap(),
            (None, "42".into())
        );
        assert!(parse_identifier_query("name=smith").is_err());
        assert!(parse_identifier_query("identifier=a|").is_err());
    }
}
