//! Housing's side: tenant registration, the tenant view and feed (filtered by the
//! tenant's current restrictions), the accounting of disclosures, and a preview of what
//! a partner would receive.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Call, Gateway};
use crate::audit::{AuditEntry, Direction, Outcome};
use crate::auth::Role;
use crate::consent::{self, Flow};
use crate::dataset::{DatasetItem, StoredItem};
use crate::error::Error;
use crate::ids::{Identifier, PartnerId, TenantId};
use crate::store::{AuditQuery, FeedEntry};
use crate::tenancy::TenantRegistration;

impl Gateway {
    /// Registers a tenant and the identifiers partners know them by.
    pub async fn register_tenant(
        &self,
        call: &Call,
        reg: TenantRegistration,
        audit: &mut AuditEntry,
    ) -> Result<crate::store::Registered, Error> {
        call.require(&[Role::Housing], "registering a tenant")?;
        let ids = reg
            .identifiers_to_link(&self.config.tenancy.identifier_system)
            .map_err(Error::malformed)?;
        audit.tenant = Some(reg.tenant_id.clone());
        audit.outcome = Outcome::Accepted;
        // The store sets the status: 201 if the tenant is new, 200 if not.
        Ok(self
            .store
            .register_tenant(reg.tenant_id, ids, audit.clone())
            .await?)
    }

    /// Housing's own use of what it holds: items the tenant's current consent restricts
    /// are withheld from view. Takes each item's id and labels; returns the indexes
    /// withheld.
    pub(super) async fn housing_use<'a>(
        &self,
        call: &Call,
        tenant: &TenantId,
        items: impl Iterator<Item = (&'a str, &'a [String])>,
        audit: &mut AuditEntry,
    ) -> Result<Vec<usize>, Error> {
        let (ids, labels): (Vec<&str>, Vec<BTreeSet<String>>) = items
            .map(|(id, l)| (id, l.iter().cloned().collect()))
            .unzip();
        let permit = self
            .decide_held(
                call,
                tenant,
                Flow::HousingUse,
                &call.principal.org,
                super::Held {
                    ids: &ids,
                    labels: &labels,
                },
                audit,
            )
            .await?;
        Ok(permit.withheld)
    }

    /// The tenant view: identifiers, current consent, renewal prompt, current items.
    pub async fn tenant_view(
        &self,
        call: &Call,
        tenant: &TenantId,
        audit: &mut AuditEntry,
    ) -> Result<Value, Error> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Error::NotFound(format!("no tenant {tenant}")));
        }
        let identifiers = self.store.tenant_identifiers(tenant).await?;
        let items = self.store.tenant_items(tenant).await?;
        let withheld = self
            .housing_use(
                call,
                tenant,
                items.iter().map(|i| (i.id.as_str(), i.labels.as_slice())),
                audit,
            )
            .await?;
        let visible = super::without_withheld(items, &withheld);
        audit.count = Some(visible.len());
        audit.items_read = visible.iter().map(|i| i.id.clone()).collect();
        let consents = self.consent_summaries(tenant).await?;
        let current = consents.iter().find(|c| c.governing);
        let renewal = self.store.renewal_due(tenant).await?;
        Ok(tenant_view(
            tenant,
            &identifiers,
            current,
            renewal,
            withheld.len(),
            visible,
            call.at,
        ))
    }

    /// Marks feed items the tenant's current consent restricts: their content is left
    /// out, the entry (and the cursor) stay.
    pub async fn filter_feed(&self, call: &Call, entries: &mut [FeedEntry]) -> Result<(), Error> {
        let mut by_tenant: HashMap<TenantId, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.item.as_ref().is_some_and(|item| !item.labels.is_empty()) {
                by_tenant.entry(e.tenant.clone()).or_default().push(i);
            }
        }
        for (tenant, positions) in by_tenant {
            // Every position holds an item (see above), so indexes stay aligned.
            let labels = positions.iter().filter_map(|&i| {
                let e = &entries[i];
                let labels = e.item.as_ref()?.labels.as_slice();
                Some((e.item_id.as_deref().unwrap_or_default(), labels))
            });
            // The feed read is audited as one record; per-tenant decisions are not.
            let mut scratch = call.audit("read-feed", Direction::Outbound);
            let withheld = self
                .housing_use(call, &tenant, labels, &mut scratch)
                .await?;
            for w in withheld {
                let e = &mut entries[positions[w]];
                e.item = None;
                e.restricted = true;
            }
        }
        Ok(())
    }

    /// The accounting of disclosures: who shared what kind of information about the
    /// tenant, with whom, when, why, under which consent — in plain language.
    pub async fn disclosures(&self, tenant: &TenantId) -> Result<Vec<Disclosure>, Error> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Error::NotFound(format!("no tenant {tenant}")));
        }
        let mut out = Vec::new();
        let mut queued: HashMap<crate::ids::ReferenceId, Queued> = HashMap::new();
        // Notes whose delivery is already counted: an attempt that got the Communication
        // through but not its Task, then a retry that delivered both, is one disclosure.
        let mut delivered: std::collections::HashSet<crate::ids::ReferenceId> = Default::default();
        let mut after = 0;
        loop {
            let rows = self
                .store
                .query(AuditQuery {
                    after_seq: after,
                    limit: 1000,
                    tenant: Some(tenant.to_string()),
                    ..Default::default()
                })
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in rows {
                let Ok(mut entry) = serde_json::from_value::<AuditEntry>(row.record) else {
                    continue;
                };
                // A note is queued (housing's own, or a forward under the sender's
                // notice) and later delivered; the delivery names the note. Remember what
                // each queued note carried and, for a forward, whose notice it passed on.
                if matches!(entry.action.as_str(), "forward" | "queue-note")
                    && entry.outcome == Outcome::Accepted
                {
                    let origin = (entry.action == "forward")
                        .then(|| entry.actor.as_ref().map(|a| a.org.clone()))
                        .flatten();
                    queued.insert(entry.reference_id, (entry.items_written.clone(), origin));
                }
                // Deliveries recorded before they listed what they carried: the note's
                // facts, and for housing's own note (not a forward) its words.
                if entry.action == "deliver"
                    && entry.outcome == Outcome::Accepted
                    && entry.items_written.is_empty()
                    && let Some((items, origin)) = entry.related.and_then(|n| queued.get(&n))
                {
                    entry.items_written = items.clone();
                    if origin.is_none() {
                        entry.items_written.push(crate::audit::ItemRef {
                            kind: super::notes::NOTE_TEXT.into(),
                            id: None,
                            labels: Vec::new(),
                        });
                    }
                }
                if entry.action == "deliver"
                    && let Some(note) = entry.related
                    && !entry.items_written.is_empty()
                    && !delivered.insert(note)
                {
                    continue;
                }
                if let Some(d) = self.disclosure(&entry, &queued) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn partner_name(&self, id: &PartnerId) -> String {
        self.config
            .partner(id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    }

    /// What one audit record disclosed, if anything: a partner's notice received, or a
    /// note (housing's own or a forward) delivered. A note queued but stopped or never
    /// delivered disclosed nothing.
    fn disclosure(
        &self,
        e: &AuditEntry,
        queued: &HashMap<crate::ids::ReferenceId, Queued>,
    ) -> Option<Disclosure> {
        // A delivery that failed after the partner took the Communication (its Task
        // refused) still disclosed what the Communication carried, and lists it.
        let shared = (matches!(e.outcome, Outcome::Accepted | Outcome::Corrected)
            || (e.action == "deliver" && e.outcome == Outcome::Failed))
            && !e.items_written.is_empty();
        let counts = match e.direction {
            Direction::Inbound => e.action == "create",
            Direction::Outbound => e.action == "deliver",
            Direction::Internal => false,
        };
        if !shared || !counts {
            return None;
        }
        let partner = e.partner.as_ref()?;
        let housing = self.housing_name();
        let (from, to) = match e.direction {
            Direction::Inbound => (self.partner_name(partner), housing),
            _ => (housing, self.partner_name(partner)),
        };
        // A forward passes on another partner's notice, under a routing rule.
        let origin = e
            .related
            .and_then(|note| queued.get(&note))
            .and_then(|(_, origin)| origin.as_ref())
            .map(|o| self.partner_name(o));
        let kinds: BTreeSet<String> = e
            .items_written
            .iter()
            .map(|i| describe_kind(&i.kind).to_string())
            .collect();
        let what: Vec<String> = kinds.into_iter().collect();
        let why = match e.break_glass.as_deref() {
            Some(_) => "an emergency (break-glass, flagged for review)",
            None => "care coordination",
        };
        let under = e.consent.as_ref().map_or_else(
            || "without a consent on file".to_string(),
            |c| format!("under consent {} (version {})", c.id, c.version),
        );
        let day = e.recorded.get(..10).unwrap_or(&e.recorded).to_string();
        let shared = match &origin {
            Some(o) => format!("passed on {} from {o}", what.join(", ")),
            None => format!("shared {}", what.join(", ")),
        };
        Some(Disclosure {
            summary: format!("On {day}, {from} {shared} with {to} for {why}, {under}."),
            forwarded_from: origin,
            when: e.recorded.clone(),
            from,
            to,
            what,
            why: why.to_string(),
            consent: e.consent.clone(),
            // For a delivery, the note housing can look up, not the attempt.
            reference_id: match e.action.as_str() {
                "deliver" => e.related.unwrap_or(e.reference_id).to_string(),
                _ => e.reference_id.to_string(),
            },
            emergency: e.break_glass.is_some(),
        })
    }

    pub fn housing_name(&self) -> String {
        self.config
            .housing()
            .map_or_else(|| "the housing provider".to_string(), |p| p.name.clone())
    }

    /// What `partner` would receive about the tenant under the current consent, before
    /// anything is sent. Housing sees the reason and which of the items it may see would
    /// stay behind; `audit` records the items shown.
    pub async fn preview(
        &self,
        call: &Call,
        tenant: &TenantId,
        partner: &PartnerId,
        audit: &mut AuditEntry,
    ) -> Result<Value, Error> {
        if !self.store.tenant_exists(tenant).await? {
            return Err(Error::NotFound(format!("no tenant {tenant}")));
        }
        if self.config.partner(partner).is_none() {
            return Err(Error::malformed_at(
                format!("`{partner}` is not a configured partner"),
                "partner",
            ));
        }
        // The same decisions a delivery would get, without break-glass: a preview is routine.
        let routine = Call {
            break_glass: None,
            ..call.clone()
        };
        // What the consent keeps from housing itself is neither shown nor described here:
        // like the tenant view, the preview counts it and no more.
        let items = self.store.tenant_items(tenant).await?;
        let private = self
            .housing_use(
                &routine,
                tenant,
                items.iter().map(|i| (i.id.as_str(), i.labels.as_slice())),
                audit,
            )
            .await?;
        let items = super::without_withheld(items, &private);
        audit.count = Some(items.len());
        audit.items_read = items.iter().map(|i| i.id.clone()).collect();
        let labels: Vec<BTreeSet<String>> = items
            .iter()
            .map(|i| i.labels.iter().cloned().collect())
            .collect();
        let mut scratch = routine.audit("preview", crate::audit::Direction::Internal);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let decision = self
            .decide_held(
                &routine,
                tenant,
                Flow::Outbound,
                partner,
                super::Held {
                    ids: &ids,
                    labels: &labels,
                },
                &mut scratch,
            )
            .await;
        Ok(match decision {
            Ok(super::Permit {
                consent, withheld, ..
            }) => {
                let (kept, held): (Vec<_>, Vec<_>) = items
                    .into_iter()
                    .enumerate()
                    .partition(|(i, _)| !withheld.contains(i));
                json!({
                    "partner": partner,
                    "decision": "permit",
                    "consent": consent,
                    "would_receive": kept.into_iter().map(|(_, i)| i).collect::<Vec<_>>(),
                    "withheld": held.into_iter().map(|(_, i)| json!({"id": i.id, "item": i.item.kind(), "labels": i.labels})).collect::<Vec<_>>(),
                    "restricted_items": private.len(),
                })
            }
            Err(Error::Forbidden(_)) => json!({
                "partner": partner,
                "decision": "deny",
                "reason": scratch.reason,
                "consent": scratch.consent,
                "would_receive": [],
                "restricted_items": private.len(),
            }),
            // The consent could not be read: that is no decision to preview.
            Err(e) => return Err(e),
        })
    }
}

/// What a queued note carried, and for a forward the partner whose notice it passed on.
type Queued = (Vec<crate::audit::ItemRef>, Option<PartnerId>);

/// One line of the accounting of disclosures.
#[derive(Debug, Clone, Serialize)]
pub struct Disclosure {
    pub summary: String,
    pub when: String,
    pub from: String,
    pub to: String,
    /// For a forward: the partner whose notice it passed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_from: Option<String>,
    pub what: Vec<String>,
    pub why: String,
    pub consent: Option<crate::dataset::ConsentCitation>,
    pub reference_id: String,
    pub emergency: bool,
}

fn describe_kind(kind: &str) -> &str {
    match kind {
        "care_contact" => "care contact details",
        "next_appointment" => "appointment details",
        "medication_change" => "a medication change notice",
        "discharge" => "discharge and follow-up details",
        "risk_flag" => "tenancy risk flags",
        "accommodation_need" => "accommodation needs",
        super::notes::NOTE_TEXT => "a note in the sender's own words",
        other => other,
    }
}

/// The housing view of a tenant: current items with provenance, the consent that
/// governs, and any renewal prompt.
pub fn tenant_view(
    tenant: &TenantId,
    identifiers: &[Identifier],
    consent: Option<&super::consents::ConsentSummary>,
    renewal_due: Option<consent::RenewalDue>,
    restricted: usize,
    items: Vec<StoredItem>,
    now: time::OffsetDateTime,
) -> Value {
    json!({
        "tenant_id": tenant,
        "identifiers": identifiers,
        "consent": consent,
        "renewal_due": renewal_due,
        "restricted_items": restricted,
        "now": picture_now(&items, now),
        "items": items,
    })
}

/// The picture a worker needs at a glance, from the items held: the next appointment
/// still to come, and each risk flag as its latest notice left it. Partners send new
/// notices rather than correcting old ones, so `items` keeps every appointment and every
/// flag notice received; this says which of them holds now.
fn picture_now(items: &[StoredItem], now: time::OffsetDateTime) -> Value {
    let next_appointment = items
        .iter()
        .filter_map(|i| {
            let DatasetItem::NextAppointment(a) = &i.item else {
                return None;
            };
            let open = a
                .status
                .as_ref()
                .is_none_or(|s| matches!(s.as_str(), "booked" | "requested"));
            let start = crate::consent::parse_fhir_instant(&a.start, false)?;
            (open && start >= now).then_some((start, i))
        })
        .min_by_key(|(start, _)| *start)
        .map(|(_, i)| i);
    let mut flags: Vec<&StoredItem> = Vec::new();
    for i in items {
        let DatasetItem::RiskFlag(f) = &i.item else {
            continue;
        };
        let same = flags
            .iter()
            .position(|held| matches!(&held.item, DatasetItem::RiskFlag(h) if h.flag == f.flag));
        match same {
            Some(at) if flags[at].provenance.received_at >= i.provenance.received_at => {}
            Some(at) => flags[at] = i,
            None => flags.push(i),
        }
    }
    json!({"next_appointment": next_appointment, "risk_flags": flags})
}
