//! The gateway's operations, independent of HTTP.
//!
//! * [`inbound`] — receive a partner's notice (single, or Bundle entries via
//!   prepare/commit), Hearth's minimised copy of an exchange.
//! * [`consents`] — record, change, revoke, confirm consents; renewal prompts.
//! * [`housing`] — register tenants; the tenant view, feed filtering, accounting of
//!   disclosures and the sharing preview.
//! * [`notes`] — care coordination notes to partners and their replies.
//! * [`reviews`] — joint case reviews and the high-risk register.
//!
//! Order of work for an inbound resource (fixed by design):
//! authenticate (done by the caller) → parse → validate → (an `If-None-Exist` replay
//! answers here) → link tenant → map and classify → consent decision → `inResponseTo`
//! and the "nothing maps" check (after consent, so neither reveals who is a tenant) →
//! store + audit (one durable transaction) → answer.
//! The original resource is never stored; only its digest.
//!
//! Each operation fills the audit draft it is given as it learns things (tenant,
//! consent, dropped paths, the real refusal reason). On success the operation has
//! written the record itself, atomically with its data; on failure the caller writes
//! the draft.

pub mod consents;
pub mod housing;
pub mod inbound;
pub mod notes;
pub mod reviews;

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use crate::audit::AuditEntry;
use crate::auth::{Principal, Role};
use crate::clock::{Clock, rfc3339};
use crate::config::Config;
use crate::consent::{self, BreakGlass, Decision, ExchangeRequest, Flow};
use crate::dataset::ConsentCitation;
use crate::error::Error;
use crate::fhir::{self, Issue, Profiles};
use crate::ids::{PartnerId, ReferenceId, TenantId};
use crate::mapping::Mappings;
use crate::store::Store;
use crate::tenancy::{self, LinkFailure};

pub use housing::tenant_view;
pub use inbound::{IfNoneExist, Prepared, Receipt, minimised_copy};

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

/// One authenticated call: who, when, under which reference ID, for what purpose.
#[derive(Debug, Clone)]
pub struct Call {
    pub reference_id: ReferenceId,
    pub principal: Principal,
    pub at: OffsetDateTime,
    /// `METHOD /path`, for the audit record.
    pub request: String,
    /// The enclosing Bundle, for entries.
    pub parent: Option<ReferenceId>,
    /// An emergency exchange: purpose of use and stated reason.
    pub break_glass: Option<BreakGlass>,
}

impl Call {
    /// Refuses (403) a caller whose role is not one of `roles`; `what` names what was
    /// asked for, in the refusal.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), Error> {
        if roles.contains(&self.principal.role) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{what} is not open to the {} role",
                self.principal.role.as_str()
            )))
        }
    }

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
            request: format!("{} entry[{index}]", self.request),
            parent: Some(self.reference_id),
            ..self.clone()
        }
    }

    /// The purpose of use: the emergency purpose when breaking the glass, else care
    /// coordination.
    pub fn purpose(&self) -> &str {
        self.break_glass
            .as_ref()
            .map_or(CARE_COORDINATION, |b| b.purpose.as_str())
    }
}

/// A decision that let an exchange go ahead.
#[derive(Debug, Clone)]
pub struct Permit {
    pub consent: Option<ConsentCitation>,
    pub withheld: Vec<usize>,
    /// What the decision relied on, for the store to check nothing moved before the
    /// write (a revocation in between must not be overtaken).
    pub seen: crate::store::ConsentsSeen,
}

/// The labels of each stored item, as a consent decision takes them.
fn labels_of(items: &[crate::dataset::StoredItem]) -> Vec<std::collections::BTreeSet<String>> {
    items
        .iter()
        .map(|i| i.labels.iter().cloned().collect())
        .collect()
}

/// `items` without those at the `withheld` indexes a consent decision returned.
fn without_withheld<T>(items: Vec<T>, withheld: &[usize]) -> Vec<T> {
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !withheld.contains(i))
        .map(|(_, item)| item)
        .collect()
}

impl Gateway {
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
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

    /// The one consent decision, for every exchange path. Records what it decided in the
    /// audit draft (deciding consent, break-glass, real refusal reason); a refusal comes
    /// back as the error the partner sees.
    pub async fn decide(
        &self,
        call: &Call,
        tenant: &TenantId,
        flow: Flow,
        partner: &PartnerId,
        item_labels: &[std::collections::BTreeSet<String>],
        audit: &mut AuditEntry,
    ) -> Result<Permit, Error> {
        let context = self.store.consent_context(tenant).await?;
        self.decide_with(call, &context, flow, partner, item_labels, audit)
    }

    /// [`Gateway::decide`] with the tenant's consent context already read.
    pub fn decide_with(
        &self,
        call: &Call,
        context: &crate::store::ConsentContext,
        flow: Flow,
        partner: &PartnerId,
        item_labels: &[std::collections::BTreeSet<String>],
        audit: &mut AuditEntry,
    ) -> Result<Permit, Error> {
        self.decide_items(call, context, flow, partner, item_labels, &[], audit)
    }

    /// [`Gateway::decide`] for items housing holds, each named by its item id (empty for
    /// text that is no stored item): a restriction on what the partner that sent an item
    /// may send (INF) withholds it too, from housing's own reads and from whatever
    /// housing passes on.
    pub async fn decide_held(
        &self,
        call: &Call,
        tenant: &TenantId,
        flow: Flow,
        partner: &PartnerId,
        held: Held<'_>,
        audit: &mut AuditEntry,
    ) -> Result<Permit, Error> {
        let context = self.store.consent_context(tenant).await?;
        let senders = self.senders_of(&context, held.ids).await?;
        self.decide_items(call, &context, flow, partner, held.labels, &senders, audit)
    }

    /// Who sent each of `item_ids`, when the tenant's governing consent restricts what a
    /// partner sends; otherwise nothing (such a restriction is rare, the lookup is not
    /// free).
    async fn senders_of(
        &self,
        context: &crate::store::ConsentContext,
        item_ids: &[&str],
    ) -> Result<Vec<Option<PartnerId>>, Error> {
        let by_sender = consent::governing(&context.consents)
            .is_some_and(|c| c.terms.partner_denials.iter().any(|d| !d.receiving));
        if !by_sender {
            return Ok(Vec::new());
        }
        let ids = item_ids.iter().map(|id| id.to_string()).collect();
        Ok(self.store.item_senders(ids).await?)
    }

    /// [`Gateway::decide_with`], knowing who sent each item.
    #[allow(clippy::too_many_arguments)]
    fn decide_items(
        &self,
        call: &Call,
        context: &crate::store::ConsentContext,
        flow: Flow,
        partner: &PartnerId,
        item_labels: &[std::collections::BTreeSet<String>],
        item_senders: &[Option<PartnerId>],
        audit: &mut AuditEntry,
    ) -> Result<Permit, Error> {
        let renewal_due = context.renewal_due.is_some();
        let decision = consent::decide(
            &context.consents,
            &ExchangeRequest {
                flow,
                partner,
                purpose: call.purpose(),
                item_labels,
                item_senders,
                at: call.at,
                renewal_due,
                block_while_renewal_due: !self.config.consent.share_while_renewal_due,
                break_glass: call.break_glass.as_ref(),
                label_hierarchy: self.mappings.label_hierarchy(),
            },
        );
        match decision {
            Decision::Permit {
                consent,
                withheld,
                break_glass,
            } => {
                audit.consent = consent.clone();
                if break_glass && let Some(b) = &call.break_glass {
                    audit.set_break_glass(&b.purpose, &b.reason);
                }
                Ok(Permit {
                    consent,
                    withheld,
                    seen: crate::store::ConsentsSeen::of(
                        context,
                        !self.config.consent.share_while_renewal_due,
                    ),
                })
            }
            Decision::Deny { reason, consent } => {
                audit.reason = Some(reason.code().to_string());
                audit.consent = consent;
                Err(Error::Forbidden(crate::error::NO_AGREEMENT.into()))
            }
        }
    }
}

/// Items housing holds, for [`Gateway::decide_held`]: each one's item id and labels.
#[derive(Clone, Copy)]
pub struct Held<'a> {
    pub ids: &'a [&'a str],
    pub labels: &'a [std::collections::BTreeSet<String>],
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
