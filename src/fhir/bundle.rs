//! A transaction's Patient entries: the subject that its other entries name by `fullUrl`.
//!
//! EHRs commonly send a transaction with the Patient as one entry (`fullUrl:
//! "urn:uuid:…"`) and notices whose references (`subject`, an appointment's participant, a
//! contained flag's subject) point at it. Hearth keeps no Patient resources: such an entry
//! only says who the notices are about. Each notice is rewritten to name that Patient the
//! way a notice sent on its own does — a contained Patient carrying the entry's
//! identifiers and nothing else — so it is linked, checked for consent and recognised as a
//! retry by the same rules. The replay digest is taken after the rewrite: a retry with
//! fresh `urn:uuid`s is still the same notice. For the same reason the digest reads a
//! reference from one notice entry to another by what that entry is, not its `urn:uuid`.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Issue, IssueCode};

/// A transaction's Patient entries, by `fullUrl`.
#[derive(Debug, Default)]
pub struct LocalPatients<'b> {
    /// fullUrl → the Patient's identifiers (those with a system and a value).
    by_url: HashMap<&'b str, Vec<Value>>,
}

/// Each `urn:` fullUrl whose entry a retry would mint anew, with what the entry is: its
/// resource type and first identifier, the key Hearth stores a notice under, written as
/// the conditional reference that names it (`Communication?identifier=system|value`). A
/// fullUrl two entries share names neither.
pub fn entry_identities(entries: &[Value]) -> HashMap<&str, String> {
    let mut out = HashMap::new();
    let mut shared = Vec::new();
    for entry in entries {
        let Some(url) = entry.get("fullUrl").and_then(Value::as_str) else {
            continue;
        };
        if !url.starts_with("urn:") {
            continue;
        }
        let resource = entry.get("resource").unwrap_or(&Value::Null);
        let identity = (|| {
            let first = resource.get("identifier")?.as_array()?.first()?;
            Some(format!(
                "{}?identifier={}|{}",
                super::resource_type(resource)?,
                first.get("system")?.as_str()?,
                first.get("value")?.as_str()?
            ))
        })();
        // An entry without one (refused later) still makes its fullUrl ambiguous.
        match identity {
            Some(identity) => {
                if out.insert(url, identity).is_some() {
                    shared.push(url);
                }
            }
            None => shared.push(url),
        }
    }
    for url in shared {
        out.remove(url);
    }
    out
}

/// `resource` as its replay digest reads it: a reference to another entry of the Bundle
/// (one notice `partOf` another) names what that entry is, not its `urn:uuid`. A retry
/// mints new `urn:uuid`s and may order its entries differently; the notices it points at
/// are the same. None if there is no such reference.
pub fn by_identity(resource: &Value, identities: &HashMap<&str, String>) -> Option<Value> {
    // Most notices point at no other entry: look before copying.
    if !any_reference(resource, &|r| identities.contains_key(r)) {
        return None;
    }
    let mut copy = resource.clone();
    rewrite_references(&mut copy, &mut |r| identities.get(r).cloned());
    Some(copy)
}

/// Whether any `reference` in `v`, however deeply nested, is one `hit` picks.
fn any_reference(v: &Value, hit: &impl Fn(&str) -> bool) -> bool {
    match v {
        Value::Object(map) => {
            map.get("reference")
                .and_then(Value::as_str)
                .is_some_and(hit)
                || map.values().any(|c| any_reference(c, hit))
        }
        Value::Array(list) => list.iter().any(|c| any_reference(c, hit)),
        _ => false,
    }
}

/// Replaces every `reference` in `v` that `to` has a replacement for, however deeply
/// nested, and drops the `display` beside it (it may name the patient).
fn rewrite_references(v: &mut Value, to: &mut impl FnMut(&str) -> Option<String>) {
    match v {
        Value::Object(map) => {
            if let Some(new) = map
                .get("reference")
                .and_then(Value::as_str)
                .and_then(&mut *to)
            {
                map.insert("reference".into(), json!(new));
                map.remove("display");
            }
            map.values_mut().for_each(|c| rewrite_references(c, to));
        }
        Value::Array(list) => list.iter_mut().for_each(|c| rewrite_references(c, to)),
        _ => {}
    }
}

/// Whether a Bundle entry is a Patient (which Hearth reads, never stores).
pub fn is_patient_entry(entry: &Value) -> bool {
    entry
        .get("resource")
        .and_then(super::resource_type)
        .is_some_and(|t| t == "Patient")
}

/// A problem with one entry of a Bundle: its index, and the issue (rooted at the Bundle).
pub type EntryIssue = (usize, Issue);

impl<'b> LocalPatients<'b> {
    /// The Patient entries of `entries`. Each needs a `fullUrl` no other Patient entry
    /// uses (or nothing could point at it) and an identifier, with a system and a value,
    /// that can name a tenant.
    pub fn of(entries: &'b [Value]) -> Result<Self, EntryIssue> {
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
                    let issue = Issue::error(
                        IssueCode::Required,
                        "a Patient entry needs a fullUrl for the entries about it to reference",
                    );
                    (i, issue.at(format!("Bundle.entry[{i}].fullUrl")))
                })?;
            let text = |id: &Value, key: &str| {
                id.get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
            };
            let identifiers: Vec<Value> = entry["resource"]
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|id| {
                    Some(json!({"system": text(id, "system")?, "value": text(id, "value")?}))
                })
                .collect();
            if identifiers.is_empty() {
                let issue = Issue::error(
                    IssueCode::Required,
                    "the Patient must carry an identifier (system and value) Hearth can link to a tenant",
                );
                return Err((
                    i,
                    issue.at(format!("Bundle.entry[{i}].resource.identifier")),
                ));
            }
            if by_url.insert(url, identifiers).is_some() {
                let issue = Issue::error(
                    IssueCode::Invariant,
                    "another Patient entry has the same fullUrl",
                );
                return Err((i, issue.at(format!("Bundle.entry[{i}].fullUrl"))));
            }
        }
        Ok(Self { by_url })
    }

    /// Rewrites every reference to one of these Patients, anywhere in `resource` (its
    /// contained resources too), to a contained Patient with that entry's identifiers; a
    /// `display` beside such a reference goes. A `urn:` subject that names none of them
    /// is refused: no other entry can be the subject. Expressions are rooted at the
    /// resource. True if anything was rewritten.
    pub fn resolve(&self, resource: &mut Value) -> Result<bool, Issue> {
        if let Some(reference) = resource
            .pointer("/subject/reference")
            .and_then(Value::as_str)
            && reference.starts_with("urn:")
            && !self.by_url.contains_key(reference)
        {
            let rt = super::resource_type(resource).unwrap_or("Resource");
            return Err(Issue::error(
                IssueCode::Invariant,
                "subject.reference names no Patient entry of this transaction",
            )
            .at(format!("{rt}.subject.reference")));
        }
        if self.by_url.is_empty() || !resource.get("contained").is_none_or(Value::is_array) {
            // Not a list: the profile check reports it at its place.
            return Ok(false);
        }
        let mut taken: Vec<String> = resource
            .get("contained")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        // fullUrl → the contained id it became, in order of first reference.
        let mut named: Vec<(&str, String)> = Vec::new();
        rewrite_references(resource, &mut |reference| {
            let (&url, _) = self.by_url.get_key_value(reference)?;
            let id = match named.iter().find(|(u, _)| *u == url) {
                Some((_, id)) => id.clone(),
                None => {
                    let id = unused_id(&taken, "patient");
                    taken.push(id.clone());
                    named.push((url, id.clone()));
                    id
                }
            };
            Some(format!("#{id}"))
        });
        let rewritten = !named.is_empty();
        if rewritten {
            let contained = resource
                .as_object_mut()
                .expect("a resource is a JSON object")
                .entry("contained")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("checked above");
            for (url, id) in named {
                contained.push(
                    json!({"resourceType": "Patient", "id": id, "identifier": self.by_url[url]}),
                );
            }
        }
        Ok(rewritten)
    }
}

/// `base`, or `base-2`, `base-3`…: the first id not taken.
fn unused_id(taken: &[String], base: &str) -> String {
    std::iter::once(base.to_string())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|id| !taken.contains(id))
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
            "contained": [{"resourceType": "Location", "id": "patient"},
                          {"resourceType": "Flag", "id": "f", "subject": {"reference": "urn:uuid:p1"}}],
            "subject": {"reference": "urn:uuid:p1", "display": "Ms Okafor",
                        "identifier": {"system": MRN, "value": "MRN-1"}}});
        patients.resolve(&mut notice).unwrap();
        // Every reference to the entry names one contained Patient; the name beside it goes.
        assert_eq!(
            notice["subject"],
            json!({"reference": "#patient-2", "identifier": {"system": MRN, "value": "MRN-1"}})
        );
        assert_eq!(
            notice["contained"][1]["subject"],
            json!({"reference": "#patient-2"})
        );
        assert_eq!(
            notice["contained"][2],
            json!({"resourceType": "Patient", "id": "patient-2",
                   "identifier": [{"system": MRN, "value": "MRN-1"}]})
        );
        assert_eq!(notice["contained"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn references_between_entries_are_digested_by_what_the_entry_is() {
        let notice = |id: &str| json!({"resourceType": "Communication", "identifier": [{"system": "s", "value": id}]});
        let entries = [
            json!({"fullUrl": "urn:uuid:a", "resource": notice("A")}),
            json!({"fullUrl": "urn:uuid:b", "resource": notice("B")}),
            json!({"fullUrl": "urn:uuid:b", "resource": notice("C")}),
            json!({"fullUrl": "https://clinic.example/fhir/Communication/9", "resource": notice("D")}),
        ];
        let identities = entry_identities(&entries);
        let pointing =
            |to: &str| json!({"partOf": [{"reference": to}], "about": [{"reference": "#x"}]});
        assert_eq!(
            by_identity(&pointing("urn:uuid:a"), &identities),
            Some(pointing("Communication?identifier=s|A"))
        );
        // A fullUrl two entries share, an absolute one (stable across retries) and a local
        // reference are left as they are.
        for to in [
            "urn:uuid:b",
            "https://clinic.example/fhir/Communication/9",
            "#x",
        ] {
            assert_eq!(by_identity(&pointing(to), &identities), None, "{to}");
        }
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
                LocalPatients::of(&entries).unwrap_err().1.expression,
                [expression]
            );
        }
    }
}
