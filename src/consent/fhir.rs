//! The FHIR R4 form of a consent: reading the terms Hearth enforces, and writing a
//! Consent from them. Element paths and codes are listed in docs/CONSENT.md.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{ConsentStatus, ConsentTerms, PartnerDenial};
use crate::clock::rfc3339;
use crate::fhir::{Issue, IssueCode};
use crate::ids::{Identifier, PartnerId};

pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// The code systems of the security labels Hearth reads on data and in consents.
pub const LABEL_SYSTEMS: &[&str] = &[
    ACT_CODE,
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
];
/// Actor role: may receive information from housing.
pub const ROLE_RECIPIENT: &str = "IRCP";
/// Actor role: may disclose information to housing.
pub const ROLE_INFORMANT: &str = "INF";

/// Reads the enforceable terms of a FHIR Consent. `partner_for` maps an actor reference
/// (`Organization/<partner id>`) to a configured partner; `is_label` says whether Hearth
/// ever puts a security label code on data (`mappings/sensitivity.toml`).
pub fn terms_from_fhir(
    consent: &Value,
    partner_for: impl Fn(&str) -> Option<PartnerId>,
    is_label: impl Fn(&str) -> bool,
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
                "dateTime must say when the tenant made this choice",
            )
            .at("Consent.dateTime"),
        );
    }
    let provision = consent.get("provision").cloned().unwrap_or(Value::Null);
    // R4 leaves the root provision's type optional; absent, Hearth reads it as permit.
    let refused = match provision
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("permit")
    {
        "permit" => false,
        "deny" => true,
        _ => {
            issues.push(
                Issue::error(IssueCode::Value, "provision.type is permit or deny")
                    .at("Consent.provision.type"),
            );
            false
        }
    };
    let mut bound = |key: &str, end: bool| match provision
        .pointer(&format!("/period/{key}"))
        .and_then(Value::as_str)
    {
        None => None,
        Some(s) => {
            let t = parse_fhir_instant(s, end);
            if t.is_none() {
                issues.push(
                    Issue::error(IssueCode::Value, "not a FHIR dateTime")
                        .at(format!("Consent.provision.period.{key}")),
                );
            }
            t
        }
    };
    let start = bound("start", false);
    let end = bound("end", true);
    let mut senders = Vec::new();
    let mut recipients = Vec::new();
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
        let Some(partner) = reference.and_then(&partner_for) else {
            issues.push(
                Issue::error(
                    IssueCode::BusinessRule,
                    "actor must reference a partner organisation known to this gateway, as Organization/<partner id>",
                )
                .at(format!("Consent.provision.actor[{i}].reference")),
            );
            continue;
        };
        let roles: Vec<&str> = actor
            .pointer("/role/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("system").and_then(Value::as_str) == Some(PARTICIPATION_TYPE))
            .filter_map(|c| c.get("code").and_then(Value::as_str))
            .collect();
        let mut known = false;
        if roles.contains(&ROLE_INFORMANT) {
            senders.push(partner.clone());
            known = true;
        }
        if roles.contains(&ROLE_RECIPIENT) {
            recipients.push(partner);
            known = true;
        }
        if !known {
            issues.push(
                Issue::error(
                    IssueCode::BusinessRule,
                    "actor.role must be v3-ParticipationType INF (may disclose to housing) or IRCP (may receive from housing)",
                )
                .at(format!("Consent.provision.actor[{i}].role")),
            );
        }
    }
    if senders.is_empty()
        && recipients.is_empty()
        && !refused
        && status == ConsentStatus::Active
        && issues.is_empty()
    {
        issues.push(
            Issue::error(
                IssueCode::BusinessRule,
                "an active consent must name at least one partner as actor",
            )
            .at("Consent.provision.actor"),
        );
    }
    let purposes = purposes_of(provision.get("purpose"), &mut issues);
    // What Hearth does not enforce is refused, never stored and ignored: a consent that
    // reads "deny the MCO" or "not these codes" must not be taken to permit them.
    if consent.get("modifierExtension").is_some() {
        issues.push(unenforceable("Consent.modifierExtension"));
    }
    if let Some(map) = provision.as_object() {
        for key in map.keys().filter(|k| !ROOT_PROVISION.contains(&k.as_str())) {
            issues.push(unenforceable(&format!("Consent.provision.{key}")));
        }
    }
    // Hearth's exchanges are disclosures: a permit for other actions only (access,
    // collect) would be enforced as one for disclosure.
    if provision.get("action").is_some() && !permits_disclosure(provision.get("action")) {
        issues.push(unenforceable("Consent.provision.action"));
    }
    let mut denied_labels = Vec::new();
    let mut partner_denials = Vec::new();
    for (i, nested) in provision
        .get("provision")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let labels = match labels_of(nested.get("securityLabel"), i, &is_label) {
            Ok(labels) => labels,
            Err(issue) => {
                issues.push(issue);
                continue;
            }
        };
        let only_labels = nested
            .as_object()
            .is_some_and(|m| m.keys().all(|k| NESTED_PROVISION.contains(&k.as_str())));
        if nested.get("type").and_then(Value::as_str) != Some("deny")
            || labels.is_empty()
            || !only_labels
        {
            issues.push(unenforceable(&format!("Consent.provision.provision[{i}]")));
            continue;
        }
        // Naming actors, the deny holds for those partners only, in the direction each
        // role says: IRCP when the partner receives from housing, INF when it sends.
        let actors = nested.get("actor").and_then(Value::as_array);
        let Some(actors) = actors.filter(|a| !a.is_empty()) else {
            denied_labels.extend(labels);
            continue;
        };
        for (j, actor) in actors.iter().enumerate() {
            let at = format!("Consent.provision.provision[{i}].actor[{j}]");
            let partner = actor
                .pointer("/reference/reference")
                .and_then(Value::as_str)
                .and_then(&partner_for);
            let roles: Vec<bool> = actor
                .pointer("/role/coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| c.get("system").and_then(Value::as_str) == Some(PARTICIPATION_TYPE))
                .filter_map(|c| match c.get("code").and_then(Value::as_str) {
                    Some(ROLE_RECIPIENT) => Some(true),
                    Some(ROLE_INFORMANT) => Some(false),
                    _ => None,
                })
                .collect();
            // Only a partner the consent lets exchange in that direction: anything else
            // would be kept as if it held and never apply (housing itself, say).
            let holds = |p: &PartnerId, receiving: bool| {
                if receiving {
                    recipients.contains(p)
                } else {
                    senders.contains(p)
                }
            };
            match partner {
                Some(partner)
                    if !roles.is_empty() && roles.iter().all(|r| holds(&partner, *r)) =>
                {
                    for receiving in roles {
                        partner_denials.push(PartnerDenial {
                            partner: partner.clone(),
                            receiving,
                            labels: labels.clone(),
                        });
                    }
                }
                _ => issues.push(
                    Issue::error(
                        IssueCode::BusinessRule,
                        "a restriction for one partner names, as Organization/<partner id>, a partner the consent lets receive from housing (role IRCP) or send to it (INF), with that role",
                    )
                    .at(at),
                ),
            }
        }
    }
    match (issues.is_empty(), recorded) {
        (true, Some(recorded)) => Ok(ConsentTerms {
            status,
            recorded,
            refused,
            start,
            end,
            senders,
            recipients,
            purposes,
            denied_labels,
            partner_denials,
        }),
        _ => Err(issues),
    }
}

/// Whether an `action` list names disclosure (`consentaction#disclose`).
fn permits_disclosure(action: Option<&Value>) -> bool {
    action
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|a| {
            a.get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .any(|c| {
            c.get("system").and_then(Value::as_str)
                == Some("http://terminology.hl7.org/CodeSystem/consentaction")
                && c.get("code").and_then(Value::as_str) == Some("disclose")
        })
}

/// Elements of the root provision Hearth reads (`action` must include disclosure).
const ROOT_PROVISION: &[&str] = &[
    "id",
    "extension",
    "type",
    "period",
    "actor",
    "action",
    "purpose",
    "provision",
];

/// A nested provision Hearth enforces: a deny of security labels (for whatever action it
/// names: Hearth withholds them from every exchange, which is the stricter reading).
const NESTED_PROVISION: &[&str] = &[
    "id",
    "extension",
    "type",
    "action",
    "actor",
    "securityLabel",
];

fn unenforceable(at: &str) -> Issue {
    Issue::error(
        IssueCode::NotSupported,
        "Hearth cannot enforce this part of a consent, so it does not accept it: it reads who may share (actor), when (period), why (purpose) and nested deny provisions by securityLabel, for everyone or for the partners they name as actor",
    )
    .at(at)
}

/// Each Coding of a list, by position: its system and code, where given.
fn codings(list: Option<&Value>) -> impl Iterator<Item = (usize, Option<&str>, Option<&str>)> {
    fn text<'v>(c: &'v Value, key: &str) -> Option<&'v str> {
        c.get(key).and_then(Value::as_str)
    }
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(k, c)| (k, text(c, "system"), text(c, "code")))
}

/// The purposes of use: v3-ActReason codes. One from another system would be compared
/// with Hearth's purposes by its code alone, and could mean something else there.
fn purposes_of(list: Option<&Value>, issues: &mut Vec<Issue>) -> Vec<String> {
    let mut purposes = Vec::new();
    for (k, system, code) in codings(list) {
        match (system, code) {
            (Some(ACT_REASON), Some(code)) => purposes.push(code.to_string()),
            _ => issues.push(
                Issue::error(
                    IssueCode::Value,
                    format!(
                        "a purpose of use is a code of {ACT_REASON} (care coordination is COC)"
                    ),
                )
                .at(format!("Consent.provision.purpose[{k}]")),
            ),
        }
    }
    purposes
}

/// A nested deny's security labels. Each must be one Hearth puts on data — a label system
/// it reads and a code `is_label` knows — or the restriction would be stored and never
/// withhold anything.
fn labels_of(
    list: Option<&Value>,
    provision: usize,
    is_label: &impl Fn(&str) -> bool,
) -> Result<Vec<String>, Issue> {
    let mut labels = Vec::new();
    for (k, system, code) in codings(list) {
        let problem = match (system, code) {
            (Some(s), Some(code)) if LABEL_SYSTEMS.contains(&s) && is_label(code) => {
                labels.push(code.to_string());
                continue;
            }
            (_, None) => "a security label needs a code".to_string(),
            (Some(s), Some(_)) if LABEL_SYSTEMS.contains(&s) => {
                "Hearth never puts this label on data, so a restriction on it would withhold nothing: name one it assigns (SUD, ETH, HIV, PSY, SEX … as listed in mappings/sensitivity.toml)".to_string()
            }
            _ => format!(
                "a security label is a code of {}: Hearth matches labels by code, and another system's code could mean something else",
                LABEL_SYSTEMS.join(" or ")
            ),
        };
        return Err(Issue::error(IssueCode::NotSupported, problem).at(format!(
            "Consent.provision.provision[{provision}].securityLabel[{k}]"
        )));
    }
    Ok(labels)
}

/// Who gave the consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GivenBy {
    Tenant,
    Representative,
}

impl GivenBy {
    /// Who a Consent says gave it: a representative when its performer is a RelatedPerson,
    /// else the tenant (the performer [`terms_to_fhir`] writes back).
    pub fn of(consent: &Value) -> Self {
        let performer = &consent["performer"][0];
        let related = performer["type"] == "RelatedPerson"
            || performer["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("RelatedPerson"));
        if related {
            GivenBy::Representative
        } else {
            GivenBy::Tenant
        }
    }
}

/// Writes a FHIR R4 Consent for `terms` about `tenant`, kept by `custodian`.
pub fn terms_to_fhir(
    terms: &ConsentTerms,
    tenant: &Identifier,
    custodian: &PartnerId,
    given_by: GivenBy,
) -> Value {
    let date = |t: OffsetDateTime| rfc3339(t);
    let mut period = serde_json::Map::new();
    if let Some(s) = terms.start {
        period.insert("start".into(), json!(date(s)));
    }
    if let Some(e) = terms.end {
        // Stored exclusive; FHIR's period.end is the last instant covered.
        period.insert("end".into(), json!(date(e - time::Duration::SECOND)));
    }
    let mut actors = Vec::new();
    for (role, display, partners) in [
        (ROLE_INFORMANT, "informant", &terms.senders),
        (ROLE_RECIPIENT, "information recipient", &terms.recipients),
    ] {
        for p in partners {
            actors.push(json!({
                "role": {"coding": [{"system": PARTICIPATION_TYPE, "code": role, "display": display}]},
                "reference": {"reference": format!("Organization/{p}")},
            }));
        }
    }
    let mut provision = json!({
        "type": if terms.refused { "deny" } else { "permit" },
        "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "disclose"}]}],
    });
    if !period.is_empty() {
        provision["period"] = Value::Object(period);
    }
    if !actors.is_empty() {
        provision["actor"] = json!(actors);
    }
    if !terms.purposes.is_empty() {
        provision["purpose"] = terms
            .purposes
            .iter()
            .map(|p| json!({"system": ACT_REASON, "code": p}))
            .collect();
    }
    let labels = |ls: &[String]| {
        ls.iter()
            .map(|l| json!({"system": ACT_CODE, "code": l}))
            .collect::<Vec<_>>()
    };
    let mut nested = Vec::new();
    if !terms.denied_labels.is_empty() {
        nested.push(json!({"type": "deny", "securityLabel": labels(&terms.denied_labels)}));
    }
    for d in &terms.partner_denials {
        let (role, display) = if d.receiving {
            (ROLE_RECIPIENT, "information recipient")
        } else {
            (ROLE_INFORMANT, "informant")
        };
        nested.push(json!({
            "type": "deny",
            "actor": [{
                "role": {"coding": [{"system": PARTICIPATION_TYPE, "code": role, "display": display}]},
                "reference": {"reference": format!("Organization/{}", d.partner)},
            }],
            "securityLabel": labels(&d.labels),
        }));
    }
    if !nested.is_empty() {
        provision["provision"] = Value::Array(nested);
    }
    let performer = match given_by {
        GivenBy::Tenant => {
            json!({"type": "Patient", "identifier": {"system": tenant.system, "value": tenant.value}})
        }
        GivenBy::Representative => {
            json!({"type": "RelatedPerson", "display": "the tenant's representative"})
        }
    };
    json!({
        "resourceType": "Consent",
        "status": terms.status.as_str(),
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": ACT_CODE, "code": "IDSCL"}]}],
        "patient": {"identifier": {"system": tenant.system, "value": tenant.value}},
        "dateTime": date(terms.recorded),
        "performer": [performer],
        "organization": [{"reference": format!("Organization/{custodian}")}],
        "policyRule": {"coding": [{"system": ACT_CODE, "code": if terms.refused { "OPTOUT" } else { "OPTIN" }}]},
        "provision": provision,
    })
}

/// Parses a FHIR date or dateTime. A partial date stands for its whole span: as a start
/// it means the first instant, as an `end` the instant after its last.
pub fn parse_fhir_instant(s: &str, end: bool) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::{Date, Month, Time};
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        // A full instant as an end is the last moment covered; make it exclusive.
        return Some(if end { t + time::Duration::SECOND } else { t });
    }
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() > 3 || parts[0].len() != 4 {
        return None;
    }
    let year: i32 = parts[0].parse().ok()?;
    let month: u8 = parts.get(1).map_or(Ok(1), |m| m.parse()).ok()?;
    let day: u8 = parts.get(2).map_or(Ok(1), |d| d.parse()).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn partner(r: &str) -> Option<PartnerId> {
        r.strip_prefix("Organization/").map(PartnerId::new)
    }

    fn any_label(_: &str) -> bool {
        true
    }

    /// A restriction Hearth could never apply is refused, not stored: a label from another
    /// code system (its code may mean something else there), one Hearth never assigns, or
    /// a purpose that is not a v3-ActReason code.
    #[test]
    fn labels_and_purposes_hearth_cannot_match_are_refused_where_they_stand() {
        let actor = json!({"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP"}]}, "reference": {"reference": "Organization/mco"}});
        let consent = |purpose: Value, labels: Value| {
            json!({"resourceType": "Consent", "status": "active", "dateTime": "2026-01-01",
                "provision": {"type": "permit", "actor": [actor], "purpose": purpose,
                    "provision": [{"type": "deny", "securityLabel": labels}]}})
        };
        let is_label = |code: &str| ["SUD", "ETH", "R"].contains(&code);
        let reason = json!([{"system": ACT_REASON, "code": "COC"}]);
        let sud = json!({"system": ACT_CODE, "code": "SUD"});
        let restricted = json!({"system": LABEL_SYSTEMS[1], "code": "R"});
        let ok = terms_from_fhir(
            &consent(reason.clone(), json!([sud, restricted])),
            partner,
            is_label,
        );
        assert_eq!(ok.unwrap().denied_labels, ["SUD", "R"]);

        let cases = [
            (
                json!([sud, {"system": "http://example.org/local-labels", "code": "ETH"}]),
                "Consent.provision.provision[0].securityLabel[1]",
            ),
            (
                json!([{"code": "SUD"}]),
                "Consent.provision.provision[0].securityLabel[0]",
            ),
            (
                json!([{"system": ACT_CODE, "code": "GDIS"}]),
                "Consent.provision.provision[0].securityLabel[0]",
            ),
        ];
        for (labels, want) in cases {
            let issues =
                terms_from_fhir(&consent(reason.clone(), labels), partner, is_label).unwrap_err();
            let got: Vec<&str> = issues
                .iter()
                .flat_map(|i| i.expression.iter().map(String::as_str))
                .collect();
            assert_eq!(got, [want]);
        }
        let local_purpose = json!([{"system": ACT_REASON, "code": "COC"}, {"system": "http://example.org/purposes", "code": "COC"}]);
        let issues =
            terms_from_fhir(&consent(local_purpose, json!([sud])), partner, is_label).unwrap_err();
        assert_eq!(issues[0].expression, ["Consent.provision.purpose[1]"]);
    }

    #[test]
    fn unknown_actors_and_roles_are_issues_at_the_actor() {
        let fhir = json!({"resourceType": "Consent", "status": "active", "dateTime": "2026-01-01",
        "provision": {"type": "permit", "actor": [
            {"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP"}]}, "reference": {"reference": "Practitioner/x"}},
            {"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "AUT"}]}, "reference": {"reference": "Organization/clinic"}}
        ]}});
        let issues = terms_from_fhir(&fhir, partner, any_label).unwrap_err();
        let at: Vec<&str> = issues.iter().map(|i| i.expression[0].as_str()).collect();
        assert_eq!(
            at,
            [
                "Consent.provision.actor[0].reference",
                "Consent.provision.actor[1].role"
            ]
        );
    }

    /// A restriction Hearth could not enforce is refused where it is written, rather
    /// than stored and then ignored (which would permit what the tenant denied).
    #[test]
    fn restrictions_hearth_cannot_enforce_are_refused_where_they_are_written() {
        let actor = json!({"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "INF"}]}, "reference": {"reference": "Organization/clinic"}});
        let sud =
            json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "SUD"});
        let fhir = json!({"resourceType": "Consent", "status": "active", "dateTime": "2026-01-01",
        "modifierExtension": [{"url": "https://example.org/only-on-weekdays", "valueBoolean": true}],
        "provision": {"type": "permit", "actor": [actor], "securityLabel": [sud],
            "provision": [
                {"type": "deny", "securityLabel": [sud]},
                {"type": "deny", "actor": [{"role": {"coding": [{"system": PARTICIPATION_TYPE, "code": "IRCP"}]}, "reference": {"reference": "Organization/mco"}}]},
                {"type": "deny", "securityLabel": [sud], "dataPeriod": {"start": "2026-01-01"}},
                {"type": "permit", "securityLabel": [sud]}
            ]}});
        let issues = terms_from_fhir(&fhir, partner, any_label).unwrap_err();
        let at: Vec<&str> = issues.iter().map(|i| i.expression[0].as_str()).collect();
        assert_eq!(
            at,
            [
                "Consent.modifierExtension",
                "Consent.provision.securityLabel",
                "Consent.provision.provision[1]",
                "Consent.provision.provision[2]",
                "Consent.provision.provision[3]"
            ]
        );
        // The supported shape on its own is accepted, a nested deny naming its action too.
        let disclose = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "disclose"}]}]);
        let plain = json!({"resourceType": "Consent", "status": "active", "dateTime": "2026-01-01",
            "provision": {"type": "permit", "actor": [fhir["provision"]["actor"][0]], "action": disclose,
                "provision": [{"type": "deny", "action": disclose, "securityLabel": [sud]}]}});
        assert_eq!(
            terms_from_fhir(&plain, partner, any_label)
                .unwrap()
                .denied_labels,
            ["SUD"]
        );
        // A permit to collect only is not a permit to disclose.
        let mut collect = plain.clone();
        collect["provision"]["action"][0]["coding"][0]["code"] = json!("collect");
        let issues = terms_from_fhir(&collect, partner, any_label).unwrap_err();
        assert_eq!(issues[0].expression, ["Consent.provision.action"]);
    }

    #[test]
    fn terms_survive_a_round_trip_through_fhir() {
        let terms = ConsentTerms {
            status: ConsentStatus::Active,
            recorded: datetime!(2026-11-23 10:00 UTC),
            refused: false,
            start: Some(datetime!(2026-11-23 00:00 UTC)),
            end: Some(datetime!(2027-05-24 00:00 UTC)),
            senders: vec![PartnerId::new("clinic"), PartnerId::new("mco")],
            recipients: vec![PartnerId::new("clinic")],
            purposes: vec!["COC".into()],
            denied_labels: vec!["SUD".into(), "ETH".into()],
            partner_denials: vec![
                PartnerDenial {
                    partner: PartnerId::new("clinic"),
                    receiving: true,
                    labels: vec!["HIV".into()],
                },
                PartnerDenial {
                    partner: PartnerId::new("clinic"),
                    receiving: false,
                    labels: vec!["PSY".into()],
                },
            ],
        };
        let fhir = terms_to_fhir(
            &terms,
            &Identifier::new("urn:t", "T-1"),
            &PartnerId::new("housing"),
            GivenBy::Tenant,
        );
        assert_eq!(terms_from_fhir(&fhir, partner, any_label).unwrap(), terms);
        // A restriction for a partner the consent does not let receive could never apply:
        // refused where it is written, not kept as if it held.
        let mut stray = terms.clone();
        stray.partner_denials = vec![PartnerDenial {
            partner: PartnerId::new("mco"),
            receiving: true,
            labels: vec!["HIV".into()],
        }];
        let fhir = terms_to_fhir(
            &stray,
            &Identifier::new("urn:t", "T-1"),
            &PartnerId::new("housing"),
            GivenBy::Tenant,
        );
        let issues = terms_from_fhir(&fhir, partner, any_label).unwrap_err();
        assert_eq!(
            issues[0].expression,
            ["Consent.provision.provision[1].actor[0]"]
        );
        let mut refusal = terms.clone();
        refusal.refused = true;
        let fhir = terms_to_fhir(
            &refusal,
            &Identifier::new("urn:t", "T-1"),
            &PartnerId::new("housing"),
            GivenBy::Representative,
        );
        assert_eq!(fhir["provision"]["type"], "deny");
        assert_eq!(terms_from_fhir(&fhir, partner, any_label).unwrap(), refusal);
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
