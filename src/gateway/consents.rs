//! Consent operations: record (FHIR or the housing form), change, revoke, confirm a
//! partner's proposal, prompt renewal. Housing is the custodian: only housing (or an
//! admin) makes a consent that is enforced; a partner's Consent is kept as `proposed`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::{Call, Gateway};
use crate::audit::AuditEntry;
use crate::auth::Role;
use crate::clock::rfc3339;
use crate::consent::fhir::{GivenBy, terms_to_fhir};
use crate::consent::form::ConsentForm;
use crate::consent::{self, ConsentStatus, ConsentTerms, RenewalDue};
use crate::error::{Error, NO_AGREEMENT};
use crate::fhir::{self, Issue, IssueCode};
use crate::ids::{Identifier, PartnerId, TenantId};
use crate::store::{ConsentSlot, StoredConsent};
use crate::tenancy::LinkFailure;

/// Roles that keep the consent registry.
const CUSTODIANS: &[Role] = &[Role::Housing];

/// A consent in plain terms, for the housing API.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentSummary {
    pub id: String,
    pub version: u32,
    pub tenant_id: TenantId,
    pub status: ConsentStatus,
    /// `share` or `refuse`.
    pub decision: &'static str,
    pub recorded: String,
    pub may_send_to_housing: Vec<PartnerId>,
    pub may_receive_from_housing: Vec<PartnerId>,
    pub purposes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// The last instant sharing is allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    pub restrictions: Vec<String>,
    /// Restrictions for one partner only, when it receives from housing.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub withhold_from: BTreeMap<PartnerId, Vec<String>>,
    /// Restrictions for one partner only, when it sends to housing (FHIR consents only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub withhold_when_sent_by: BTreeMap<PartnerId, Vec<String>>,
    /// Whether this version is the one that governs the tenant's exchanges now.
    pub governing: bool,
}

/// What `POST /fhir/Consent` did.
#[derive(Debug)]
pub enum RecordedConsent {
    /// Housing's new version, stored and enforced.
    Stored(Box<StoredConsent>),
    /// A partner's proposal, taken for housing to confirm with the tenant.
    Proposed,
}

/// A tenant whose consent needs renewing: a renewal prompt an event opened
/// (hospitalisation, change of provider, tenant request), or a governing consent that
/// ends within `consent.expiry_notice_days` (`expiring`) or has ended (`expired`).
#[derive(Debug, Clone, Serialize)]
pub struct RenewalListing {
    pub tenant_id: TenantId,
    /// The first of `reasons`: `expired` if the consent has ended (sharing has stopped),
    /// else an open prompt's event, else `expiring`.
    pub reason: String,
    /// Every reason the tenant is due, in that order. One listing per tenant.
    pub reasons: Vec<String>,
    /// Since when it has been due: the earliest of the reasons.
    pub since: String,
    /// `since` as an instant: prompts and consents write their times with different
    /// offsets and precision, so their text does not sort as time does.
    #[serde(skip)]
    since_at: OffsetDateTime,
    /// The exchange or request that opened a prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    /// The consent that ends, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends: Option<String>,
}

impl Gateway {
    /// Housing's renewal list at `at`: open prompts, then consents ending soon or ended,
    /// oldest first. Sharing stops by itself when a consent ends; this is how the worker
    /// hears of it in time to ask the tenant.
    pub async fn consents_due(&self, at: OffsetDateTime) -> Result<Vec<RenewalListing>, Error> {
        let mut due: Vec<RenewalListing> = self
            .store
            .renewals_due()
            .await?
            .into_iter()
            .map(|(tenant_id, d)| RenewalListing {
                // Hearth writes prompts' times itself; one it cannot read sorts first (the
                // most overdue), and the operator hears of it.
                since_at: OffsetDateTime::parse(&d.since, &Rfc3339).unwrap_or_else(|_| {
                    tracing::warn!(tenant = %tenant_id, "a renewal prompt's time is not RFC 3339; listed first");
                    OffsetDateTime::UNIX_EPOCH
                }),
                tenant_id,
                reasons: vec![d.reason.clone()],
                reason: d.reason,
                since: d.since,
                reference_id: Some(d.reference_id),
                consent_id: None,
                ends: None,
            })
            .collect();
        // At most one open prompt per tenant (the store keeps it so).
        let prompted: HashMap<TenantId, usize> = due
            .iter()
            .enumerate()
            .map(|(i, d)| (d.tenant_id.clone(), i))
            .collect();
        let notice = time::Duration::days(self.config.consent.expiry_notice_days.into());
        for (tenant_id, versions) in self.store.all_consents().await? {
            let Some(governing) = consent::governing(&versions) else {
                continue;
            };
            // An inactive consent, or a refusal (the tenant opted out), has nothing to renew.
            let renewable =
                governing.terms.status == ConsentStatus::Active && !governing.terms.refused;
            let Some(end) = governing.terms.end.filter(|_| renewable) else {
                continue;
            };
            // A notice period longer than the calendar holds: due from the start.
            let from = end
                .checked_sub(notice)
                .filter(|f| *f >= OffsetDateTime::UNIX_EPOCH)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            if at < from {
                continue;
            }
            let expired = at >= end;
            let reason = if expired { "expired" } else { "expiring" };
            let since_at = if expired { end } else { from }.to_offset(UtcOffset::UTC);
            // A tenant with an open prompt as well is listed once, with both reasons. An
            // ended consent comes first: sharing has stopped, which is the more urgent.
            match prompted.get(&tenant_id).map(|&i| &mut due[i]) {
                Some(listed) => {
                    if expired {
                        listed.reasons.insert(0, reason.into());
                        listed.reason = reason.into();
                    } else {
                        listed.reasons.push(reason.into());
                    }
                    if since_at < listed.since_at {
                        listed.since_at = since_at;
                        listed.since = rfc3339(since_at);
                    }
                    listed.consent_id = Some(governing.id.clone());
                    listed.ends = Some(rfc3339(end));
                }
                None => due.push(RenewalListing {
                    tenant_id,
                    reason: reason.into(),
                    reasons: vec![reason.into()],
                    since: rfc3339(since_at),
                    since_at,
                    reference_id: None,
                    consent_id: Some(governing.id.clone()),
                    ends: Some(rfc3339(end)),
                }),
            }
        }
        due.sort_by(|a, b| {
            a.since_at
                .cmp(&b.since_at)
                .then_with(|| a.tenant_id.cmp(&b.tenant_id))
        });
        Ok(due)
    }

    fn partner_for(&self) -> impl Fn(&str) -> Option<PartnerId> + '_ {
        |reference| {
            let id = reference.strip_prefix("Organization/")?;
            self.config
                .partners
                .iter()
                .find(|p| p.id.as_str() == id)
                .map(|p| p.id.clone())
        }
    }

    /// The id of the tenant's own consent (the one housing keeps versioning), if any.
    async fn tenant_consent_id(&self, tenant: &TenantId) -> Result<Option<String>, Error> {
        let all = self.store.consents(tenant).await?;
        Ok(consent::latest_versions(&all)
            .into_iter()
            // Only a consent that governs (or did): not a partner's proposal, pending or
            // declined.
            .filter(|c| {
                matches!(
                    c.terms.status,
                    ConsentStatus::Active | ConsentStatus::Inactive
                )
            })
            .max_by_key(|c| c.terms.recorded)
            .map(|c| c.id.clone()))
    }

    pub fn summary(&self, stored: &StoredConsent, governing: bool) -> ConsentSummary {
        let t = &stored.version.terms;
        ConsentSummary {
            id: stored.version.id.clone(),
            version: stored.version.version,
            tenant_id: stored.tenant.clone(),
            status: t.status,
            decision: if t.refused { "refuse" } else { "share" },
            recorded: rfc3339(t.recorded),
            may_send_to_housing: t.senders.clone(),
            may_receive_from_housing: t.recipients.clone(),
            purposes: t.purposes.clone(),
            valid_from: t.start.map(rfc3339),
            valid_until: t.end.map(|e| rfc3339(e - time::Duration::SECOND)),
            // As enforced: widened along the label hierarchy, whenever it was recorded.
            restrictions: self
                .mappings
                .restrictions_for(&self.mappings.widen(&t.denied_labels)),
            withhold_from: self.partner_restrictions(t, true),
            withhold_when_sent_by: self.partner_restrictions(t, false),
            governing,
        }
    }

    /// A consent's restrictions for single partners, by name, in one direction.
    fn partner_restrictions(
        &self,
        t: &ConsentTerms,
        receiving: bool,
    ) -> BTreeMap<PartnerId, Vec<String>> {
        let mut labels: BTreeMap<PartnerId, Vec<String>> = BTreeMap::new();
        for d in t
            .partner_denials
            .iter()
            .filter(|d| d.receiving == receiving)
        {
            labels
                .entry(d.partner.clone())
                .or_default()
                .extend(d.labels.iter().cloned());
        }
        labels
            .into_iter()
            .map(|(p, l)| (p, self.mappings.restrictions_for(&self.mappings.widen(&l))))
            .collect()
    }

    /// Summaries of every version of the tenant's consents, newest first.
    pub async fn consent_summaries(&self, tenant: &TenantId) -> Result<Vec<ConsentSummary>, Error> {
        let stored = self.store.tenant_consents(tenant).await?;
        let versions: Vec<_> = stored.iter().map(|s| s.version.clone()).collect();
        let governing = consent::governing(&versions).map(|g| (g.id.clone(), g.version));
        let mut out: Vec<ConsentSummary> = stored
            .iter()
            .map(|s| {
                self.summary(
                    s,
                    governing.as_ref() == Some(&(s.version.id.clone(), s.version.version)),
                )
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    /// `POST /fhir/Consent`. From housing: a new version of the tenant's consent. From a
    /// partner: a proposal, kept as `proposed` and enforcing nothing until housing
    /// confirms it with the tenant.
    pub async fn record_consent(
        &self,
        call: &Call,
        resource: Value,
        digest: String,
        audit: &mut AuditEntry,
    ) -> Result<RecordedConsent, Error> {
        audit.partner = Some(call.principal.org.clone());
        audit.payload_digest = Some(digest);
        audit.resource_type = Some("Consent".into());
        call.require(
            &[Role::Housing, Role::Clinic, Role::Mco],
            "recording a consent",
        )?;
        if !CUSTODIANS.contains(&call.principal.role) {
            return self.propose_consent(call, resource, audit).await;
        }
        let (tenant, terms, resource, id) = self.read_consent(call, resource, None, audit).await?;
        let clears = terms.status == ConsentStatus::Active;
        audit.outcome = crate::audit::Outcome::Accepted;
        audit.status = 201;
        let stored = self
            .store
            .save_consent(
                ConsentSlot::of(id),
                tenant,
                terms,
                resource,
                clears,
                audit.clone(),
            )
            .await?;
        Ok(RecordedConsent::Stored(Box::new(stored)))
    }

    /// A partner's proposed consent. It is answered the same whether or not its subject
    /// is a tenant (and only a well-formed one is answered at all), or proposing consents
    /// would tell a partner who is a housing tenant.
    async fn propose_consent(
        &self,
        call: &Call,
        resource: Value,
        audit: &mut AuditEntry,
    ) -> Result<RecordedConsent, Error> {
        let mut terms = self.consent_terms(&resource)?;
        audit.status = 202;
        let Ok(tenant) = self.link(&resource, audit).await? else {
            audit.outcome = crate::audit::Outcome::Refused;
            audit.reason = Some("the proposed consent's subject is not a tenant".into());
            self.store.append(audit.clone()).await?;
            return Ok(RecordedConsent::Proposed);
        };
        terms.status = ConsentStatus::Proposed;
        // Kept as Hearth reads it, not as sent: once confirmed, a consent is readable by
        // every partner it names, and what the proposer wrapped around the terms (its own
        // record number for the tenant, a contained Patient, narrative, a scanned form)
        // is not the proposer's to share with them.
        let custodian = self
            .config
            .housing()
            .map_or_else(|| call.principal.org.clone(), |p| p.id.clone());
        let resource = terms_to_fhir(
            &terms,
            &Identifier::new(&self.config.tenancy.identifier_system, tenant.as_str()),
            &custodian,
            GivenBy::of(&resource),
        );
        audit.outcome = crate::audit::Outcome::Accepted;
        self.store
            .save_consent(
                ConsentSlot::of(None),
                tenant,
                terms,
                resource,
                false,
                audit.clone(),
            )
            .await?;
        Ok(RecordedConsent::Proposed)
    }

    /// `PUT /fhir/Consent/{id}`: housing records a new version of an existing consent.
    /// With `if_match` (the version the client edited), a consent changed since is 412.
    pub async fn update_consent(
        &self,
        call: &Call,
        id: &str,
        if_match: Option<u32>,
        resource: Value,
        digest: String,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        audit.payload_digest = Some(digest);
        audit.resource_type = Some("Consent".into());
        call.require(CUSTODIANS, "updating a consent")?;
        let existing = self
            .store
            .consent(id)
            .await?
            // R4 update: a resource that does not exist is not created under the client's
            // id (consent ids are Hearth's); POST creates.
            .ok_or_else(|| {
                Error::MethodNotAllowed {
                    message: format!(
                        "Consent/{id} does not exist, and Hearth does not create consents under ids the client chose: POST /fhir/Consent to record one"
                    ),
                    // Reading it is allowed (and answers 404).
                    allow: Some("GET, HEAD"),
                }
            })?;
        if let Some(edited) = if_match
            && edited != existing.version.version
        {
            return Err(Error::PreconditionFailed(format!(
                "Consent/{id} is at version {}, not {edited}; read it again before changing it",
                existing.version.version
            )));
        }
        // R4 update: a body without an id, or with another one, is a bad request (400).
        match resource.get("id").and_then(Value::as_str) {
            Some(rid) if rid == id => {}
            found => {
                return Err(Error::Malformed {
                    message: match found {
                        Some(_) => "the resource id must match the URL".into(),
                        None => "an update carries the resource id the URL names".into(),
                    },
                    expression: Some("Consent.id".into()),
                });
            }
        }
        let (tenant, terms, resource, _) = self
            .read_consent(call, resource, Some(&existing), audit)
            .await?;
        if tenant != existing.tenant {
            return Err(Error::Invalid(vec![
                Issue::error(
                    IssueCode::BusinessRule,
                    "a consent cannot move to another tenant",
                )
                .at("Consent.patient"),
            ]));
        }
        let clears = terms.status == ConsentStatus::Active;
        audit.outcome = crate::audit::Outcome::Accepted;
        audit.status = 200;
        Ok(self
            .store
            .save_consent(
                ConsentSlot::after(id, existing.version.version),
                tenant,
                terms,
                resource,
                clears,
                audit.clone(),
            )
            .await?)
    }

    /// The terms of a FHIR Consent Hearth will enforce, once it is known to be one and
    /// to be valid.
    fn consent_terms(&self, resource: &Value) -> Result<ConsentTerms, Error> {
        self.consent_shape(resource)?;
        self.terms_keeping(resource, &[])
    }

    /// A FHIR Consent, valid against the profile.
    fn consent_shape(&self, resource: &Value) -> Result<(), Error> {
        if fhir::resource_type(resource) != Some("Consent") {
            return Err(Error::Malformed {
                message: "this endpoint takes a FHIR Consent".into(),
                expression: Some("resourceType".into()),
            });
        }
        self.validate(resource)
    }

    /// The terms, accepting besides the labels Hearth assigns those in `kept`.
    fn terms_keeping(&self, resource: &Value, kept: &[String]) -> Result<ConsentTerms, Error> {
        consent::terms_from_fhir(resource, self.partner_for(), |code| {
            self.mappings.is_label(code) || kept.iter().any(|k| k == code)
        })
        .map_err(Error::Invalid)
    }

    /// Housing's Consent: its tenant, its terms, and the id of the consent it replaces —
    /// `replaces` (an update), or else the tenant's own consent if there is one (a create
    /// adds a version to it). A label the replaced version restricted may stay restricted
    /// even if the mappings have since stopped assigning it: items held from before still
    /// carry it, and renewing the consent must not release them.
    async fn read_consent(
        &self,
        call: &Call,
        resource: Value,
        replaces: Option<&StoredConsent>,
        audit: &mut AuditEntry,
    ) -> Result<(TenantId, ConsentTerms, Value, Option<String>), Error> {
        self.consent_shape(&resource)?;
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
        let (id, fetched) = match replaces {
            Some(c) => (Some(c.version.id.clone()), None),
            None => match self.tenant_consent_id(&tenant).await? {
                Some(id) => {
                    let stored = self.store.consent(&id).await?;
                    (Some(id), stored)
                }
                None => (None, None),
            },
        };
        let kept: Vec<String> = replaces
            .or(fetched.as_ref())
            .map(|c| {
                let t = &c.version.terms;
                let by_partner = t.partner_denials.iter().flat_map(|d| &d.labels);
                t.denied_labels.iter().chain(by_partner).cloned().collect()
            })
            .unwrap_or_default();
        let terms = self.terms_keeping(&resource, &kept)?;
        Ok((tenant, terms, resource, id))
    }

    /// `POST /housing/consents`: the tenant's choice in plain terms, kept as FHIR.
    pub async fn record_consent_form(
        &self,
        call: &Call,
        form: ConsentForm,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        audit.resource_type = Some("Consent".into());
        audit.tenant = Some(form.tenant_id.clone());
        call.require(CUSTODIANS, "recording a consent")?;
        if !self.store.tenant_exists(&form.tenant_id).await? {
            return Err(Error::Invalid(vec![
                Issue::error(
                    IssueCode::BusinessRule,
                    "no tenant is registered with this id",
                )
                .at("tenant_id"),
            ]));
        }
        let partners = &self.config.partners;
        let terms = form
            .terms(
                call.at,
                |p| partners.iter().any(|c| &c.id == p),
                |r| self.mappings.restriction_labels(r),
            )
            .map_err(Error::Invalid)?;
        let tenant_identifier = Identifier::new(
            &self.config.tenancy.identifier_system,
            form.tenant_id.as_str(),
        );
        let resource = terms_to_fhir(
            &terms,
            &tenant_identifier,
            &call.principal.org,
            form.given_by(),
        );
        // Read the FHIR form back, so what is enforced is exactly what the Consent says.
        let terms = consent::terms_from_fhir(&resource, self.partner_for(), |code| {
            self.mappings.is_label(code)
        })
        .map_err(Error::Invalid)?;
        let id = self.tenant_consent_id(&form.tenant_id).await?;
        audit.outcome = crate::audit::Outcome::Accepted;
        audit.status = 201;
        Ok(self
            .store
            .save_consent(
                ConsentSlot::of(id),
                form.tenant_id,
                terms,
                resource,
                true,
                audit.clone(),
            )
            .await?)
    }

    /// The latest version of consent `id`, for a custodian about to change it.
    async fn current_consent(
        &self,
        call: &Call,
        id: &str,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        audit.resource_type = Some("Consent".into());
        // The role first: a partner must not learn whether a consent exists.
        call.require(CUSTODIANS, "changing a consent")?;
        let current = self
            .store
            .consent(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no consent {id}")))?;
        audit.tenant = Some(current.tenant.clone());
        Ok(current)
    }

    /// Stores `current` again with `status`, as the version after it and no other: if
    /// another version was stored since it was read, nothing is stored (409).
    async fn restate(
        &self,
        call: &Call,
        current: StoredConsent,
        status: ConsentStatus,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        let id = current.version.id.clone();
        let mut terms = current.version.terms.clone();
        terms.status = status;
        // Revoking or confirming is the tenant's latest choice.
        terms.recorded = call.at;
        let mut resource = current.resource.clone();
        resource["status"] = json!(status.as_str());
        resource["dateTime"] = json!(rfc3339(call.at));
        if let Some(obj) = resource.as_object_mut() {
            obj.remove("meta");
        }
        let clears = status == ConsentStatus::Active;
        audit.outcome = crate::audit::Outcome::Accepted;
        audit.status = 200;
        Ok(self
            .store
            .save_consent(
                ConsentSlot::after(&id, current.version.version),
                current.tenant,
                terms,
                resource,
                clears,
                audit.clone(),
            )
            .await?)
    }

    /// Revokes a consent: a new version with status `inactive`. Exchanges stop at once.
    pub async fn revoke_consent(
        &self,
        call: &Call,
        id: &str,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        // A revocation must not fail because the consent changed a moment ago: it is
        // restated from whatever is latest, again if need be.
        let mut attempts = 0;
        loop {
            let current = self.current_consent(call, id, audit).await?;
            // Declining a proposal nobody confirmed rejects it. As `inactive` it would
            // govern as the tenant's latest choice and stop every exchange.
            let status = match current.version.terms.status {
                ConsentStatus::Proposed => ConsentStatus::Rejected,
                _ => ConsentStatus::Inactive,
            };
            match self.restate(call, current, status, audit).await {
                Err(Error::Conflict(_)) if attempts < 3 => attempts += 1,
                result => return result,
            }
        }
    }

    /// Confirms a partner's proposed consent with the tenant: it becomes active.
    pub async fn confirm_consent(
        &self,
        call: &Call,
        id: &str,
        audit: &mut AuditEntry,
    ) -> Result<StoredConsent, Error> {
        let current = self.current_consent(call, id, audit).await?;
        if current.version.terms.status != ConsentStatus::Proposed {
            return Err(Error::Conflict(format!(
                "consent {id} is {}, not proposed",
                current.version.terms.status.as_str()
            )));
        }
        // The version checked is the version confirmed: a revocation in between wins.
        self.restate(call, current, ConsentStatus::Active, audit)
            .await
    }

    /// A tenant asked to change what is shared: prompt renewal.
    pub async fn request_renewal(
        &self,
        call: &Call,
        tenant: &TenantId,
        audit: &mut AuditEntry,
    ) -> Result<(bool, RenewalDue), Error> {
        call.require(CUSTODIANS, "requesting a consent renewal")?;
        audit.tenant = Some(tenant.clone());
        if !self.store.tenant_exists(tenant).await? {
            return Err(Error::NotFound(format!("no tenant {tenant}")));
        }
        let due = RenewalDue {
            reason: "tenant-request".into(),
            since: rfc3339(call.at),
            reference_id: call.reference_id.to_string(),
        };
        audit.outcome = crate::audit::Outcome::Accepted;
        audit.status = 200;
        Ok(self
            .store
            .mark_renewal_due(tenant, due, audit.clone())
            .await?)
    }

    /// The latest version of each of the tenant's consents that the caller may see, with
    /// the given status if one is asked for (FHIR search).
    pub async fn search_consents(
        &self,
        call: &Call,
        tenant: &TenantId,
        status: Option<ConsentStatus>,
    ) -> Result<Vec<StoredConsent>, Error> {
        let all = self.store.tenant_consents(tenant).await?;
        Ok(
            consent::latest_by(&all, |c| (c.version.id.as_str(), c.version.version))
                .into_iter()
                .filter(|c| status.is_none_or(|s| s == c.version.terms.status))
                .filter(|c| self.may_see_consent(call, c))
                .cloned()
                .collect(),
        )
    }

    /// Whether `call`'s principal may see consent `stored`: housing, auditors,
    /// and partners the consent names — once housing has confirmed it. A proposal (or a
    /// declined one) a partner could read back would tell it, by being there, that its
    /// subject is a tenant.
    pub fn may_see_consent(&self, call: &Call, stored: &StoredConsent) -> bool {
        let p = &call.principal;
        let confirmed = !matches!(
            stored.version.terms.status,
            ConsentStatus::Proposed | ConsentStatus::Rejected | ConsentStatus::Draft
        );
        matches!(p.role, Role::Housing | Role::Auditor)
            || (p.role.is_partner()
                && confirmed
                && stored.version.terms.partners().contains(&p.org))
    }

    /// Refuses a role [`Gateway::may_see_consent`] can never let see a consent, before
    /// anything is looked up for it.
    pub fn may_search_consents(&self, call: &Call) -> Result<(), Error> {
        if matches!(call.principal.role, Role::Housing | Role::Auditor)
            || call.principal.role.is_partner()
        {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "consents are for housing, auditors and the partners they name".into(),
            ))
        }
    }
}
