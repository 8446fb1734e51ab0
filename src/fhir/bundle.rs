//! A transaction's Patient entries: the subject that its other entries name by `fullUrl`.
//!
//! EHRs commonly send a transaction with the Patient as one entry (`fullUrl:
//! "urn:uuid:…"`) and notices whose `subject.reference` points at it. Hearth keeps no
//! Patient resources: such an entry only says who the notices are about. Each notice is
//! rewritten to name its subject the way a notice sent on its own does (a contained
//! Patient carrying the entry's identifiers and nothing else), so it is linked, checked
//! for consent and recognised as a retry by the same rules. The digest is taken after the
//! rewrite: a retry with fresh `urn:uuid`s is still the same notice.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Issue, IssueCode};

/// The elements that name a resource's subject (`patient` for a Consent).
const SUBJECT_ELEMENTS: [&str; 2] = ["subject", "patient"];

/// A transaction's Patient entries, by `fullUrl`.
#[derive(Debug, Default)]
pub struct LocalPatients<'b> {
    /// fullUrl → the Patient's identifiers (those with a system and a value).
    by_url: HashMap<&'b str, Vec<Value>>,
}

/// Whether a Bundle entry is a Patient (which Hearth reads, never stores).
pub fn is_patient_entry(entry: &Value) -> bool {
    entry
        .get("resource")
        .and_then(super::resource_type)
        .is_some_and(|t| t == "Patient")
}

impl<'b> LocalPatients<'b> {
    /// The Patient entries of `entries`. Each needs a `fullUrl` no other entry uses (or
    /// nothing could point at it) and an identifier Hearth can link to a tenant.
    pub fn of(entries: &'b [Value]) -> Result<Self, Issue> {
        let mut by_url = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            if !is_patient_entry(entry) {
                continue;
            }
            let url = entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    Issue::error(
                        IssueCode::Required,
                        "a Patient entry needs a fullUrl for the entries about it to reference",
                    )
                    .at(format!("Bundle.entry[{i}].fullUrl"))
                })?;
            let identifiers: Vec<Value> = entry["resource"]
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|id| id.get("system").is_some() && id.get("value").is_some())
                .map(|id| json!({"system": id["system"], "value": id["value"]}))
                .collect();
            if identifiers.is_empty() {
                return Err(Issue::error(
                    IssueCode::Required,
                    "the Patient must carry an identifier (system and value) Hearth can link to a tenant",
                )
                .at(format!("Bundle.entry[{i}].resource.identifier")));
            }
            if by_url.insert(url, identifiers).is_some() {
                return Err(Issue::error(
                    IssueCode::Invariant,
                    "another Patient entry has the same fullUrl",
                )
                .at(format!("Bundle.entry[{i}].fullUrl")));
            }
        }
        Ok(Self { by_url })
    }

    /// Rewrites a subject that names one of these Patients into a contained Patient with
    /// its identifiers. A `urn:` reference that names none is refused: no other entry of
    /// the Bundle can be the subject. Issue expressions are rooted at the resource.
    pub fn resolve(&self, resource: &mut Value) -> Result<(), Issue> {
        let rt = super::resource_type(resource)
            .unwrap_or("Resource")
            .to_string();
        for element in SUBJECT_ELEMENTS {
            let Some(reference) = resource
                .pointer(&format!("/{element}/reference"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let Some(identifiers) = self.by_url.get(reference) else {
                if reference.starts_with("urn:") {
                    return Err(Issue::error(
                        IssueCode::Invariant,
                        format!("{element}.reference names no Patient entry of this transaction"),
                    )
                    .at(format!("{rt}.{element}.reference")));
                }
                continue;
            };
            let id = unused_contained_id(resource, "subject");
            let patient = json!({"resourceType": "Patient", "id": id, "identifier": identifiers});
            let contained = resource
                .as_object_mut()
                .expect("a resource is a JSON object")
                .entry("contained")
                .or_insert_with(|| json!([]));
            match contained.as_array_mut() {
                Some(list) => list.push(patient),
                // Not a list: the profile check reports it at its place.
                None => return Ok(()),
            }
            let subject = &mut resource[element];
            let mut named = json!({"reference": format!("#{id}")});
            if let Some(given) = subject.get("identifier") {
                named["identifier"] = given.clone();
            }
            *subject = named;
        }
        Ok(())
    }
}

/// `base`, or `base-2`, `base-3`…: the first id no contained resource has.
fn unused_contained_id(resource: &Value, base: &str) -> String {
    let taken = |id: &str| {
        resource
            .get("contained")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|r| r.get("id").and_then(Value::as_str) == Some(id))
            })
    };
    std::iter::once(base.to_string())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|id| !taken(id))
        .expect("an unused id")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(url: &str, ids: Value) -> Value {
        json!({"fullUrl": url, "resource": {"resourceType": "Patient", "identifier": ids,
               "name": [{"family": "Okafor"}]},
               "request": {"method": "POST", "url": "Patient"}})
    }

    const MRN: &str = "https://riverside-clinic.example/fhir/mrn";

    #[test]
    fn a_subject_named_by_full_url_becomes_a_contained_patient_with_its_identifiers_only() {
        let entries = [patient(
            "urn:uuid:p1",
            json!([{"system": MRN, "value": "MRN-1", "period": {"start": "2020"}}, {"value": "no system"}]),
        )];
        let patients = LocalPatients::of(&entries).unwrap();
        let mut notice = json!({"resourceType": "Communication",
            "contained": [{"resourceType": "Location", "id": "subject"}],
            "subject": {"reference": "urn:uuid:p1", "display": "Ms Okafor"}});
        patients.resolve(&mut notice).unwrap();
        assert_eq!(notice["subject"], json!({"reference": "#subject-2"}));
        assert_eq!(
            notice["contained"][1],
            json!({"resourceType": "Patient", "id": "subject-2",
                   "identifier": [{"system": MRN, "value": "MRN-1"}]})
        );
    }

    #[test]
    fn a_urn_that_names_no_patient_entry_is_refused_at_the_reference() {
        let patients = LocalPatients::of(&[]).unwrap();
        let mut notice =
            json!({"resourceType": "Communication", "subject": {"reference": "urn:uuid:gone"}});
        let issue = patients.resolve(&mut notice).unwrap_err();
        assert_eq!(issue.expression, ["Communication.subject.reference"]);
        // A subject given by identifier, or any other reference, is left to tenancy.
        let mut plain =
            json!({"resourceType": "Communication", "subject": {"reference": "Patient/7"}});
        patients.resolve(&mut plain).unwrap();
        assert_eq!(plain["subject"], json!({"reference": "Patient/7"}));
    }

    #[test]
    fn a_patient_entry_needs_a_unique_full_url_and_a_linkable_identifier() {
        let ids = json!([{"system": MRN, "value": "MRN-1"}]);
        let mut no_url = patient("", ids.clone());
        no_url.as_object_mut().unwrap().remove("fullUrl");
        let cases = [
            (vec![no_url], "Bundle.entry[0].fullUrl"),
            (
                vec![patient("urn:uuid:p", json!([{"value": "x"}]))],
                "Bundle.entry[0].resource.identifier",
            ),
            (
                vec![
                    patient("urn:uuid:p", ids.clone()),
                    patient("urn:uuid:p", ids),
                ],
                "Bundle.entry[1].fullUrl",
            ),
        ];
        for (entries, expression) in cases {
            assert_eq!(
                LocalPatients::of(&entries).unwrap_err().expression,
                [expression]
            );
        }
    }
}
