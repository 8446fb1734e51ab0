//! Inbound exchanges: a partner's notice checked, mapped, decided and stored; Hearth's
//! minimised copy of what was stored.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Call, Gateway};
use crate::audit::{AuditEntry, ItemRef};
use crate::auth::Role;
use crate::clock::rfc3339;
use crate::consent::{Flow, RenewalDue};
use crate::dataset::{DatasetItem, Provenance, StoredItem};
use crate::error::{Error, NO_AGREEMENT};
use crate::fhir::{self, Issue, IssueCode};
use crate::ids::{Identifier, ReferenceId, TenantId};
use crate::mapping::Translation;
use crate::store::{ExchangeKey, ExchangeOutcome, NewExchange, StoredExchange};
use crate::tenancy;

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

impl Prepared {
    /// The audit record the commit will write.
    pub fn audit_mut(&mut self) -> &mut AuditEntry {
        match self {
            Prepared::Store { exchange, .. } => &mut exchange.audit,
            Prepared::Replay { audit, .. } => audit,
        }
    }
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
    /// Notes queued for other partners under routing rules: the relay needs waking.
    pub forwards_queued: usize,
}

/// Who sends notices: clinics and MCOs.
pub const NOTICE_SENDERS: &[Role] = &[Role::Clinic, Role::Mco];

impl Gateway {
    /// A transaction's Patient entry, which names the subject of the notices beside it.
    /// Only a sender of notices may send one; nothing of it is kept, and its audit record
    /// (`identify-subject`) holds the entry's digest and no values.
    pub fn identify_subject(&self, call: &Call, digest: String) -> Result<AuditEntry, Error> {
        call.require(NOTICE_SENDERS, "sending notices")?;
        let mut audit = call.audit("identify-subject", crate::audit::Direction::Inbound);
        audit.resource_type = Some("Patient".into());
        audit.partner = Some(call.principal.org.clone());
        audit.payload_digest = Some(digest);
        audit.status = 200;
        audit.outcome = crate::audit::Outcome::Read;
        Ok(audit)
    }

    pub async fn prepare(
        &self,
        call: &Call,
        endpoint_type: &str,
        resource: Value,
        digest: String,
        if_none_exist: Option<&IfNoneExist>,
        audit: &mut AuditEntry,
    ) -> Result<Prepared, Error> {
        audit.partner = Some(call.principal.org.clone());
        audit.payload_digest = Some(digest.clone());
        audit.resource_type = Some(endpoint_type.to_string());
        call.require(NOTICE_SENDERS, "sending notices")?;
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
        if endpoint_type == "CarePlan" {
            not_yet_a_plan(&resource)?;
        }
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

        if let Some(condition) = if_none_exist {
            let found = self
                .store
                .find_exchanges(
                    &key.partner,
                    endpoint_type,
                    condition.system.as_deref(),
                    &condition.value,
                )
                .await?;
            match found.as_slice() {
                [] => {}
                [original] => {
                    audit.outcome = crate::audit::Outcome::Replayed;
                    audit.status = 200;
                    audit.related = Some(*original);
                    return Ok(Prepared::Replay {
                        original: *original,
                        audit: Box::new(audit.clone()),
                    });
                }
                _ => {
                    return Err(Error::MultipleMatches(
                        "If-None-Exist matches more than one resource; make the criteria specific"
                            .into(),
                    ));
                }
            }
        }

        // One read: who the subject is, and that tenant's consents.
        let ids = tenancy::subject_identifiers(&resource).map_err(|i| Error::Invalid(vec![i]))?;
        let (resolved, context) = self.store.inbound_context(&ids).await?;
        let tenant = match (tenancy::decide_link(&resolved), context) {
            (Ok(t), Some(context)) => {
                audit.tenant = Some(t.clone());
                (t, context)
            }
            (Err(f), _) => {
                audit.reason = Some(f.as_str().to_string());
                return Err(Error::Forbidden(NO_AGREEMENT.into()));
            }
            (Ok(_), None) => {
                return Err(Error::Internal(
                    "the store linked a tenant without its consents".into(),
                ));
            }
        };
        let (tenant, context) = tenant;
        // Entered in error, or a care plan revoked before it was carried out: what it told
        // housing (follow-ups, appointments) no longer holds.
        let retract = match resource.get("status").and_then(Value::as_str) {
            Some("entered-in-error") => true,
            Some("revoked") => endpoint_type == "CarePlan",
            _ => false,
        };
        let translation = self.mappings.translate(&resource);
        audit.dropped_paths = translation.dropped.clone();

        // A partner retracting what it sent removes data, so it needs no consent; anything
        // else does. A retraction of nothing is decided like any exchange: otherwise its
        // 200, against a 403 for a stranger, would tell a partner who is a tenant.
        let retracts_own = retract && self.store.sent_before(&key).await?;
        let (consent, withheld, consents_seen) = if retracts_own {
            (None, Vec::new(), None)
        } else {
            let labels: Vec<BTreeSet<String>> =
                translation.items.iter().map(|i| i.labels.clone()).collect();
            let permit = self.decide_with(
                call,
                &context,
                Flow::Inbound,
                &call.principal.org,
                &labels,
                audit,
            )?;
            (permit.consent, permit.withheld, Some(permit.seen))
        };
        // After the consent decision: a 422 here for a linked subject, against a 403 for
        // anyone else, would tell a partner without consent who is a tenant.
        let in_response_to = self.responding_to(&resource, call, &tenant).await?;
        check_translation(
            &translation,
            endpoint_type,
            retract || in_response_to.is_some(),
        )?;

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
        let renewal = if retract {
            None
        } else {
            self.renewal_trigger(call, &tenant, &items).await?
        };
        let (forwards, refused_forwards) = if retract {
            (Vec::new(), Vec::new())
        } else {
            self.forwards(call, &tenant, &items).await?
        };
        Ok(Prepared::Store {
            exchange: Box::new(NewExchange {
                reference_id: call.reference_id,
                key,
                tenant,
                digest,
                received_at,
                consent,
                consents_seen,
                renewal,
                in_response_to,
                forwards,
                refused_forwards,
                response_status: resource
                    .get("status")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                items,
                retract,
                audit: audit.clone(),
            }),
            dropped: translation.dropped,
        })
    }

    /// Stores prepared notices in one transaction (all or nothing) and reports each.
    pub async fn commit(&self, prepared: Vec<Prepared>) -> Result<Vec<Receipt>, Error> {
        self.commit_with(prepared, Vec::new()).await
    }

    /// [`Self::commit`], with audit records of what else the request did (a transaction's
    /// Patient entries) written in the same transaction.
    pub async fn commit_with(
        &self,
        prepared: Vec<Prepared>,
        also_audited: Vec<AuditEntry>,
    ) -> Result<Vec<Receipt>, Error> {
        // What each receipt needs once the store has answered; the exchanges themselves
        // move to the store rather than being copied.
        enum Pending {
            Replay(ReferenceId, String),
            Store {
                reference_id: ReferenceId,
                resource_type: String,
                items: usize,
                forwards: usize,
                dropped: Vec<String>,
            },
        }
        let mut prepared = prepared;
        if !self.config.consent.share_while_renewal_due {
            hold_forwards_behind_renewals(&mut prepared);
        }
        let mut to_store = Vec::new();
        let mut replays = also_audited;
        let mut pending = Vec::with_capacity(prepared.len());
        for p in prepared {
            match p {
                Prepared::Store { exchange, dropped } => {
                    pending.push(Pending::Store {
                        reference_id: exchange.reference_id,
                        resource_type: exchange.key.resource_type.clone(),
                        items: exchange.items.len(),
                        forwards: exchange.forwards.len(),
                        dropped,
                    });
                    to_store.push(*exchange);
                }
                Prepared::Replay { original, audit } => {
                    let resource_type = audit.resource_type.clone().unwrap_or_default();
                    replays.push(*audit);
                    pending.push(Pending::Replay(original, resource_type));
                }
            }
        }
        let mut outcomes = self
            .store
            .commit_exchanges(to_store, replays)
            .await?
            .into_iter();
        pending
            .into_iter()
            .map(|p| match p {
                Pending::Replay(original, resource_type) => Ok(Receipt {
                    outcome: ExchangeOutcome::Replayed { original },
                    resource_type,
                    location: original,
                    dropped: Vec::new(),
                    items_written: 0,
                    forwards_queued: 0,
                }),
                Pending::Store {
                    reference_id,
                    resource_type,
                    items,
                    forwards,
                    dropped,
                } => {
                    let outcome = outcomes.next().ok_or_else(|| {
                        Error::Internal(
                            "the store answered fewer exchanges than it was given".into(),
                        )
                    })?;
                    let (location, written, forwarded) = match &outcome {
                        ExchangeOutcome::Replayed { original } => (*original, 0, 0),
                        ExchangeOutcome::Retracted { .. } | ExchangeOutcome::Overtaken { .. } => {
                            (reference_id, 0, 0)
                        }
                        _ => (reference_id, items, forwards),
                    };
                    Ok(Receipt {
                        outcome,
                        resource_type,
                        location,
                        dropped,
                        items_written: written,
                        forwards_queued: forwarded,
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
        if_none_exist: Option<&IfNoneExist>,
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

    /// Notes forwarding these items under the routing rules whose `from` is the sender.
    /// Each is decided on its own: a forward the consent does not cover is not made, and
    /// restricted items stay behind.
    async fn forwards(
        &self,
        call: &Call,
        tenant: &TenantId,
        items: &[StoredItem],
    ) -> Result<(Vec<crate::store::NewNote>, Vec<AuditEntry>), Error> {
        let mut out = Vec::new();
        let mut refused = Vec::new();
        if !self
            .config
            .forward
            .iter()
            .any(|r| r.from == call.principal.org)
        {
            return Ok((out, refused));
        }
        // One read for every rule. A renewal prompt this notice opens is applied at
        // commit (`hold_forwards_behind_renewals`).
        let context = self.store.consent_context(tenant).await?;
        for rule in self
            .config
            .forward
            .iter()
            .filter(|r| r.from == call.principal.org)
        {
            let facts: Vec<StoredItem> = items
                .iter()
                .filter(|i| {
                    rule.items.is_empty() || rule.items.iter().any(|k| k == i.item.kind().as_str())
                })
                .cloned()
                .collect();
            let Some(partner) = self.config.partner(&rule.to) else {
                continue;
            };
            if facts.is_empty() {
                continue;
            }
            let reference = ReferenceId::new();
            // The sender's emergency let its own notice in; whether the tenant shares
            // with the next partner is for the consent alone.
            let forward_call = Call {
                reference_id: reference,
                request: format!("FORWARD {} to {}", call.reference_id, rule.to),
                parent: Some(call.reference_id),
                break_glass: None,
                ..call.clone()
            };
            let mut audit = forward_call.audit("forward", crate::audit::Direction::Outbound);
            audit.tenant = Some(tenant.clone());
            audit.partner = Some(rule.to.clone());
            audit.related = Some(call.reference_id);
            audit.resource_type = Some("Communication".into());
            let labels = super::labels_of(&facts);
            // A refusal is recorded and the notice goes on; failing to read the consent
            // fails the notice (the partner retries it), rather than passing for one.
            let permit = match self.decide_with(
                &forward_call,
                &context,
                Flow::Outbound,
                &rule.to,
                &labels,
                &mut audit,
            ) {
                Ok(permit) => permit,
                Err(Error::Forbidden(_)) => {
                    tracing::info!(to = %rule.to, reason = audit.reason.as_deref().unwrap_or(""), "forward not made: consent");
                    audit.outcome = crate::audit::Outcome::Refused;
                    audit.status = 403;
                    refused.push(audit);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let facts = super::without_withheld(facts, &permit.withheld);
            if facts.is_empty() {
                // Permitted, but every item it would carry is restricted: nothing goes.
                audit.outcome = crate::audit::Outcome::Refused;
                audit.status = 403;
                audit.reason = Some("every item is restricted by the tenant's consent".into());
                refused.push(audit);
                continue;
            }
            let from = self
                .config
                .partner(&call.principal.org)
                .map_or(call.principal.org.to_string(), |p| p.name.clone());
            let reason = format!("Forwarded from {from} for care coordination");
            let (_, mut note) = self
                .outbound_note(
                    &forward_call,
                    reference,
                    tenant,
                    partner,
                    crate::gateway::notes::OutboundText {
                        reason: &reason,
                        action: None,
                        deadline: None,
                        priority: crate::gateway::notes::Priority::Routine,
                        answers: None,
                        // Hearth's own covering line: no words about the tenant.
                        word_labels: Default::default(),
                    },
                    &facts,
                    audit,
                )
                .await?;
            // Its text is Hearth's own covering line, not a worker's words about the tenant.
            note.note["forward_of"] = json!(call.reference_id.to_string());
            out.push(note);
        }
        Ok((out, refused))
    }

    /// The note a partner's reply answers (`inResponseTo` naming `Communication/<ref>` or
    /// the note's reference identifier). Only notes sent to the replying partner about
    /// the same tenant count.
    async fn responding_to(
        &self,
        resource: &Value,
        call: &Call,
        tenant: &TenantId,
    ) -> Result<Option<ReferenceId>, Error> {
        // The first `inResponseTo` names the note; a reply answers one note.
        let Some(r) = resource.pointer("/inResponseTo/0") else {
            return Ok(None);
        };
        let rt = fhir::resource_type(resource).unwrap_or("Communication");
        {
            let named = r
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix("Communication/"))
                .or_else(|| {
                    (r.pointer("/identifier/system").and_then(Value::as_str)
                        == Some(fhir::REFERENCE_ID_SYSTEM))
                    .then(|| r.pointer("/identifier/value").and_then(Value::as_str))
                    .flatten()
                });
            let thread = match named.and_then(|n| n.parse::<ReferenceId>().ok()) {
                Some(reference) => self.store.note_thread(&reference).await?,
                None => None,
            };
            match thread {
                Some(t) if t.partner == call.principal.org && &t.tenant == tenant => Ok(Some(t.reference_id)),
                _ => Err(Error::Invalid(vec![
                    Issue::error(
                        IssueCode::BusinessRule,
                        "inResponseTo does not name a note Hearth sent to your organisation about this subject",
                    )
                    .at(format!("{rt}.inResponseTo[0]")),
                ])),
            }
        }
    }

    /// Whether this exchange should prompt consent renewal: a hospitalisation or
    /// discharge, or a care contact from an organisation the tenant's record has not had.
    async fn renewal_trigger(
        &self,
        call: &Call,
        tenant: &TenantId,
        items: &[StoredItem],
    ) -> Result<Option<RenewalDue>, Error> {
        let due = |reason: &str| {
            Some(RenewalDue {
                reason: reason.to_string(),
                since: rfc3339(call.at),
                reference_id: call.reference_id.to_string(),
            })
        };
        if items
            .iter()
            .any(|i| matches!(&i.item, DatasetItem::Discharge(d) if d.status == "discharged" || d.status == "admitted"))
        {
            return Ok(due("hospitalisation"));
        }
        let new_orgs: Vec<&str> = items
            .iter()
            .filter_map(|i| match &i.item {
                DatasetItem::CareContact(c) => c.organization.as_deref(),
                _ => None,
            })
            .collect();
        if new_orgs.is_empty() {
            return Ok(None);
        }
        let known: Vec<String> = self
            .store
            .tenant_items(tenant)
            .await?
            .into_iter()
            .filter_map(|i| match i.item {
                DatasetItem::CareContact(c) => c.organization,
                _ => None,
            })
            .collect();
        let changed = !known.is_empty() && new_orgs.iter().any(|o| !known.iter().any(|k| k == o));
        Ok(if changed {
            due("change-of-provider")
        } else {
            None
        })
    }

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
        let mut ex = self
            .store
            .exchange(&reference)
            .await?
            .ok_or_else(not_found)?;
        let visible = ex.resource_type == resource_type
            && (matches!(call.principal.role, Role::Housing | Role::Auditor)
                || (call.principal.role.is_partner() && call.principal.org == ex.partner));
        if !visible {
            return Err(not_found());
        }
        audit.tenant = Some(ex.tenant.clone());
        audit.related = Some(ex.reference_id);
        // Housing reads under the tenant's consent as it stands now, as the tenant view
        // and the feed do: a restriction added since the exchange hides its items here
        // too, and so does a retraction or correction since. The sender sees what it
        // sent; auditors and admins see for oversight.
        if call.principal.role == Role::Housing {
            let retired = std::mem::take(&mut ex.retired);
            ex.items.retain(|i| !retired.contains(&i.id));
            let withheld = self
                .housing_use(
                    call,
                    &ex.tenant,
                    ex.items
                        .iter()
                        .map(|i| (i.id.as_str(), i.labels.as_slice())),
                    audit,
                )
                .await?;
            ex.items = super::without_withheld(ex.items, &withheld);
        }
        audit.count = Some(ex.items.len());
        Ok(minimised_copy(&ex, &self.config.tenancy.identifier_system))
    }
}

fn first_identifier(resource: &Value) -> Option<Identifier> {
    tenancy::identifier(resource.get("identifier")?.as_array()?.first()?)
}

/// A renewal prompt a notice opens (a discharge) pauses sharing for that tenant once it
/// is committed (`share_while_renewal_due = false`): for the notice's own forwards and,
/// in a transaction Bundle, for the same tenant's later entries. Each was prepared
/// against the consent as committed, so those forwards are refused (and audited) here,
/// rather than queued, "accepted", and stopped for good at delivery.
fn hold_forwards_behind_renewals(prepared: &mut [Prepared]) {
    let mut opened: Vec<TenantId> = Vec::new();
    for p in prepared.iter_mut() {
        let Prepared::Store { exchange, .. } = p else {
            continue;
        };
        if exchange.renewal.is_some() && !opened.contains(&exchange.tenant) {
            opened.push(exchange.tenant.clone());
        }
        if opened.contains(&exchange.tenant) {
            for note in exchange.forwards.drain(..) {
                let mut audit = note.audit;
                audit.outcome = crate::audit::Outcome::Refused;
                audit.status = 403;
                audit.reason = Some(crate::consent::DenyReason::RenewalDue.code().to_string());
                audit.items_written.clear();
                exchange.refused_forwards.push(audit);
            }
        }
    }
}

/// A conditional create's criteria (the `If-None-Exist` header, or `ifNoneExist` in a
/// Bundle entry): `identifier=system|value` or `identifier=value`, the only search Hearth
/// matches. Parsed where the criteria arrive, so a bad one is reported at its own place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfNoneExist {
    pub system: Option<String>,
    pub value: String,
}

impl IfNoneExist {
    /// What a malformed condition is told.
    pub const EXPECTED: &str = "If-None-Exist must be identifier=system|value";

    /// The criteria, percent-decoded; `None` for anything but one non-empty identifier
    /// token. A `+` stays a `+` (message ids contain them; form encoding's space would
    /// miss the original and store a retry twice).
    pub fn parse(query: &str) -> Option<Self> {
        let query = query.trim().trim_start_matches('?');
        let (name, token) = query.split_once('=')?;
        if name != "identifier" || token.is_empty() || token.contains('&') {
            return None;
        }
        let token = percent_encoding::percent_decode_str(token)
            .decode_utf8()
            .ok()?;
        match token.split_once('|') {
            Some((system, value)) if !value.is_empty() => Some(Self {
                system: (!system.is_empty()).then(|| system.to_string()),
                value: value.to_string(),
            }),
            Some(_) => None,
            None => Some(Self {
                system: None,
                value: token.into_owned(),
            }),
        }
    }
}

fn check_translation(t: &Translation, resource_type: &str, retract: bool) -> Result<(), Error> {
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
            .at(format!("{resource_type}.category")),
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

/// A care plan still being drawn up (`draft`) or only proposed (`proposal`, `option`) tells
/// housing nothing it can rely on: refused at the element that says so, whoever the
/// subject is (so it says nothing about tenancy). Sent once active, it is shared.
fn not_yet_a_plan(plan: &Value) -> Result<(), Error> {
    let refuse = |element: &str, value: &str| {
        Err(Error::Invalid(vec![
            Issue::error(
                IssueCode::BusinessRule,
                format!("a care plan with {element} `{value}` is not shared with housing; send it once it is an active plan or order"),
            )
            .at(format!("CarePlan.{element}")),
        ]))
    };
    match (
        plan.get("status").and_then(Value::as_str),
        plan.get("intent").and_then(Value::as_str),
    ) {
        (Some(s @ "draft"), _) => refuse("status", s),
        (_, Some(i @ ("proposal" | "option"))) => refuse("intent", i),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_exist_takes_one_identifier_token() {
        let parse = IfNoneExist::parse;
        let token = |system: Option<&str>, value: &str| IfNoneExist {
            system: system.map(str::to_string),
            value: value.to_string(),
        };
        assert_eq!(
            parse("identifier=https://x.example/id|42"),
            Some(token(Some("https://x.example/id"), "42"))
        );
        assert_eq!(parse("?identifier=42"), Some(token(None, "42")));
        // Percent-encoding is decoded, whichever characters were encoded; `+` is itself.
        assert_eq!(
            parse("identifier=https%3A%2F%2Fx.example%2Fid%7CA%2042%26B"),
            Some(token(Some("https://x.example/id"), "A 42&B"))
        );
        assert_eq!(
            parse("identifier=urn:x|MSG+001"),
            Some(token(Some("urn:x"), "MSG+001"))
        );
        for bad in [
            "name=smith",
            "identifier=a|",
            "identifier=",
            "identifier=1&name=x",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
