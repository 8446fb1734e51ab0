//! The housing form of a consent: what a worker records at intake, in plain terms.
//! It becomes a FHIR R4 Consent (via [`super::fhir::terms_to_fhir`]) and is read back
//! from it, so both forms always agree on what is enforced.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::fhir::GivenBy;
use super::{ConsentStatus, ConsentTerms, PartnerDenial, parse_fhir_instant};
use crate::fhir::{Issue, IssueCode};
use crate::ids::{PartnerId, TenantId};

/// `POST /housing/consents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentForm {
    pub tenant_id: TenantId,
    /// `share` (default) or `refuse`.
    #[serde(default)]
    pub decision: FormDecision,
    /// Partner ids the tenant agrees to share with.
    #[serde(default)]
    pub share_with: Vec<PartnerId>,
    /// `both` (default): partners may send to and receive from housing.
    #[serde(default)]
    pub direction: FormDirection,
    /// `care-coordination` (default) or `treatment`.
    #[serde(default)]
    pub purpose: FormPurpose,
    /// First day of sharing (default: the day it is recorded).
    pub valid_from: Option<String>,
    /// Last day of sharing: the renewal date. Required when sharing.
    pub valid_until: Option<String>,
    /// Named restrictions from `mappings/sensitivity.toml` (e.g. `substance-use`).
    #[serde(default)]
    pub restrictions: Vec<String>,
    /// Restrictions for one partner only, when it receives from housing: e.g.
    /// `{"bayview-health-plan": ["substance-use"]}` shares those details with the clinic
    /// but not the MCO.
    #[serde(default)]
    pub withhold_from: std::collections::BTreeMap<PartnerId, Vec<String>>,
    /// `tenant` (default) or `representative`.
    #[serde(default)]
    pub given_by: FormGivenBy,
    /// When the tenant made the choice (default: now).
    pub signed_at: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormDecision {
    #[default]
    Share,
    Refuse,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormDirection {
    #[default]
    Both,
    ToHousing,
    FromHousing,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormPurpose {
    #[default]
    CareCoordination,
    Treatment,
}

impl FormPurpose {
    pub fn code(self) -> &'static str {
        match self {
            FormPurpose::CareCoordination => "COC",
            FormPurpose::Treatment => "TREAT",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormGivenBy {
    #[default]
    Tenant,
    Representative,
}

impl ConsentForm {
    pub fn given_by(&self) -> GivenBy {
        match self.given_by {
            FormGivenBy::Tenant => GivenBy::Tenant,
            FormGivenBy::Representative => GivenBy::Representative,
        }
    }

    /// The terms this form records. `known_partner` and `restriction_labels` come from
    /// the config and `mappings/sensitivity.toml`.
    pub fn terms(
        &self,
        now: OffsetDateTime,
        known_partner: impl Fn(&PartnerId) -> bool,
        restriction_labels: impl Fn(&str) -> Option<Vec<String>>,
    ) -> Result<ConsentTerms, Vec<Issue>> {
        let mut issues = Vec::new();
        let date = |field: &str, value: &Option<String>, end: bool, issues: &mut Vec<Issue>| {
            value.as_ref().and_then(|v| {
                let t = parse_fhir_instant(v, end);
                if t.is_none() {
                    issues.push(
                        Issue::error(IssueCode::Value, "expected a date such as 2027-05-31")
                            .at(field),
                    );
                }
                t
            })
        };
        let recorded = date("signed_at", &self.signed_at, false, &mut issues).unwrap_or(now);
        let start = date("valid_from", &self.valid_from, false, &mut issues)
            .or_else(|| Some(now.replace_time(time::Time::MIDNIGHT)));
        let end = date("valid_until", &self.valid_until, true, &mut issues);
        let refused = self.decision == FormDecision::Refuse;
        if !refused {
            if self.share_with.is_empty() {
                issues.push(
                    Issue::error(
                        IssueCode::Required,
                        "name at least one partner to share with",
                    )
                    .at("share_with"),
                );
            }
            if end.is_none() && self.valid_until.is_none() {
                issues.push(
                    Issue::error(
                        IssueCode::Required,
                        "a consent to share needs an end (renewal) date",
                    )
                    .at("valid_until"),
                );
            }
        }
        for (i, p) in self.share_with.iter().enumerate() {
            if !known_partner(p) {
                issues.push(
                    Issue::error(
                        IssueCode::Value,
                        format!("`{p}` is not a configured partner"),
                    )
                    .at(format!("share_with[{i}]")),
                );
            }
        }
        let mut denied_labels = Vec::new();
        for (i, r) in self.restrictions.iter().enumerate() {
            match restriction_labels(r) {
                Some(labels) => denied_labels.extend(labels),
                None => issues.push(
                    Issue::error(
                        IssueCode::Value,
                        format!("`{r}` is not a restriction named in mappings/sensitivity.toml"),
                    )
                    .at(format!("restrictions[{i}]")),
                ),
            }
        }
        let mut partner_denials = Vec::new();
        // A restriction that could never apply is refused, not kept as if it held: the
        // partner must be one the tenant shares with, able to receive from housing.
        let receives = !refused && self.direction != FormDirection::ToHousing;
        for (partner, names) in &self.withhold_from {
            let problem = if !known_partner(partner) {
                Some(format!("`{partner}` is not a configured partner"))
            } else if !receives || !self.share_with.contains(partner) {
                Some(format!(
                    "`{partner}` receives nothing from housing under this consent, so nothing can be withheld from it"
                ))
            } else if names.is_empty() {
                Some("name at least one restriction".to_string())
            } else {
                None
            };
            if let Some(message) = problem {
                issues.push(
                    Issue::error(IssueCode::Value, message).at(format!("withhold_from.{partner}")),
                );
                continue;
            }
            let mut labels = Vec::new();
            for (i, r) in names.iter().enumerate() {
                match restriction_labels(r) {
                    Some(l) => labels.extend(l),
                    None => issues.push(
                        Issue::error(
                            IssueCode::Value,
                            format!(
                                "`{r}` is not a restriction named in mappings/sensitivity.toml"
                            ),
                        )
                        .at(format!("withhold_from.{partner}[{i}]")),
                    ),
                }
            }
            if !labels.is_empty() {
                partner_denials.push(PartnerDenial {
                    partner: partner.clone(),
                    receiving: true,
                    labels,
                });
            }
        }
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            issues.push(
                Issue::error(IssueCode::Invariant, "valid_until is before valid_from")
                    .at("valid_until"),
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let partners = if refused {
            Vec::new()
        } else {
            self.share_with.clone()
        };
        let (senders, recipients) = match self.direction {
            FormDirection::Both => (partners.clone(), partners),
            FormDirection::ToHousing => (partners, Vec::new()),
            FormDirection::FromHousing => (Vec::new(), partners),
        };
        Ok(ConsentTerms {
            status: ConsentStatus::Active,
            recorded,
            refused,
            start,
            end,
            senders,
            recipients,
            purposes: vec![self.purpose.code().to_string()],
            denied_labels,
            partner_denials,
        })
    }
}
