//! Care coordination notes: a housing worker's structured request to a partner, built
//! into FHIR from dataset items only and queued for durable delivery.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Call, Gateway};
use crate::audit::{AuditEntry, ItemRef, Outcome};
use crate::auth::Role;
use crate::clock::rfc3339;
use crate::consent::Flow;
use crate::dataset::{DatasetItem, ItemKind, StoredItem};
use crate::error::Error;
use crate::fhir::{self, Issue, IssueCode};
use crate::ids::{Identifier, PartnerId, TenantId};
use crate::store::{NewNote, NoteThread, StoredExchange};

/// The fields of a note a worker writes in their own words, as [`Gateway::words_labels`]
/// reads them.
const WORD_FIELDS: [&str; 2] = ["reason", "requested_action"];

/// Longest reason or requested action a worker may write: the same bound as an item's
/// free text.
pub const MAX_TEXT: usize = crate::dataset::MAX_TEXT;

/// `POST /housing/notes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    pub tenant_id: TenantId,
    /// The partner the note is for.
    pub to: PartnerId,
    /// Why the worker is getting in touch.
    pub reason: String,
    /// Relevant facts: dataset items, by id (`{"item_id": "…"}`) or written out
    /// (`{"item": "next_appointment", "start": "…"}`). Nothing else is accepted.
    #[serde(default)]
    pub facts: Vec<Value>,
    pub requested_action: Option<String>,
    /// When the action is needed by (a FHIR date or dateTime).
    pub deadline: Option<String>,
    /// `routine` (default) or `urgent`.
    #[serde(default)]
    pub priority: Priority,
    /// The reference ID of the partner's notice this note answers (a discharge notice
    /// housing acts on, say): the partner receives it threaded to its own notice.
    pub in_response_to: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Routine,
    Urgent,
}

impl Priority {
    /// The FHIR `request-priority` code.
    fn code(self) -> &'static str {
        match self {
            Priority::Routine => "routine",
            Priority::Urgent => "urgent",
        }
    }
}

impl Gateway {
    /// Notes as housing may read them now. A fact retracted or corrected since the note
    /// was written, or one the tenant's current consent keeps from housing, is shown by
    /// its id only: the same rule as the feed and the tenant view.
    pub async fn notes_for_housing(
        &self,
        call: &Call,
        threads: &mut [NoteThread],
    ) -> Result<(), Error> {
        // One read for every fact of every thread, not one per thread.
        let ids: Vec<String> = threads
            .iter()
            .flat_map(|t| fact_refs(&t.note))
            .filter_map(|f| f.id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let retired: std::collections::HashSet<String> =
            self.store.retired_items(ids).await?.into_iter().collect();
        for t in threads {
            if t.note["facts"].as_array().is_none_or(Vec::is_empty) {
                continue;
            }
            let facts = fact_refs(&t.note);
            // The read is audited as one record; per-note decisions are not.
            let mut scratch = call.audit("read-note", crate::audit::Direction::Internal);
            let withheld = self
                .housing_use(
                    call,
                    &t.tenant,
                    facts
                        .iter()
                        .map(|f| (f.id.as_deref().unwrap_or_default(), f.labels.as_slice())),
                    &mut scratch,
                )
                .await?;
            let Some(facts) = t.note.get_mut("facts").and_then(Value::as_array_mut) else {
                continue;
            };
            for (i, fact) in facts.iter_mut().enumerate() {
                let id = fact["id"].clone();
                if id.as_str().is_some_and(|id| retired.contains(id)) {
                    *fact = json!({"id": id, "retired": true});
                } else if withheld.contains(&i) {
                    *fact = json!({"id": id, "restricted": true});
                }
            }
        }
        Ok(())
    }

    /// Validates a note, decides consent for the receiving partner, builds the FHIR the
    /// partner will receive, and queues it durably. Returns the stored note.
    pub async fn queue_note(
        &self,
        call: &Call,
        req: NoteRequest,
        audit: &mut AuditEntry,
    ) -> Result<Value, Error> {
        audit.tenant = Some(req.tenant_id.clone());
        audit.partner = Some(req.to.clone());
        audit.resource_type = Some("Communication".into());
        call.require(&[Role::Housing], "sending a care coordination note")?;
        let mut issues = Vec::new();
        let partner = self.config.partner(&req.to);
        match partner {
            None => issues.push(
                Issue::error(
                    IssueCode::Value,
                    format!("`{}` is not a configured partner", req.to),
                )
                .at("to"),
            ),
            Some(p) if p.fhir_base_url.is_none() => issues.push(
                Issue::error(
                    IssueCode::BusinessRule,
                    format!("no delivery endpoint is configured for `{}`", req.to),
                )
                .at("to"),
            ),
            Some(_) => {}
        }
        for (field, text) in [
            ("reason", Some(&req.reason)),
            ("requested_action", req.requested_action.as_ref()),
        ] {
            if let Some(t) = text
                && (t.trim().is_empty() || t.chars().count() > MAX_TEXT)
            {
                issues.push(
                    Issue::error(IssueCode::Value, format!("1 to {MAX_TEXT} characters")).at(field),
                );
            }
        }
        let deadline = req
            .deadline
            .as_deref()
            .map(|d| (d, crate::consent::parse_fhir_instant(d, true)));
        if let Some((_, None)) = deadline {
            issues.push(
                Issue::error(IssueCode::Value, "expected a date such as 2026-11-27").at("deadline"),
            );
        }
        if req.requested_action.is_none() && deadline.is_some() {
            issues.push(
                Issue::error(IssueCode::Invariant, "a deadline needs a requested_action")
                    .at("deadline"),
            );
        }
        if !self.store.tenant_exists(&req.tenant_id).await? {
            issues.push(
                Issue::error(
                    IssueCode::BusinessRule,
                    "no tenant is registered with this id",
                )
                .at("tenant_id"),
            );
        }
        let answers = match &req.in_response_to {
            None => None,
            Some(r) => {
                let notice = self.notice_answered(r, &req.to, &req.tenant_id).await?;
                if notice.is_none() {
                    issues.push(
                        Issue::error(
                            IssueCode::BusinessRule,
                            format!(
                                "no notice {} has sent about this tenant has this reference ID",
                                req.to
                            ),
                        )
                        .at("in_response_to"),
                    );
                }
                notice
            }
        };
        if !issues.is_empty() {
            return Err(Error::Invalid(issues));
        }
        let facts = self.resolve_facts(&req.tenant_id, &req.facts).await?;

        // Consent for the receiving partner, now; the relay asks again before each attempt.
        // The worker's own words count as two more items (see `words_labels`).
        let words = self.words_labels(Some(&req.reason), req.requested_action.as_deref());
        let mut labels = super::labels_of(&facts);
        labels.extend(words.iter().cloned());
        // The facts by item id (a restriction on what their sender may send holds them
        // back too); the two texts are no stored item.
        let ids: Vec<&str> = facts
            .iter()
            .map(|f| f.id.as_str())
            .chain(["", ""])
            .collect();
        let held = super::Held {
            ids: &ids,
            labels: &labels,
        };
        let permit = match self
            .decide_held(call, &req.tenant_id, Flow::Outbound, &req.to, held, audit)
            .await
        {
            Ok(p) => p,
            // A refusal is explained; a consent that could not be read is not one.
            Err(Error::Forbidden(_)) => {
                return Err(Error::Forbidden(format!(
                    "the tenant's consent does not allow sharing with {} ({})",
                    req.to,
                    audit.reason.as_deref().unwrap_or("no consent")
                )));
            }
            Err(e) => return Err(e),
        };
        if !permit.withheld.is_empty() {
            return Err(Error::Invalid(
                permit
                    .withheld
                    .iter()
                    .map(|&i| match i.checked_sub(facts.len()).and_then(|t| WORD_FIELDS.get(t)) {
                        // The words are the worker's own: not quoted back.
                        Some(field) => Issue::error(
                            IssueCode::BusinessRule,
                            format!("this text mentions information the tenant's consent withholds from {}; rephrase it without that", req.to),
                        )
                        .at(*field),
                        None => Issue::error(
                            IssueCode::BusinessRule,
                            format!("the tenant's consent restricts this item for {}", req.to),
                        )
                        .at(format!("facts[{i}]")),
                    })
                    .collect(),
            ));
        }

        let partner = partner.expect("checked above").clone();
        let (note, new_note) = self
            .outbound_note(
                call,
                call.reference_id,
                &req.tenant_id,
                &partner,
                OutboundText {
                    reason: &req.reason,
                    action: req.requested_action.as_deref(),
                    deadline: req.deadline.as_deref(),
                    priority: req.priority,
                    answers: answers.as_ref(),
                    word_labels: words.into_iter().flatten().collect(),
                },
                &facts,
                audit.clone(),
            )
            .await?;
        *audit = new_note.audit.clone();
        self.store.queue_note(new_note, Some(permit.seen)).await?;
        Ok(note)
    }

    /// Builds a note for `partner` (its stored form and the FHIR it will receive) with
    /// its audit record, ready to queue. Shared by notes and forwarded notices.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn outbound_note(
        &self,
        call: &Call,
        reference_id: crate::ids::ReferenceId,
        tenant: &TenantId,
        partner: &crate::config::PartnerConfig,
        text: OutboundText<'_>,
        facts: &[StoredItem],
        mut audit: AuditEntry,
    ) -> Result<(Value, NewNote), Error> {
        let identifiers = self.store.tenant_identifiers(tenant).await?;
        let subject = partner
            .identifier_system
            .as_ref()
            .and_then(|sys| identifiers.iter().find(|i| &i.system == sys))
            .cloned()
            .unwrap_or_else(|| {
                Identifier::new(&self.config.tenancy.identifier_system, tenant.as_str())
            });
        let reference = reference_id.to_string();
        let mut note = json!({
            "reason": text.reason,
            "facts": facts,
            "requested_action": text.action,
            "deadline": text.deadline,
            "priority": text.priority,
            "author": call.principal.id,
        });
        if let Some(ex) = text.answers {
            note["in_response_to"] = json!(ex.reference_id.to_string());
        }
        // What the worker's words were read as carrying, for the worker to see; the relay
        // reads the words again before each attempt.
        if !text.word_labels.is_empty() {
            note["text_labels"] = json!(text.word_labels);
        }
        let payload = note_bundle(&NoteParts {
            reference: &reference,
            sent: &rfc3339(call.at),
            subject: &subject,
            partner: &partner.id,
            partner_name: &partner.name,
            sender_name: &self.housing_name(),
            reason: text.reason,
            facts,
            action: text.action,
            deadline: text.deadline,
            priority: text.priority,
            answers: text.answers.map(|ex| &ex.identifier),
        });
        audit.items_written = facts
            .iter()
            .map(|f| ItemRef {
                kind: f.item.kind().as_str().to_string(),
                id: Some(f.id.clone()),
                labels: f.labels.clone(),
            })
            .collect();
        audit.outcome = Outcome::Accepted;
        audit.status = 201;
        let created_ms = unix_ms(call.at);
        let new_note = NewNote {
            reference_id,
            tenant: tenant.clone(),
            partner: partner.id.clone(),
            note: note.clone(),
            payload,
            created_at: rfc3339(call.at),
            created_ms,
            give_up_ms: self.config.relay.give_up_ms(created_ms),
            audit,
        };
        Ok((note, new_note))
    }

    /// Whether a queued note is a forward (a partner's notice passed on under a routing
    /// rule) rather than a housing worker's note: marked so since forwards were, and
    /// before that, written by the sending partner's principal.
    pub(crate) fn is_forward(&self, note: &Value) -> bool {
        note.get("forward_of").is_some()
            || note["author"].as_str().is_some_and(|author| {
                self.config
                    .principals
                    .iter()
                    .any(|p| p.id == author && p.role.is_partner())
            })
    }

    /// The labels a note's own words carry, per field of [`WORD_FIELDS`] (reason,
    /// requested action): "her methadone dose changed" is substance-use information
    /// whatever facts are attached.
    pub(crate) fn words_labels(
        &self,
        reason: Option<&str>,
        action: Option<&str>,
    ) -> [std::collections::BTreeSet<String>; 2] {
        [reason, action].map(|t| t.map(|t| self.mappings.text_labels(t)).unwrap_or_default())
    }

    /// The partner's notice `reference` names, if it is one `partner` sent about
    /// `tenant` and has not retracted: what a note may answer, when it is queued and when
    /// it is delivered. Anything else is answered alike (not found), whoever's it is.
    pub(crate) async fn notice_answered(
        &self,
        reference: &str,
        partner: &PartnerId,
        tenant: &TenantId,
    ) -> Result<Option<StoredExchange>, Error> {
        let Ok(id) = reference.parse::<crate::ids::ReferenceId>() else {
            return Ok(None);
        };
        Ok(self.store.exchange(&id).await?.filter(|ex| {
            &ex.partner == partner
                && &ex.tenant == tenant
                && ex.resource_type == "Communication"
                && ex.state != "retracted"
        }))
    }

    async fn resolve_facts(
        &self,
        tenant: &TenantId,
        facts: &[Value],
    ) -> Result<Vec<StoredItem>, Error> {
        let current = self.store.tenant_items(tenant).await?;
        let mut out = Vec::new();
        let mut issues = Vec::new();
        for (i, fact) in facts.iter().enumerate() {
            let at = format!("facts[{i}]");
            let Some(obj) = fact.as_object() else {
                issues.push(Issue::error(IssueCode::Structure, "a fact is an object").at(at));
                continue;
            };
            if let Some(id) = obj.get("item_id").and_then(Value::as_str) {
                match current.iter().find(|c| c.id == id) {
                    Some(item) if obj.len() == 1 => out.push(item.clone()),
                    Some(_) => issues.push(
                        Issue::error(IssueCode::Structure, "a fact by id has only `item_id`")
                            .at(at),
                    ),
                    None => issues.push(
                        Issue::error(
                            IssueCode::BusinessRule,
                            "no current dataset item of this tenant has this id",
                        )
                        .at(at),
                    ),
                }
                continue;
            }
            let mut fields = obj.clone();
            let kind = fields
                .remove("item")
                .and_then(|k| k.as_str().and_then(ItemKind::parse));
            let Some(kind) = kind else {
                issues.push(
                    Issue::error(IssueCode::Value, "a fact is `{\"item_id\": …}` or a dataset item with `item` naming its kind")
                        .at(at),
                );
                continue;
            };
            // A medication is sensitive by its code, which a typed fact does not carry:
            // only the stored item (with its labels) may be shared.
            if kind == ItemKind::MedicationChange {
                issues.push(
                    Issue::error(
                        IssueCode::BusinessRule,
                        "a medication change is shared by its `item_id`, so its sensitivity travels with it",
                    )
                    .at(at),
                );
                continue;
            }
            // The same sensitivity rules as a mapped item (a withdrawal-risk flag is
            // substance-use information however it was written).
            let labels = self
                .mappings
                .item_labels(kind, &fields)
                .into_iter()
                .collect();
            match DatasetItem::from_fields(kind, Value::Object(fields)) {
                Ok(item) => out.push(StoredItem {
                    id: format!("fact-{i}"),
                    item,
                    labels,
                    provenance: crate::dataset::Provenance {
                        partner: crate::ids::PartnerId::new("housing"),
                        reference_id: crate::ids::ReferenceId::new(),
                        received_at: String::new(),
                        consent: None,
                    },
                }),
                Err(e) => issues.push(
                    Issue::error(
                        IssueCode::BusinessRule,
                        format!("not within the integration dataset: {e}"),
                    )
                    .at(at),
                ),
            }
        }
        if issues.is_empty() {
            Ok(out)
        } else {
            Err(Error::Invalid(issues))
        }
    }
}

/// The words of an outbound note.
pub(crate) struct OutboundText<'a> {
    pub reason: &'a str,
    pub action: Option<&'a str>,
    pub deadline: Option<&'a str>,
    pub priority: Priority,
    /// The partner's notice it answers.
    pub answers: Option<&'a StoredExchange>,
    /// The labels its words carry (see [`Gateway::words_labels`]).
    pub word_labels: std::collections::BTreeSet<String>,
}

pub fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

struct NoteParts<'a> {
    reference: &'a str,
    sent: &'a str,
    subject: &'a Identifier,
    partner: &'a PartnerId,
    partner_name: &'a str,
    sender_name: &'a str,
    reason: &'a str,
    facts: &'a [StoredItem],
    action: Option<&'a str>,
    deadline: Option<&'a str>,
    priority: Priority,
    /// The partner's own identifier of the notice this note answers.
    answers: Option<&'a Identifier>,
}

/// The FHIR a partner receives: a transaction Bundle with the Communication and, when an
/// action with a deadline is asked for, a Task — each created only if absent
/// (`ifNoneExist` on Hearth's reference identifier), so a retry never duplicates.
/// Built from the note and its dataset items; nothing from any inbound resource.
fn note_bundle(n: &NoteParts) -> Value {
    let id_of = |suffix: &str| json!({"system": fhir::REFERENCE_ID_SYSTEM, "value": format!("{}{suffix}", n.reference)});
    let subject = json!({"identifier": {"system": n.subject.system, "value": n.subject.value}});
    let recipient =
        json!({"reference": format!("Organization/{}", n.partner), "display": n.partner_name});
    let mut payload = vec![json!({"contentString": format!("Reason for contact: {}", n.reason)})];
    payload.extend(
        n.facts
            .iter()
            .map(|f| json!({"contentString": describe(&f.item)})),
    );
    if let Some(a) = n.action {
        let due = n.deadline.map(|d| format!(" (by {d})")).unwrap_or_default();
        payload.push(json!({"contentString": format!("Requested action: {a}{due}")}));
    }
    let communication_url = format!("urn:uuid:{}", uuid_like(n.reference, 'c'));
    let mut communication = json!({
        "resourceType": "Communication",
        "identifier": [id_of("")],
        "status": "completed",
        "category": [{"coding": [{"system": format!("{}/CodeSystem/notice-kind", fhir::HEARTH_BASE), "code": "care-coordination-note"}]}],
        "priority": n.priority.code(),
        "subject": subject,
        "sent": n.sent,
        "recipient": [recipient],
        "sender": {"display": n.sender_name},
        "payload": payload,
    });
    // Threaded to the partner's notice by the identifier the partner gave it, which is
    // all of it Hearth keeps.
    if let Some(i) = n.answers {
        communication["inResponseTo"] = json!([{"type": "Communication", "identifier": {"system": i.system, "value": i.value}}]);
    }
    let mut entries = vec![json!({
        "fullUrl": communication_url,
        "resource": communication,
        "request": {"method": "POST", "url": "Communication", "ifNoneExist": format!("identifier={}|{}", fhir::REFERENCE_ID_SYSTEM, n.reference)},
    })];
    if let (Some(action), Some(deadline)) = (n.action, n.deadline) {
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid_like(n.reference, 't')),
            "resource": {
                "resourceType": "Task",
                "identifier": [id_of("-task")],
                "status": "requested",
                "intent": "order",
                "priority": n.priority.code(),
                "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
                "description": action,
                // By identifier too: a partner taking plain creates has no Bundle in
                // which the `urn:uuid:` means anything.
                "focus": {"reference": communication_url, "identifier": id_of("")},
                "for": subject,
                "authoredOn": n.sent,
                "owner": recipient,
                "restriction": {"period": {"end": deadline}},
            },
            "request": {"method": "POST", "url": "Task", "ifNoneExist": format!("identifier={}|{}-task", fhir::REFERENCE_ID_SYSTEM, n.reference)},
        }));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// A stable UUID-shaped id derived from the reference ID, for `urn:uuid:` full URLs.
fn uuid_like(reference: &str, salt: char) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(format!("{reference}{salt}").as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// One line per fact, in plain words, from the dataset item's own fields.
fn describe(item: &DatasetItem) -> String {
    let opt = |label: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("; {label} {v}"))
            .unwrap_or_default()
    };
    match item {
        DatasetItem::CareContact(c) => format!(
            "Care contact: {}{}{}",
            c.coordinator.as_deref().unwrap_or("(unnamed)"),
            opt("organisation", &c.organization),
            c.routes
                .iter()
                .find(|r| r.preferred)
                .map(|r| format!("; preferred {} {}", r.system, r.value))
                .unwrap_or_default()
        ),
        DatasetItem::NextAppointment(a) => format!(
            "Next appointment: {}{}{}{}",
            a.start,
            opt("kind", &a.kind),
            opt("at", &a.place),
            match a.transport_needed {
                Some(true) => "; transport support needed",
                _ => "",
            }
        ),
        DatasetItem::MedicationChange(m) => format!(
            "Medication change: {} {:?}{}{}",
            m.medication,
            m.change,
            opt("from", &m.effective),
            opt("instruction:", &m.instruction)
        ),
        DatasetItem::Discharge(d) => format!(
            "Discharge: {}{}{}",
            d.status,
            opt("on", &d.date),
            opt("from", &d.facility)
        ),
        DatasetItem::RiskFlag(r) => format!(
            "Risk flag: {:?} ({}){}",
            r.flag,
            r.status,
            opt("since", &r.since)
        ),
        DatasetItem::AccommodationNeed(a) => format!(
            "Accommodation need: {:?}{}{}",
            a.need,
            opt("language", &a.language.as_ref().map(|c| c.to_string())),
            match a.interpreter {
                Some(true) => "; interpreter needed",
                _ => "",
            }
        ),
    }
}

/// The kind under which a delivered note's own text is recorded among what it shared
/// (its labels are those its words carry): the accounting of disclosures counts it.
pub const NOTE_TEXT: &str = "note_text";

/// The facts a note carries, as the audit names items (kind, id, labels): what a
/// delivery disclosed, what must still be current, and what a restriction may stop.
pub(crate) fn fact_refs(note: &Value) -> Vec<crate::audit::ItemRef> {
    note["facts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| crate::audit::ItemRef {
            kind: f["item"].as_str().unwrap_or_default().to_string(),
            id: f["id"].as_str().map(str::to_string),
            labels: f["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect(),
        })
        .collect()
}
