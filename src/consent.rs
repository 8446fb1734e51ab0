//! Consent: the registry model and the decision made at each exchange.
//!
//! A consent arrives as a FHIR R4 `Consent` and is kept, every version, with the
//! elements Hearth enforces read into [`ConsentTerms`]. [`decide`] is the one function
//! that decides an exchange; it cites the consent and version it relied on.
//!
//! Decision rules (first cut; see ARCHITECTURE.md):
//! * The tenant's most recent choice governs: of the latest version of each consent
//!   that is `active` or `inactive`, the one with the latest `dateTime` decides.
//!   Draft, proposed, rejected and entered-in-error consents decide nothing.
//! * Governing consent `inactive` → deny (revoked). Outside `provision.period` → deny
//!   (expired / not yet active). Partner not an actor of the permit → deny.
//! * Otherwise permit, withholding each item that carries a security label named by a
//!   nested `deny` provision (a deny inside the consent wins over its permit).
//!
//! Invariant: pure; no I/O, no clock (time is a parameter).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::dataset::ConsentCitation;
use crate::fhir::{Issue, IssueCode};
use crate::ids::PartnerId;

/// FHIR `consent-state-codes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    Draft,
    Proposed,
    Active,
    Rejected,
    Inactive,
    EnteredInError,
}

/// What Hearth enforces from one consent version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentTerms {
    pub status: ConsentStatus,
    /// `Consent.dateTime`: when the tenant made this choice; orders competing consents.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    /// Exclusive: sharing stops at this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// Partners the permit names as actors.
    pub partners: Vec<PartnerId>,
    /// `v3-ActReason` purposes; empty means any.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Security labels a nested deny provision withholds.
    #[serde(default)]
    pub denied_labels: Vec<String>,
}

/// One stored version of a consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentVersion {
    pub id: String,
    pub version: u32,
    pub terms: ConsentTerms,
}

impl ConsentVersion {
    pub fn citation(&self) -> ConsentCitation {
        ConsentCitation {
            id: self.id.clone(),
            version: self.version,
        }
    }
}

/// Reads the enforceable terms of a FHIR Consent. `partner_for` maps an actor reference
/// (`Organization/<partner id>`) to a configured partner.
pub fn terms_from_fhir(
    consent: &Value,
    partner_for: impl Fn(&str) -> Option<PartnerId>,
) -> Result<ConsentTerms, Vec<Issue>> {
    let mut issues = Vec::new();
    let status = consent
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or(ConsentStatus::Draft);
    let recorded = consent
        .get("dateTime")
        .and_then(Value::as_str)
        .and_then(|s| parse_fhir_instant(s, false));
    if recorded.is_none() {
        issues.push(
            Issue::error(
                IssueCode::Required,
                "dateTime must say when the tenant gave this consent",
            )
            .at("Consent.dateTime"),
        );
    }
    let provision = consent.get("provision").cloned().unwrap_or(Value::Null);
    // R4 leaves the root provision's type optional; absent, Hearth reads it as permit.
    if provision
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("permit")
        != "permit"
    {
        issues.push(
            Issue::error(
                IssueCode::BusinessRule,
                "the base provision must be a permit naming the partners who may exchange",
            )
            .at("Consent.provision.type"),
        );
    }
    let period_bound = |key: &str, end: bool| {
        provision
            .pointer(&format!("/period/{key}"))
            .and_then(Value::as_str)
            .map(|s| (s, parse_fhir_instant(s, end)))
    };
    let bound = |key: &str, end: bool, issues: &mut Vec<Issue>| match period_bound(key, end) {
        None => None,
        Some((_, Some(t))) => Some(t),
        Some((_, None)) => {
            issues.push(
                Issue::error(IssueCode::Value, "not a FHIR dateTime")
                    .at(format!("Consent.provision.period.{key}")),
            );
            None
        }
    };
    let start = bound("start", false, &mut issues);
    let end = bound("end", true, &mut issues);
    let mut partners = Vec::new();
    for (i, actor) in provision
        .get("actor")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let reference = actor
            .pointer("/reference/reference")
            .and_then(Value::as_str);
        match reference.and_then(&partner_for) {
            Some(p) => partners.push(p),
            None => issues.push(
                Issue::error(
                    IssueCode::BusinessRule,
                    "actor must reference a partner organisation known to this gateway, as Organization/<partner id>",
                )
                .at(format!("Consent.provision.actor[{i}].reference")),
            ),
        }
    }
    if partners.is_empty() && issues.is_empty() && status == ConsentStatus::Active {
        issues.push(
            Issue::error(
                IssueCode::BusinessRule,
                "an active consent must name at least one partner as actor",
            )
            .at("Consent.provision.actor"),
        );
    }
    let purposes = codes(provision.get("purpose"));
    let mut denied_labels = Vec::new();
    for nested in provision
        .get("provision")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if nested.get("type").and_then(Value::as_str) == Some("deny") {
            denied_labels.extend(codes(nested.get("securityLabel")));
        }
    }
    match (issues.is_empty(), recorded) {
        (true, Some(recorded)) => Ok(ConsentTerms {
            status,
            recorded,
            start,
            end,
            partners,
            purposes,
            denied_labels,
        }),
        _ => Err(issues),
    }
}

fn codes(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("code").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Parses a FHIR date or dateTime. A partial date stands for its whole span: as a start
/// it means the first instant, as an `end` the instant after its last.
pub fn parse_fhir_instant(s: &str, end: bool) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::{Date, Month, Time};
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    let parts: Vec<&str> = s.split('-').collect();
    let year: i32 = parts.first()?.parse().ok()?;
    let month: u8 = parts.get(1).map_or(Ok(1), |m| m.parse()).ok()?;
    let day: u8 = parts.get(2).map_or(Ok(1), |d| d.parse()).ok()?;
    if parts.len() > 3 || parts[0].len() != 4 {
        return None;
    }
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    let first = date.with_time(Time::MIDNIGHT).assume_utc();
    if !end {
        return Some(first);
    }
    Some(match parts.len() {
        1 => Date::from_calendar_date(year + 1, Month::January, 1)
            .ok()?
            .with_time(Time::MIDNIGHT)
            .assume_utc(),
        2 => {
            let next = Month::try_from(month).ok()?.next();
            let y = if next == Month::January {
                year + 1
            } else {
                year
            };
            Date::from_calendar_date(y, next, 1)
                .ok()?
                .with_time(Time::MIDNIGHT)
                .assume_utc()
        }
        _ => first + time::Duration::DAY,
    })
}

/// What an exchange asks for.
#[derive(Debug, Clone)]
pub struct ExchangeRequest<'a> {
    pub partner: &'a PartnerId,
    /// `v3-ActReason` code; care coordination is `COC`.
    pub purpose: &'a str,
    /// The security labels of each dataset item involved.
    pub item_labels: &'a [BTreeSet<String>],
    pub at: OffsetDateTime,
}

/// Why an exchange is refused. Kept in the audit; never shown to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum DenyReason {
    NoConsent,
    Revoked,
    Expired {
        #[serde(with = "time::serde::rfc3339")]
        on: OffsetDateTime,
    },
    NotYetActive {
        #[serde(with = "time::serde::rfc3339")]
        from: OffsetDateTime,
    },
    PartnerNotCovered,
    PurposeNotCovered,
}

impl DenyReason {
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::NoConsent => "no-consent",
            DenyReason::Revoked => "consent-revoked",
            DenyReason::Expired { .. } => "consent-expired",
            DenyReason::NotYetActive { .. } => "consent-not-yet-active",
            DenyReason::PartnerNotCovered => "partner-not-covered",
            DenyReason::PurposeNotCovered => "purpose-not-covered",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Go ahead; items at `withheld` (indexes into the request's items) stay behind.
    Permit {
        consent: ConsentCitation,
        withheld: Vec<usize>,
    },
    Deny {
        reason: DenyReason,
        consent: Option<ConsentCitation>,
    },
}

/// The consent that governs now: the tenant's most recent choice.
pub fn governing(consents: &[ConsentVersion]) -> Option<&ConsentVersion> {
    // Only the latest version of each consent counts.
    let mut latest: Vec<&ConsentVersion> = Vec::new();
    for c in consents {
        match latest.iter_mut().find(|l| l.id == c.id) {
            Some(l) if l.version < c.version => *l = c,
            Some(_) => {}
            None => latest.push(c),
        }
    }
    latest
        .into_iter()
        .filter(|c| {
            matches!(
                c.terms.status,
                ConsentStatus::Active | ConsentStatus::Inactive
            )
        })
        .max_by(|a, b| {
            a.terms
                .recorded
                .cmp(&b.terms.recorded)
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// Decides one exchange for one tenant, given all versions of the tenant's consents.
pub fn decide(consents: &[ConsentVersion], req: &ExchangeRequest) -> Decision {
    let Some(c) = governing(consents) else {
        return Decision::Deny {
            reason: DenyReason::NoConsent,
            consent: None,
        };
    };
    let t = &c.terms;
    let deny = |reason| Decision::Deny {
        reason,
        consent: Some(c.citation()),
    };
    if t.status == ConsentStatus::Inactive {
        return deny(DenyReason::Revoked);
    }
    if let Some(start) = t.start
        && req.at < start
    {
        return deny(DenyReason::NotYetActive { from: start });
    }
    if let Some(end) = t.end
        && req.at >= end
    {
        return deny(DenyReason::Expired { on: end });
    }
    if !t.partners.contains(req.partner) {
        return deny(DenyReason::PartnerNotCovered);
    }
    if !t.purposes.is_empty() && !t.purposes.iter().any(|p| p == req.purpose) {
        return deny(DenyReason::PurposeNotCovered);
    }
    let withheld = req
        .item_labels
        .iter()
        .enumerate()
        .filter(|(_, labels)| t.denied_labels.iter().any(|d| labels.contains(d)))
        .map(|(i, _)| i)
        .collect();
    Decision::Permit {
        consent: c.citation(),
        withheld,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn partner(id: &str) -> Option<PartnerId> {
        id.strip_prefix("Organization/").map(PartnerId::new)
    }

    fn consent(
        id: &str,
        version: u32,
        status: &str,
        recorded: &str,
        actors: &[&str],
        deny: &[&str],
    ) -> ConsentVersion {
        let fhir = json!({
            "resourceType": "Consent", "status": status, "dateTime": recorded,
            "provision": {
                "type": "permit",
                "period": {"start": "2026-01-01", "end": "2026-12-31"},
                "actor": actors.iter().map(|a| json!({"reference": {"reference": format!("Organization/{a}")}})).collect::<Vec<_>>(),
                "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "COC"}],
                "provision": [{"type": "deny", "securityLabel": deny.iter().map(|d| json!({"code": d})).collect::<Vec<_>>()}]
            }
        });
        ConsentVersion {
            id: id.into(),
            version,
            terms: terms_from_fhir(&fhir, partner).unwrap(),
        }
    }

    fn ask(
        consents: &[ConsentVersion],
        who: &str,
        at: OffsetDateTime,
        labels: &[BTreeSet<String>],
    ) -> Decision {
        let p = PartnerId::new(who);
        decide(
            consents,
            &ExchangeRequest {
                partner: &p,
                purpose: "COC",
                item_labels: labels,
                at,
            },
        )
    }

    const NOV: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

    #[test]
    fn decision_table() {
        let clinic_only = consent("c1", 1, "active", "2026-01-05", &["clinic"], &[]);
        let both = consent(
            "c2",
            1,
            "active",
            "2026-03-01",
            &["clinic", "mco"],
            &["SUD"],
        );
        let revoked = consent("c2", 2, "inactive", "2026-03-01", &["clinic", "mco"], &[]);
        let sud: BTreeSet<String> = ["SUD".to_string()].into();
        let plain = BTreeSet::new();

        // No consent at all.
        assert!(matches!(
            ask(&[], "clinic", NOV, &[]),
            Decision::Deny {
                reason: DenyReason::NoConsent,
                ..
            }
        ));
        // Partner named → permit, citing consent and version.
        assert_eq!(
            ask(
                std::slice::from_ref(&clinic_only),
                "clinic",
                NOV,
                std::slice::from_ref(&plain)
            ),
            Decision::Permit {
                consent: ConsentCitation {
                    id: "c1".into(),
                    version: 1
                },
                withheld: vec![]
            }
        );
        // Partner not named → deny.
        assert!(matches!(
            ask(std::slice::from_ref(&clinic_only), "mco", NOV, &[]),
            Decision::Deny {
                reason: DenyReason::PartnerNotCovered,
                ..
            }
        ));
        // The most recent choice governs; its deny provision withholds labelled items only.
        assert_eq!(
            ask(
                &[clinic_only.clone(), both.clone()],
                "mco",
                NOV,
                &[plain.clone(), sud.clone()]
            ),
            Decision::Permit {
                consent: ConsentCitation {
                    id: "c2".into(),
                    version: 1
                },
                withheld: vec![1]
            }
        );
        // A later version revoking the governing consent blocks everyone.
        assert!(matches!(
            ask(
                &[clinic_only.clone(), both.clone(), revoked],
                "clinic",
                NOV,
                &[]
            ),
            Decision::Deny {
                reason: DenyReason::Revoked,
                ..
            }
        ));
        // The period end date is inclusive of its day; the next day is expired.
        assert!(matches!(
            ask(
                std::slice::from_ref(&clinic_only),
                "clinic",
                datetime!(2026-12-31 23:59 UTC),
                &[]
            ),
            Decision::Permit { .. }
        ));
        assert!(matches!(
            ask(
                std::slice::from_ref(&clinic_only),
                "clinic",
                datetime!(2027-01-01 00:00 UTC),
                &[]
            ),
            Decision::Deny {
                reason: DenyReason::Expired { .. },
                ..
            }
        ));
        assert!(matches!(
            ask(
                &[clinic_only],
                "clinic",
                datetime!(2025-12-31 00:00 UTC),
                &[]
            ),
            Decision::Deny {
                reason: DenyReason::NotYetActive { .. },
                ..
            }
        ));
    }

    #[test]
    fn unknown_actor_is_an_issue_at_the_actor() {
        let fhir = json!({"resourceType": "Consent", "status": "active", "dateTime": "2026-01-01",
            "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/nobody"}}]}});
        let issues = terms_from_fhir(&fhir, |_| None).unwrap_err();
        assert_eq!(
            issues[0].expression,
            vec!["Consent.provision.actor[0].reference"]
        );
    }

    #[test]
    fn partial_dates_cover_their_whole_span() {
        assert_eq!(
            parse_fhir_instant("2026", true),
            Some(datetime!(2027-01-01 00:00 UTC))
        );
        assert_eq!(
            parse_fhir_instant("2026-12", true),
            Some(datetime!(2027-01-01 00:00 UTC))
        );
        assert_eq!(
            parse_fhir_instant("2026-02-28", false),
            Some(datetime!(2026-02-28 00:00 UTC))
        );
        assert_eq!(parse_fhir_instant("28/02/2026", false), None);
    }
}
