//! Tenant linking: which tenant an inbound resource is about, by the identifiers partners
//! know the tenant by (housing tenant ID, a clinic's MRN, an MCO member ID). No names or
//! birth dates are used.
//!
//! Invariant: pure functions over JSON; lookups happen in the store.

use serde::Deserialize;
use serde_json::Value;

use crate::fhir::{Issue, IssueCode};
use crate::ids::{Identifier, TenantId};

/// A tenant as housing registers it (`POST /housing/tenants`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRegistration {
    pub tenant_id: TenantId,
    /// Identifiers partners use for this tenant, each under its partner's system.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
}

impl TenantRegistration {
    /// Checks the registration and returns every identifier to link, the housing
    /// tenant ID (under `tenant_system`) first.
    pub fn identifiers_to_link(&self, tenant_system: &str) -> Result<Vec<Identifier>, String> {
        let id = self.tenant_id.as_str();
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err("tenant_id must be 1–64 letters, digits, '-', '.' or '_'".into());
        }
        let mut all = vec![Identifier::new(tenant_system, id)];
        for i in &self.identifiers {
            if i.system.trim().is_empty() || i.value.trim().is_empty() {
                return Err("each identifier needs a system and a value".into());
            }
            // Another housing tenant ID would route that tenant's notices here.
            if i.system == tenant_system && i.value != id {
                return Err(format!(
                    "an identifier in {tenant_system} must be this tenant's own ID, {id}"
                ));
            }
            if !all.contains(i) {
                all.push(i.clone());
            }
        }
        Ok(all)
    }
}

/// The identifiers naming the subject of `resource` (`subject`, or `patient` for a
/// Consent), given directly or through a contained Patient.
pub fn subject_identifiers(resource: &Value) -> Result<Vec<Identifier>, Issue> {
    let rt = crate::fhir::resource_type(resource).unwrap_or("Resource");
    let element = if rt == "Consent" {
        "patient"
    } else {
        "subject"
    };
    let missing = || {
        Issue::error(
            IssueCode::Required,
            format!("the {element} must be identified by an identifier (system and value) Hearth can link to a tenant"),
        )
        .at(format!("{rt}.{element}"))
    };
    let subject = resource.get(element).ok_or_else(missing)?;
    let mut ids = Vec::new();
    if let Some(i) = subject.get("identifier").and_then(identifier) {
        ids.push(i);
    }
    if let Some(local) = subject
        .get("reference")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        let patient = resource
            .get("contained")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(local))
            .filter(|c| crate::fhir::resource_type(c) == Some("Patient"))
            .ok_or_else(|| {
                Issue::error(
                    IssueCode::Invariant,
                    format!("{element}.reference does not name a contained Patient"),
                )
                .at(format!("{rt}.{element}.reference"))
            })?;
        ids.extend(
            patient
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(identifier),
        );
    }
    if ids.is_empty() {
        return Err(missing());
    }
    Ok(ids)
}

/// A FHIR Identifier with both `system` and `value`.
pub fn identifier(v: &Value) -> Option<Identifier> {
    Some(Identifier::new(
        v.get("system")?.as_str()?,
        v.get("value")?.as_str()?,
    ))
}

/// Why an inbound subject does not link to exactly one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFailure {
    Unknown,
    Ambiguous,
}

impl LinkFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkFailure::Unknown => "unknown-tenant",
            LinkFailure::Ambiguous => "ambiguous-tenant",
        }
    }
}

/// Decides the tenant from what each identifier resolved to.
pub fn decide_link(resolved: &[Option<TenantId>]) -> Result<TenantId, LinkFailure> {
    let mut found: Vec<&TenantId> = resolved.iter().flatten().collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [] => Err(LinkFailure::Unknown),
        [one] => Ok((*one).clone()),
        _ => Err(LinkFailure::Ambiguous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A registration may not claim another tenant's housing ID: that tenant's notices
    /// would be linked here.
    #[test]
    fn a_registration_cannot_claim_another_tenants_housing_id() {
        let reg = |system: &str, value: &str| TenantRegistration {
            tenant_id: TenantId::new("T-1"),
            identifiers: vec![Identifier::new(system, value)],
        };
        assert!(
            reg("urn:housing", "T-2")
                .identifiers_to_link("urn:housing")
                .is_err()
        );
        assert_eq!(
            reg("urn:housing", "T-1").identifiers_to_link("urn:housing"),
            Ok(vec![Identifier::new("urn:housing", "T-1")])
        );
        assert_eq!(
            reg("urn:mrn", "T-2")
                .identifiers_to_link("urn:housing")
                .map(|l| l.len()),
            Ok(2)
        );
    }

    #[test]
    fn links_through_a_contained_patient() {
        let r = json!({"resourceType": "Communication", "subject": {"reference": "#p"},
            "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:mrn", "value": "7"}], "name": [{"text": "Not used"}]}]});
        assert_eq!(
            subject_identifiers(&r).unwrap(),
            vec![Identifier::new("urn:mrn", "7")]
        );
    }

    #[test]
    fn a_subject_without_identifier_is_an_issue_at_the_subject() {
        let r = json!({"resourceType": "CarePlan", "subject": {"display": "Jane"}});
        let issue = subject_identifiers(&r).unwrap_err();
        assert_eq!(issue.expression, vec!["CarePlan.subject"]);
    }

    #[test]
    fn identifiers_naming_two_tenants_are_ambiguous() {
        let a = TenantId::new("T-1");
        let b = TenantId::new("T-2");
        assert_eq!(
            decide_link(&[Some(a.clone()), None, Some(a.clone())]),
            Ok(a.clone())
        );
        assert_eq!(
            decide_link(&[Some(a), Some(b)]),
            Err(LinkFailure::Ambiguous)
        );
        assert_eq!(decide_link(&[None]), Err(LinkFailure::Unknown));
    }
}
