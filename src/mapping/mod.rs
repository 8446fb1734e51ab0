//! Mapping and minimisation: inbound FHIR resource → integration-dataset items.
//!
//! Driven by the files in `mappings/` (see its README). Minimisation is constructive:
//! items are *built* from the elements a rule names; nothing is copied wholesale. Every
//! element no rule read is reported as a dropped path (never its value).
//!
//! Invariant: `mapping` performs no I/O after [`Mappings::load`] and knows nothing of
//! HTTP, storage or consent.

pub mod path;
mod rules;

use std::collections::{BTreeSet, HashSet};
use std::path::Path as FsPath;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::dataset::DatasetItem;
use path::{Doc, Node, pointer_to_expression};
pub use rules::MappingError;
use rules::{FieldRule, Op, Rule, Sensitivity, Source, ValueSets};

/// The loaded mapping files.
#[derive(Debug)]
pub struct Mappings {
    sets: ValueSets,
    sensitivity: Sensitivity,
    sources: Vec<Source>,
}

/// What a resource becomes: items, the paths that were dropped, and any problem that
/// makes the resource unusable (a recognised item missing a required field).
#[derive(Debug, Serialize)]
pub struct Translation {
    pub items: Vec<MappedItem>,
    pub dropped: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MappedItem {
    #[serde(flatten)]
    pub item: DatasetItem,
    /// Security labels (v3-ActCode), for consent restrictions.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub labels: BTreeSet<String>,
    /// The element the item was read from, e.g. `Communication.contained[1]`.
    pub source: String,
    /// For each output field, where its value came from.
    pub trace: Vec<Trace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// Field within the item, e.g. `routes[0].value`.
    pub field: String,
    /// A JSON pointer into the inbound resource, or `mapping:FILE` for values the
    /// mapping file itself supplied (constants, code translations).
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub expression: String,
    pub message: String,
}

/// Elements every resource carries for Hearth itself (linking, idempotency, notice kind,
/// labels) rather than for housing. They are read, so not reported as dropped.
const ENVELOPE: &[&str] = &[
    "/resourceType",
    "/id",
    "/identifier",
    "/status",
    "/intent",
    "/subject",
    "/patient",
    "/category",
    "/meta/security",
    "/inResponseTo",
];

impl Mappings {
    /// `meta.security` labels of a resource, as bare codes (`SUD`, `R`, …). Only known
    /// label codes of the HL7 label systems count: a label is a code, never text a
    /// sender wrote, so nothing else may ride along with the items into housing.
    fn security_labels(&self, resource: &Value) -> BTreeSet<String> {
        resource
            .pointer("/meta/security")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                c.get("system")
                    .and_then(Value::as_str)
                    .is_some_and(|s| LABEL_SYSTEMS.contains(&s))
            })
            .filter_map(|c| c.get("code").and_then(Value::as_str))
            .filter(|code| KNOWN_LABELS.contains(code) || self.sensitivity.names_label(code))
            .map(str::to_string)
            .collect()
    }

    pub fn load(dir: &FsPath) -> Result<Self, MappingError> {
        let (sets, sensitivity, sources) = rules::load_dir(dir)?;
        Ok(Self {
            sets,
            sensitivity,
            sources,
        })
    }

    /// The labels a named restriction (`substance-use`, …) withholds.
    pub fn restriction_labels(&self, name: &str) -> Option<Vec<String>> {
        self.sensitivity.restrictions.get(name).cloned()
    }

    /// The named restrictions whose labels are all among `labels`.
    pub fn restrictions_for(&self, labels: &[String]) -> Vec<String> {
        self.sensitivity
            .restrictions
            .iter()
            .filter(|(_, l)| !l.is_empty() && l.iter().all(|x| labels.contains(x)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Translates one resource. Pure: same input, same output.
    pub fn translate(&self, resource: &Value) -> Translation {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let doc = Doc::new(resource);
        let root = doc.root_node();
        let mut used: Vec<String> = ENVELOPE.iter().map(|s| s.to_string()).collect();
        // A subject given as a contained Patient: its identity is read for linking.
        if let Some(target) = ["subject", "patient"]
            .iter()
            .find_map(|k| {
                resource
                    .pointer(&format!("/{k}/reference"))
                    .and_then(Value::as_str)
            })
            .and_then(|r| doc.resolve_local(r))
        {
            for e in ["resourceType", "id", "identifier"] {
                used.push(format!("{}/{e}", target.ptr));
            }
        }
        let root_labels = self.security_labels(resource);
        let mut items = Vec::new();
        let mut problems = Vec::new();

        for source in self.sources.iter().filter(|s| s.resource == resource_type) {
            let mut scratch = Vec::new();
            if let Some(when) = &source.when
                && !holds(self.eval_rule(&doc, when, &root, &source.file, &mut scratch))
            {
                continue;
            }
            let nodes = match &source.each {
                Some(each) => doc.eval(each, &root, &mut scratch),
                None => vec![root.clone()],
            };
            for node in nodes {
                let mut local = scratch.clone();
                if let Some(filter) = &source.filter
                    && !holds(self.eval_rule(&doc, filter, &node, &source.file, &mut local))
                {
                    continue;
                }
                let mut trace = Vec::new();
                let fields = self.eval_fields(
                    &doc,
                    &source.fields,
                    &node,
                    &source.file,
                    &mut local,
                    "",
                    &mut trace,
                );
                // An item needs at least one value read from the resource; constants
                // alone (e.g. a plan kind with nothing under it) say nothing.
                if !trace.iter().any(|t| t.from.starts_with('/')) {
                    continue;
                }
                let node_expr = pointer_to_expression(resource_type, &node.ptr);
                match DatasetItem::from_fields(source.kind, Value::Object(fields.clone())) {
                    Ok(item) => {
                        used.extend(local);
                        if node.value.get("resourceType").is_some() {
                            used.push(format!("{}/resourceType", node.ptr));
                            used.push(format!("{}/id", node.ptr));
                        }
                        if !self.security_labels(node.value).is_empty() {
                            used.push(format!("{}/meta/security", node.ptr));
                        }
                        let mut labels = root_labels.clone();
                        labels.extend(self.labels_for(&node, source, &fields));
                        items.push(MappedItem {
                            item,
                            labels,
                            source: node_expr,
                            trace,
                        });
                    }
                    Err(e) => problems.push(problem_for(source, &node_expr, &e)),
                }
            }
        }

        Translation {
            items,
            dropped: dropped_paths(resource, resource_type, &used),
            problems,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_fields<'a>(
        &self,
        doc: &Doc<'a>,
        fields: &[(String, FieldRule)],
        node: &Node<'a>,
        file: &str,
        used: &mut Vec<String>,
        prefix: &str,
        trace: &mut Vec<Trace>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, rule) in fields {
            let field = format!("{prefix}{name}");
            match rule {
                FieldRule::FirstOf(rules) => {
                    if let Some((value, from)) = rules
                        .iter()
                        .find_map(|r| self.eval_rule(doc, r, node, file, used))
                    {
                        trace.push(Trace { field, from });
                        out.insert(name.clone(), value);
                    }
                }
                FieldRule::Each {
                    each,
                    filter,
                    fields,
                } => {
                    let mut list = Vec::new();
                    for entry in doc.eval(each, node, used) {
                        let mut local = Vec::new();
                        if let Some(f) = filter
                            && !holds(self.eval_rule(doc, f, &entry, file, &mut local))
                        {
                            continue;
                        }
                        let entry_prefix = format!("{field}[{}].", list.len());
                        let obj = self.eval_fields(
                            doc,
                            fields,
                            &entry,
                            file,
                            &mut local,
                            &entry_prefix,
                            trace,
                        );
                        if !obj.is_empty() {
                            used.extend(local);
                            if entry.value.get("resourceType").is_some() {
                                used.push(format!("{}/resourceType", entry.ptr));
                                used.push(format!("{}/id", entry.ptr));
                            }
                            list.push(Value::Object(obj));
                        }
                    }
                    if !list.is_empty() {
                        out.insert(name.clone(), Value::Array(list));
                    }
                }
            }
        }
        out
    }

    /// Evaluates one rule at `node`: the value and where it came from.
    fn eval_rule<'a>(
        &self,
        doc: &Doc<'a>,
        rule: &Rule,
        node: &Node<'a>,
        file: &str,
        used: &mut Vec<String>,
    ) -> Option<(Value, String)> {
        let from_mapping = || format!("mapping:{file}");
        let (path, op) = match rule {
            Rule::Const(v) => return Some((v.clone(), from_mapping())),
            Rule::Path { path, op } => (path, op),
        };
        let mut nav = Vec::new();
        let nodes = doc.eval(path, node, &mut nav);
        let found = match op {
            Op::First => nodes
                .iter()
                .find(|n| is_primitive(n.value))
                .map(|n| (n.value.clone(), vec![n.ptr.clone()], n.ptr.clone())),
            Op::Map(table) => nodes.iter().find_map(|n| {
                let key = primitive_text(n.value)?;
                table
                    .get(&key)
                    .map(|v| (v.clone(), vec![n.ptr.clone()], from_mapping()))
            }),
            Op::Classify(outputs) => nodes.iter().find_map(|n| {
                let (system, code) = coding(n.value)?;
                outputs
                    .iter()
                    .find(|(_, set)| self.sets.contains(set, system, code))
                    .map(|(out, _)| (out.clone(), coding_ptrs(n), from_mapping()))
            }),
            Op::In { set, value } => nodes.iter().find_map(|n| {
                let (system, code) = coding(n.value)?;
                self.sets
                    .contains(set, system, code)
                    .then(|| (value.clone(), coding_ptrs(n), from_mapping()))
            }),
            Op::Exists(value) => (!nodes.is_empty()).then(|| {
                (
                    value.clone(),
                    nodes.iter().map(|n| n.ptr.clone()).collect(),
                    from_mapping(),
                )
            }),
        };
        let (value, ptrs, from) = found?;
        used.extend(nav);
        used.extend(ptrs);
        Some((value, from))
    }

    fn labels_for(
        &self,
        node: &Node,
        source: &Source,
        fields: &Map<String, Value>,
    ) -> BTreeSet<String> {
        let mut labels = self.security_labels(node.value);
        let mut codings = Vec::new();
        collect_codings(node.value, &mut codings);
        for (set, set_labels) in &self.sensitivity.by_codes {
            if codings.iter().any(|(s, c)| self.sets.contains(set, s, c)) {
                labels.extend(set_labels.iter().cloned());
            }
        }
        for (kind, field, equals, item_labels) in &self.sensitivity.by_item {
            if *kind == source.kind && fields.get(field) == Some(equals) {
                labels.extend(item_labels.iter().cloned());
            }
        }
        labels
    }
}

fn holds(result: Option<(Value, String)>) -> bool {
    matches!(result, Some((v, _)) if !matches!(v, Value::Null | Value::Bool(false)))
}

fn is_primitive(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn primitive_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn coding(v: &Value) -> Option<(&str, &str)> {
    Some((v.get("system")?.as_str()?, v.get("code")?.as_str()?))
}

fn coding_ptrs(n: &Node) -> Vec<String> {
    vec![format!("{}/system", n.ptr), format!("{}/code", n.ptr)]
}

/// Systems whose codes are security labels.
const LABEL_SYSTEMS: &[&str] = &[
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
];

/// HL7 confidentiality and sensitivity codes Hearth recognises in `meta.security`,
/// besides those `sensitivity.toml` names.
const KNOWN_LABELS: &[&str] = &[
    "U", "L", "M", "N", "R", "V", "SUD", "ETH", "ETHUD", "OPIOIDUD", "PSY", "SDV", "HIV", "BH",
    "SEX", "STD",
];

/// Every Coding in the subtree an item was read from (a medication's own code and
/// reason, a flag's code). References are not followed: a discharge is not sensitive
/// because the Encounter lists a sensitive diagnosis the item never carries.
fn collect_codings<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a str)>) {
    match v {
        Value::Object(map) => {
            if let Some(c) = coding(v) {
                out.push(c);
            }
            for child in map.values() {
                collect_codings(child, out);
            }
        }
        Value::Array(list) => list.iter().for_each(|c| collect_codings(c, out)),
        _ => {}
    }
}

fn problem_for(source: &Source, node_expr: &str, e: &serde_json::Error) -> Problem {
    let msg = e.to_string();
    // serde names the field in backticks: "missing field `start`".
    let field = msg.split('`').nth(1).unwrap_or_default();
    let path = source
        .fields
        .iter()
        .find(|(n, _)| n == field)
        .and_then(|(_, r)| r.first_path())
        .map(|p| p.elements().join("."));
    let expression = match path {
        Some(p) if !p.is_empty() => format!("{node_expr}.{p}"),
        _ => node_expr.to_string(),
    };
    let kind = source.kind.as_str().replace('_', " ");
    let message = if msg.starts_with("missing field") {
        format!(
            "this resource carries a {kind}, but its `{field}` is missing or not in a form Hearth reads"
        )
    } else {
        format!(
            "this resource carries a {kind}, but a value is outside the dataset's vocabulary ({msg})"
        )
    };
    Problem {
        expression,
        message,
    }
}

/// Maximal subtrees of `resource` that no rule read, as FHIRPath expressions.
fn dropped_paths(resource: &Value, resource_type: &str, used: &[String]) -> Vec<String> {
    let used: HashSet<&str> = used.iter().map(String::as_str).collect();
    let mut ancestors: HashSet<&str> = HashSet::new();
    for p in &used {
        let mut cut = p.len();
        loop {
            ancestors.insert(&p[..cut]);
            match p[..cut].rfind('/') {
                Some(i) => cut = i,
                None => break,
            }
        }
    }
    let mut out = Vec::new();
    walk_dropped(
        resource,
        &mut String::new(),
        resource_type,
        &used,
        &ancestors,
        &mut out,
    );
    out
}

fn walk_dropped(
    v: &Value,
    ptr: &mut String,
    rt: &str,
    used: &HashSet<&str>,
    ancestors: &HashSet<&str>,
    out: &mut Vec<String>,
) {
    let mut visit = |ptr: &mut String, seg: &str, child: &Value| {
        let len = ptr.len();
        ptr.push('/');
        ptr.push_str(&path::escape(seg));
        if used.contains(ptr.as_str()) {
            // read as a whole
        } else if ancestors.contains(ptr.as_str()) {
            walk_dropped(child, ptr, rt, used, ancestors, out);
        } else {
            out.push(pointer_to_expression(rt, ptr));
        }
        ptr.truncate(len);
    };
    match v {
        Value::Object(map) => map.iter().for_each(|(k, c)| visit(ptr, k, c)),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .for_each(|(i, c)| visit(ptr, &i.to_string(), c)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ChangeKind, DatasetItem};
    use serde_json::json;

    pub(crate) fn mappings() -> Mappings {
        Mappings::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")).unwrap()
    }

    fn med_notice(extra: Value) -> Value {
        let mut r = json!({
            "resourceType": "Communication",
            "identifier": [{"system": "urn:x", "value": "1"}],
            "status": "completed",
            "category": [{"coding": [{"system": "https://hearth.example/fhir/CodeSystem/notice-kind", "code": "medication-change"}]}],
            "subject": {"identifier": {"system": "urn:mrn", "value": "MRN-1"}},
            "contained": [{
                "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "Buprenorphine 8 mg", "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1819"}]},
                "authoredOn": "2026-11-20",
                "dosageInstruction": [{"patientInstruction": "Dissolve under the tongue"}],
                "note": [{"text": "Patient in OUD programme"}]
            }]
        });
        if let (Some(obj), Value::Object(extra)) = (r.as_object_mut(), extra) {
            obj.extend(extra);
        }
        r
    }

    #[test]
    fn a_medication_change_keeps_only_dataset_fields_and_reports_the_rest() {
        let t = mappings().translate(&med_notice(json!({"note": [{"text": "free text"}]})));
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.items.len(), 1);
        let DatasetItem::MedicationChange(m) = &t.items[0].item else {
            panic!("expected a medication change")
        };
        assert_eq!(m.medication, "Buprenorphine 8 mg");
        assert_eq!(m.change, ChangeKind::Started);
        assert_eq!(m.effective.as_deref(), Some("2026-11-20"));
        assert_eq!(m.instruction.as_deref(), Some("Dissolve under the tongue"));
        assert!(t.dropped.contains(&"Communication.note".to_string()));
        assert!(
            t.dropped
                .contains(&"Communication.contained[0].note".to_string())
        );
        assert!(
            t.dropped
                .contains(&"Communication.contained[0].intent".to_string())
        );
        // The rxnorm coding's system/code were read for sensitivity only, not kept.
        assert!(t.items[0].labels.contains("SUD"), "{:?}", t.items[0].labels);
    }

    #[test]
    fn a_recognised_item_missing_a_required_field_is_a_problem_pointing_at_it() {
        let mut r = med_notice(json!({}));
        r["contained"][0]["status"] = json!("draft");
        let t = mappings().translate(&r);
        assert!(t.items.is_empty());
        assert_eq!(t.problems.len(), 1);
        assert_eq!(
            t.problems[0].expression,
            "Communication.contained[0].priorPrescription"
        );
    }

    #[test]
    fn withdrawal_risk_flags_carry_the_substance_use_label() {
        let r = json!({
            "resourceType": "Communication", "status": "completed",
            "contained": [{"resourceType": "Flag", "id": "f", "status": "active",
                "code": {"coding": [{"system": "https://hearth.example/fhir/CodeSystem/tenancy-risk", "code": "withdrawal-risk"}]}}]
        });
        let t = mappings().translate(&r);
        assert_eq!(t.items.len(), 1);
        assert!(t.items[0].labels.contains("SUD"));
    }
}
