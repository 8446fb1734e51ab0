//! Joint case reviews: the monthly review of a high-risk tenant by the partners on the
//! tenant's review team. Decisions (who does outreach, what clinical action, which
//! housing accommodation, each with an owner and a due date) are kept as a FHIR CarePlan
//! in the review record — not in the housing dataset — and only members of that tenant's
//! review team and auditors may read it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Call, Gateway};
use crate::audit::{AuditEntry, Direction, Outcome};
use crate::auth::Role;
use crate::clock::rfc3339;
use crate::consent::{Flow, parse_fhir_instant};
use crate::error::Error;
use crate::fhir::{self, Issue, IssueCode};
use crate::ids::{PartnerId, TenantId};
use crate::store::ConsentsSeen;

/// The CarePlan category that marks a joint case review.
pub const REVIEW_CATEGORY: &str = "joint-case-review";
/// Code system of decision kinds.
pub const DECISION_SYSTEM: &str = "https://hearth.example/fhir/CodeSystem/review-decision";
/// A review is due monthly; the register lists tenants due within this many days.
pub const DUE_WITHIN_DAYS: i64 = 7;

/// `POST /housing/reviews`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub tenant_id: TenantId,
    /// The day the review met.
    pub date: String,
    /// The partners on the tenant's review team who attended.
    pub attendees: Vec<PartnerId>,
    pub decisions: Vec<Decision>,
    /// When the team meets next.
    pub next_review: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub kind: DecisionKind,
    /// What is to be done, in the worker's words (length-limited).
    pub action: String,
    pub owner: PartnerId,
    pub due: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    Outreach,
    ClinicalAction,
    HousingAccommodation,
}

impl DecisionKind {
    fn code(self) -> &'static str {
        match self {
            DecisionKind::Outreach => "outreach",
            DecisionKind::ClinicalAction => "clinical-action",
            DecisionKind::HousingAccommodation => "housing-accommodation",
        }
    }
}

/// A stored review.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReview {
    pub id: String,
    pub review: Review,
    pub recorded_at: String,
    pub careplan: Value,
    /// The organisation that recorded it: a partner's actions are what it told housing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<PartnerId>,
}

/// Where a review's fields were written, so a problem is reported at the caller's own
/// element: form fields for `POST /housing/reviews`, CarePlan elements for
/// `POST /fhir/CarePlan`.
enum Written {
    Form,
    /// The CarePlan index behind each attendee and each decision, and the next review's
    /// activity.
    CarePlan {
        attendees: Vec<usize>,
        decisions: Vec<usize>,
        next_review: usize,
    },
}

/// A review field a check can fail on (decisions and attendees by their index).
enum Field {
    Date,
    NextReview,
    Attendees,
    Attendee(usize),
    Action(usize),
    Owner(usize),
    Due(usize),
    Tenant,
}

impl Written {
    fn at(&self, field: Field) -> String {
        match self {
            Written::Form => match field {
                Field::Date => "date".into(),
                Field::NextReview => "next_review".into(),
                Field::Attendees => "attendees".into(),
                Field::Attendee(i) => format!("attendees[{i}]"),
                Field::Action(i) => format!("decisions[{i}].action"),
                Field::Owner(i) => format!("decisions[{i}].owner"),
                Field::Due(i) => format!("decisions[{i}].due"),
                Field::Tenant => "tenant_id".into(),
            },
            Written::CarePlan {
                attendees,
                decisions,
                next_review,
            } => match field {
                Field::Date => "CarePlan.created".into(),
                Field::NextReview => {
                    format!("CarePlan.activity[{next_review}].detail.scheduledPeriod.start")
                }
                Field::Attendees => "CarePlan.contributor".into(),
                Field::Attendee(i) => format!("CarePlan.contributor[{}]", attendees[i]),
                Field::Action(i) => {
                    format!("CarePlan.activity[{}].detail.description", decisions[i])
                }
                Field::Owner(i) => format!("CarePlan.activity[{}].detail.performer", decisions[i]),
                Field::Due(i) => {
                    format!(
                        "CarePlan.activity[{}].detail.scheduledPeriod.end",
                        decisions[i]
                    )
                }
                Field::Tenant => "CarePlan.subject".into(),
            },
        }
    }
}

impl Gateway {
    fn check_review(&self, r: &Review, written: &Written) -> Result<(), Error> {
        let mut issues = Vec::new();
        let date = |field: Field, v: &str, issues: &mut Vec<Issue>| {
            if parse_fhir_instant(v, false).is_none() {
                issues.push(
                    Issue::error(IssueCode::Value, "expected a date such as 2026-12-21")
                        .at(written.at(field)),
                );
            }
        };
        date(Field::Date, &r.date, &mut issues);
        date(Field::NextReview, &r.next_review, &mut issues);
        if r.attendees.is_empty() {
            issues.push(
                Issue::error(IssueCode::Required, "name the partners who attended")
                    .at(written.at(Field::Attendees)),
            );
        }
        for (i, a) in r.attendees.iter().enumerate() {
            if self.config.partner(a).is_none() {
                issues.push(
                    Issue::error(
                        IssueCode::Value,
                        format!("`{a}` is not a configured partner"),
                    )
                    .at(written.at(Field::Attendee(i))),
                );
            }
        }
        for (i, d) in r.decisions.iter().enumerate() {
            if d.action.trim().is_empty() || d.action.chars().count() > super::notes::MAX_TEXT {
                issues.push(
                    Issue::error(IssueCode::Value, "1 to 1000 characters")
                        .at(written.at(Field::Action(i))),
                );
            }
            if !r.attendees.contains(&d.owner) {
                issues.push(
                    Issue::error(
                        IssueCode::BusinessRule,
                        "the owner must be one of the attendees",
                    )
                    .at(written.at(Field::Owner(i))),
                );
            }
            date(Field::Due(i), &d.due, &mut issues);
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(issues))
        }
    }

    /// Records a review. The recorder must be a review member whose organisation attended.
    pub async fn record_review(
        &self,
        call: &Call,
        review: Review,
        audit: &mut AuditEntry,
    ) -> Result<StoredReview, Error> {
        self.record(call, review, &Written::Form, audit).await
    }

    async fn record(
        &self,
        call: &Call,
        review: Review,
        written: &Written,
        audit: &mut AuditEntry,
    ) -> Result<StoredReview, Error> {
        audit.tenant = Some(review.tenant_id.clone());
        audit.resource_type = Some("CarePlan".into());
        call.require(&[Role::ReviewMember], "recording a joint case review")?;
        self.check_review(&review, written)?;
        if !review.attendees.contains(&call.principal.org)
            || !self.on_review_team(call, &review).await?
        {
            return Err(not_on_team());
        }
        if !self.store.tenant_exists(&review.tenant_id).await? {
            return Err(Error::Invalid(vec![
                Issue::error(
                    IssueCode::BusinessRule,
                    "no tenant is registered with this id",
                )
                .at(written.at(Field::Tenant)),
            ]));
        }
        // The review's notes go to every partner that attended, as a forward would: each
        // needs the tenant's consent to share with it. Housing, which keeps the consent,
        // is told which one; a partner gets the same refusal as for any exchange.
        let context = self.store.consent_context(&review.tenant_id).await?;
        let seen = ConsentsSeen::of(&context, !self.config.consent.share_while_renewal_due);
        let action_labels = self.action_labels(&review);
        let from_housing = self.is_housing(&call.principal.org);
        // A partner is told no more than for any exchange: what the tenant withholds, and
        // from whom, stays with housing (and in the audit).
        let opaque = || Error::Forbidden(crate::error::NO_AGREEMENT.into());
        // A partner recording a review tells housing (and the team) what it decided: that
        // needs the tenant's consent for it to send, as a notice would, its words included.
        if !from_housing {
            let permit = self.decide_with(
                call,
                &context,
                Flow::Inbound,
                &call.principal.org,
                &action_labels,
                audit,
            )?;
            if !permit.withheld.is_empty() {
                audit.reason = Some("text-withheld-by-consent".into());
                return Err(opaque());
            }
        }
        for (i, partner) in review.attendees.iter().enumerate() {
            if self.is_housing(partner) {
                continue;
            }
            let decided = self.decide_with(
                call,
                &context,
                Flow::Outbound,
                partner,
                &action_labels,
                audit,
            );
            match decided {
                Ok(permit) if permit.withheld.is_empty() => {}
                Ok(permit) if from_housing => {
                    return Err(Error::Invalid(
                        permit
                            .withheld
                            .iter()
                            .map(|&d| {
                                Issue::error(
                                    IssueCode::BusinessRule,
                                    format!("this action mentions information the tenant's consent withholds from {partner}; rephrase it without that"),
                                )
                                .at(written.at(Field::Action(d)))
                            })
                            .collect(),
                    ));
                }
                Ok(_) => {
                    audit.partner = Some(partner.clone());
                    audit.reason = Some("text-withheld-by-consent".into());
                    return Err(opaque());
                }
                Err(_) if from_housing => {
                    return Err(Error::Invalid(vec![
                        Issue::error(
                            IssueCode::BusinessRule,
                            format!("the tenant's consent does not cover sharing with {partner} now, so it cannot be sent this review"),
                        )
                        .at(written.at(Field::Attendee(i))),
                    ]));
                }
                Err(refused) => return Err(refused),
            }
        }
        let id = call.reference_id.to_string();
        let careplan = review_careplan(
            &id,
            &review,
            &self.config.tenancy.identifier_system,
            &rfc3339(call.at),
        );
        let stored = StoredReview {
            id,
            review,
            recorded_at: rfc3339(call.at),
            careplan,
            recorded_by: Some(call.principal.org.clone()),
        };
        audit.outcome = Outcome::Accepted;
        audit.status = 201;
        self.store
            .save_review(stored.clone(), seen, audit.clone())
            .await?;
        Ok(stored)
    }

    /// Reads a CarePlan with the joint-case-review category into a review.
    fn review_from_fhir(
        &self,
        careplan: &Value,
        tenant: TenantId,
    ) -> Result<(Review, Written), Error> {
        let org = |v: &Value| {
            v.get("reference")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Organization/"))
                .map(PartnerId::new)
        };
        let (attendees, attendee_at): (Vec<_>, Vec<_>) = careplan["contributor"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, c)| Some((org(c)?, i)))
            .unzip();
        let mut decisions = Vec::new();
        let mut decision_at = Vec::new();
        let mut next_review = None;
        for (i, a) in careplan["activity"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let d = &a["detail"];
            if d["kind"] == "Appointment" {
                next_review = d
                    .pointer("/scheduledPeriod/start")
                    .and_then(Value::as_str)
                    .map(|start| (start.to_string(), i));
                continue;
            }
            let code = d
                .pointer("/code/coding/0/code")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let kind = serde_json::from_value(json!(code)).map_err(|_| {
                Error::Invalid(vec![
                    Issue::error(
                        IssueCode::Value,
                        "a decision's code is outreach, clinical-action or housing-accommodation",
                    )
                    .at(format!("CarePlan.activity[{i}].detail.code")),
                ])
            })?;
            decision_at.push(i);
            decisions.push(Decision {
                kind,
                action: d["description"].as_str().unwrap_or_default().to_string(),
                owner: d["performer"]
                    .as_array()
                    .and_then(|p| p.first())
                    .and_then(org)
                    .unwrap_or_else(|| PartnerId::new("")),
                due: d
                    .pointer("/scheduledPeriod/end")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        let (next_review, next_review_at) = next_review.ok_or_else(|| {
            Error::Invalid(vec![
                Issue::error(
                    IssueCode::Required,
                    "the next review is an activity of kind Appointment",
                )
                .at("CarePlan.activity"),
            ])
        })?;
        let review = Review {
            tenant_id: tenant,
            date: careplan["created"].as_str().unwrap_or_default().to_string(),
            attendees,
            decisions,
            next_review,
        };
        let written = Written::CarePlan {
            attendees: attendee_at,
            decisions: decision_at,
            next_review: next_review_at,
        };
        Ok((review, written))
    }

    /// `POST /fhir/CarePlan` with the joint-case-review category.
    pub async fn record_review_fhir(
        &self,
        call: &Call,
        careplan: Value,
        audit: &mut AuditEntry,
    ) -> Result<StoredReview, Error> {
        audit.resource_type = Some("CarePlan".into());
        call.require(&[Role::ReviewMember], "recording a joint case review")?;
        self.validate(&careplan)?;
        let tenant = match self.link(&careplan, audit).await? {
            Ok(t) => t,
            // Only housing may hear that no tenant has this identifier.
            Err(_) if !self.is_housing(&call.principal.org) => return Err(not_on_team()),
            Err(_) => {
                return Err(Error::Invalid(vec![
                    Issue::error(
                        IssueCode::BusinessRule,
                        "no registered tenant has this identifier",
                    )
                    .at("CarePlan.subject"),
                ]));
            }
        };
        let (review, written) = self.review_from_fhir(&careplan, tenant)?;
        self.record(call, review, &written, audit).await
    }

    /// Who may record a tenant's review: the housing provider's review members, who run
    /// the reviews and so decide who is on the team, and members of an organisation that
    /// attended the tenant's latest one, for the same team (they cannot add anyone, who
    /// could then read the tenant's reviews). Anyone else is refused the same way whether
    /// or not the tenant exists, so a partner cannot use reviews to learn who is a tenant.
    async fn on_review_team(&self, call: &Call, review: &Review) -> Result<bool, Error> {
        if self.is_housing(&call.principal.org) {
            return Ok(true);
        }
        Ok(self.store.latest_reviews().await?.iter().any(|r| {
            r.review.tenant_id == review.tenant_id
                && r.review.attendees.contains(&call.principal.org)
                && review
                    .attendees
                    .iter()
                    .all(|a| r.review.attendees.contains(a))
        }))
    }

    fn is_housing(&self, org: &PartnerId) -> bool {
        self.config.housing().is_some_and(|p| &p.id == org)
    }

    /// Review `r` as `call` may read it. Refuses (403) a caller off its team, or a partner
    /// on it that the tenant's consent no longer covers (revoked, expired, narrowed). A
    /// review member reads each action under the consent as it stands now: an action
    /// whose words the consent has since come to withhold from them is replaced by a note
    /// saying so, in the review and in its CarePlan.
    pub async fn read_review(
        &self,
        call: &Call,
        mut r: StoredReview,
        audit: &mut AuditEntry,
    ) -> Result<StoredReview, Error> {
        if !self.may_see_review(call, &r) {
            return Err(Error::Forbidden(
                "joint case review notes are for the tenant's review team and auditors".into(),
            ));
        }
        // Review members read the actions under the consent as it stands now; auditors
        // read what was recorded. Housing's own words are not held from its own team (as
        // its notes are not); what a partner recorded is what it told housing.
        if r.recorded_by.is_none() {
            r.recorded_by = self.recorder_of(&r.id).await?;
        }
        let partner_recorded = r
            .recorded_by
            .as_ref()
            .is_some_and(|p| !self.is_housing(p) && p != &call.principal.org);
        if call.principal.role == Role::ReviewMember
            && (self.partner_reads(call) || partner_recorded)
        {
            let labels = self.action_labels(&r.review);
            // A partner's actions are what it told housing: a restriction on what it may
            // send (INF) holds them back from the others as it holds back its notices.
            let senders = if partner_recorded {
                vec![r.recorded_by.clone(); labels.len()]
            } else {
                Vec::new()
            };
            let flow = if self.partner_reads(call) {
                Flow::Outbound
            } else {
                Flow::HousingUse
            };
            let context = self.store.consent_context(&r.review.tenant_id).await?;
            let permit = self.decide_items(
                call,
                &context,
                flow,
                &call.principal.org,
                &labels,
                &senders,
                audit,
            )?;
            // The CarePlan is patched, not rebuilt: activities follow the decisions in
            // order, and everything else stays as recorded. The reader still sees the
            // decision's kind, owner and date (what the team agreed to do), not its words.
            for &i in &permit.withheld {
                r.review.decisions[i].action = WITHHELD_ACTION.into();
                let description = format!("/activity/{i}/detail/description");
                if let Some(d) = r.careplan.pointer_mut(&description) {
                    *d = WITHHELD_ACTION.into();
                }
                audit.items_withheld.push(crate::audit::ItemRef {
                    kind: "review_action".into(),
                    id: Some(format!("decisions[{i}]")),
                    labels: labels[i].iter().cloned().collect(),
                });
            }
        }
        Ok(r)
    }

    /// The labels each decision's action carries by its words: free text every attendee
    /// receives, held to the consent as a note's words are.
    fn action_labels(&self, review: &Review) -> Vec<std::collections::BTreeSet<String>> {
        review
            .decisions
            .iter()
            .map(|d| self.mappings.text_labels(&d.action))
            .collect()
    }

    /// Who recorded review `id`, from its audit record: reviews stored before they named
    /// their recorder.
    async fn recorder_of(&self, id: &str) -> Result<Option<PartnerId>, Error> {
        let rows = self
            .store
            .query(crate::store::AuditQuery {
                reference_id: Some(id.to_string()),
                limit: 10,
                ..Default::default()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| serde_json::from_value::<AuditEntry>(row.record).ok())
            .find(|e| e.outcome == Outcome::Accepted && e.status == 201)
            .and_then(|e| e.actor.map(|a| a.org)))
    }

    /// A review member of a partner organisation (not housing): what it reads of a
    /// tenant's reviews is shared with it, under the tenant's consent.
    fn partner_reads(&self, call: &Call) -> bool {
        call.principal.role == Role::ReviewMember && !self.is_housing(&call.principal.org)
    }

    /// Whether `call` may read a review: its team's review members, auditors, admins.
    fn may_see_review(&self, call: &Call, r: &StoredReview) -> bool {
        let p = &call.principal;
        p.role == Role::Auditor
            || (p.role == Role::ReviewMember && r.review.attendees.contains(&p.org))
    }

    /// The high-risk register: tenants whose next review is due within a week (or past),
    /// for the caller's review teams.
    pub async fn reviews_due(&self, call: &Call) -> Result<Vec<Value>, Error> {
        let horizon = call.at + time::Duration::days(DUE_WITHIN_DAYS);
        let mut latest = self.store.latest_reviews().await?;
        latest.retain(|r| self.may_see_review(call, r));
        if self.partner_reads(call) {
            // Only tenants whose consent still covers this partner, decided as routine: an
            // emergency is for one tenant's record, not a list, and would go unflagged here.
            let routine = Call {
                break_glass: None,
                ..call.clone()
            };
            let mut covered = Vec::with_capacity(latest.len());
            for r in latest {
                let context = self.store.consent_context(&r.review.tenant_id).await?;
                let mut scratch = call.audit("read-review-register", Direction::Internal);
                if self
                    .decide_with(
                        &routine,
                        &context,
                        Flow::Outbound,
                        &call.principal.org,
                        &[],
                        &mut scratch,
                    )
                    .is_ok()
                {
                    covered.push(r);
                }
            }
            latest = covered;
        }
        Ok(latest
            .into_iter()
            .filter(|r| parse_fhir_instant(&r.review.next_review, false).is_some_and(|n| n <= horizon))
            .map(|r| {
                let overdue = parse_fhir_instant(&r.review.next_review, true).is_some_and(|n| n <= call.at);
                json!({"tenant_id": r.review.tenant_id, "next_review": r.review.next_review, "overdue": overdue, "last_review": r.id})
            })
            .collect())
    }
}

/// What a partner reads in place of an action the tenant's consent withholds from it.
const WITHHELD_ACTION: &str = "(withheld under the tenant's consent)";

/// Whether a CarePlan is a joint case review.
pub fn is_review(careplan: &Value) -> bool {
    careplan["category"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .any(|c| c["code"] == REVIEW_CATEGORY)
}

/// The review as a FHIR R4 CarePlan: one activity per decision, one for the next review.
fn review_careplan(id: &str, r: &Review, tenant_system: &str, recorded: &str) -> Value {
    let org = |p: &PartnerId| json!({"reference": format!("Organization/{p}")});
    let mut activity: Vec<Value> = r
        .decisions
        .iter()
        .map(|d| {
            json!({"detail": {
                "kind": "Task",
                "code": {"coding": [{"system": DECISION_SYSTEM, "code": d.kind.code()}]},
                "status": "not-started",
                "description": d.action,
                "performer": [org(&d.owner)],
                "scheduledPeriod": {"end": d.due},
            }})
        })
        .collect();
    activity.push(json!({"detail": {
        "kind": "Appointment",
        "code": {"text": "next joint case review"},
        "status": "scheduled",
        "scheduledPeriod": {"start": r.next_review},
    }}));
    json!({
        "resourceType": "CarePlan",
        "id": id,
        "meta": {"lastUpdated": recorded},
        "identifier": [{"system": fhir::REFERENCE_ID_SYSTEM, "value": id}],
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": format!("{}/CodeSystem/plan-kind", fhir::HEARTH_BASE), "code": REVIEW_CATEGORY}]}],
        "title": "Joint case review",
        "subject": {"identifier": {"system": tenant_system, "value": r.tenant_id.as_str()}},
        "created": r.date,
        "contributor": r.attendees.iter().map(org).collect::<Vec<_>>(),
        "activity": activity,
    })
}

fn not_on_team() -> Error {
    Error::Forbidden("only a member of this tenant's review team may record its review".into())
}
