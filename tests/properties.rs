//! Minimisation as a property: "no string value from an inbound resource reaches the
//! housing output unless the mapping names its element".
//!
//! Stated so that a random string that happens to equal a word Hearth uses (`discharged`,
//! `falls`, a facility name from another fixture) cannot make it fail spuriously: every
//! value in every output item must *trace* to a mapping rule — either a JSON pointer into
//! the input whose value is exactly the output value, or `mapping:FILE` where the value is
//! a literal written in that mapping file.
//!
//! Inputs are the valid fixtures, mutated: string leaves replaced (often by strings used
//! elsewhere), extra elements inserted anywhere, random contained resources added, keys
//! removed. A second property feeds fully random JSON under a Communication/CarePlan
//! envelope. An end-to-end test then checks a marker planted in unmapped places never
//! comes back out of the real server.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use common::*;
use hearth::mapping::{Mappings, Translation};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Map, Value, json};

const FIXTURES: &[&str] = &[
    "discharge-notice.json",
    "discharge-notice-oversharing.json",
    "medication-change-notice.json",
    "medication-change-dose-changed.json",
    "medication-change-buprenorphine-start.json",
    "appointment-notice.json",
    "risk-flag-update.json",
    "care-contact-update.json",
    "accommodation-needs.json",
    "follow-up-plan.json",
];

const RESOURCE_TYPES: &[&str] = &[
    "Patient",
    "Encounter",
    "Organization",
    "Task",
    "Condition",
    "Flag",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "Appointment",
    "Location",
    "ServiceRequest",
    "PractitionerRole",
    "Practitioner",
    "RelatedPerson",
    "Observation",
];

fn mappings() -> &'static Mappings {
    &shared().0
}

/// The text of each mapping file, by file name.
fn mapping_texts() -> &'static HashMap<String, String> {
    static TEXTS: OnceLock<HashMap<String, String>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        std::fs::read_dir(root().join("mappings"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".toml"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect()
    })
}

fn fixtures() -> &'static Vec<(&'static str, Value)> {
    static F: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    F.get_or_init(|| FIXTURES.iter().map(|n| (*n, fixture(n))).collect())
}

// --- JSON helpers -----------------------------------------------------------------------

fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Pointers of every node of `v` that satisfies `pick`.
fn pointers(v: &Value, pick: &dyn Fn(&str, &Value) -> bool) -> Vec<String> {
    fn walk(
        v: &Value,
        ptr: &mut String,
        pick: &dyn Fn(&str, &Value) -> bool,
        out: &mut Vec<String>,
    ) {
        if pick(ptr, v) {
            out.push(ptr.clone());
        }
        let mut visit = |seg: String, child: &Value, ptr: &mut String| {
            let len = ptr.len();
            ptr.push('/');
            ptr.push_str(&seg);
            walk(child, ptr, pick, out);
            ptr.truncate(len);
        };
        match v {
            Value::Object(m) => m.iter().for_each(|(k, c)| visit(escape(k), c, ptr)),
            Value::Array(l) => l
                .iter()
                .enumerate()
                .for_each(|(i, c)| visit(i.to_string(), c, ptr)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), pick, &mut out);
    out
}

fn collect_strings(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Array(l) => l.iter().for_each(|c| collect_strings(c, out)),
        Value::Object(m) => m.values().for_each(|c| collect_strings(c, out)),
        _ => {}
    }
}

fn collect_keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Array(l) => l.iter().for_each(|c| collect_keys(c, out)),
        Value::Object(m) => m.iter().for_each(|(k, c)| {
            out.insert(k.clone());
            collect_keys(c, out)
        }),
        _ => {}
    }
}

/// Strings Hearth and its fixtures use: every string leaf of every fixture, local
/// references to every contained id, and the words mapping files produce.
fn string_pool() -> Vec<String> {
    let mut s = BTreeSet::new();
    for (_, f) in fixtures() {
        collect_strings(f, &mut s);
        for c in f["contained"].as_array().into_iter().flatten() {
            if let Some(id) = c["id"].as_str() {
                s.insert(format!("#{id}"));
            }
        }
    }
    for w in [
        "discharged",
        "admitted",
        "planned",
        "cancelled",
        "follow-up-planned",
        "started",
        "stopped",
        "dose-changed",
        "falls",
        "confusion",
        "unmanaged-pain",
        "withdrawal-risk",
        "language",
        "hearing",
        "cognitive",
        "other",
        "true",
        "false",
        "1",
        "2",
        "Task",
        "ServiceRequest",
        "Appointment",
        "CommunicationRequest",
        "finished",
        "in-progress",
        "active",
        "completed",
        "#",
        "",
    ] {
        s.insert(w.to_string());
    }
    s.extend(RESOURCE_TYPES.iter().map(|t| t.to_string()));
    s.into_iter().collect()
}

/// Element names: every key in the fixtures, plus the ones mapping rules read.
fn key_pool() -> Vec<String> {
    let mut s = BTreeSet::new();
    for (_, f) in fixtures() {
        collect_keys(f, &mut s);
    }
    for k in [
        "note",
        "extension",
        "modifierExtension",
        "text",
        "div",
        "valueString",
        "valueBoolean",
        "url",
        "display",
        "reference",
        "name",
        "description",
        "telecom",
        "rank",
        "period",
        "start",
        "end",
        "code",
        "coding",
        "system",
        "value",
        "contained",
        "payload",
        "contentString",
        "priorPrescription",
        "dispenseRequest",
        "validityPeriod",
        "authoredOn",
        "dosageInstruction",
        "patientInstruction",
        "serviceProvider",
        "location",
        "owner",
        "restriction",
        "participant",
        "actor",
        "appointmentType",
        "serviceType",
        "practitioner",
        "organization",
        "communication",
        "language",
        "activity",
        "detail",
        "kind",
        "scheduledPeriod",
        "performer",
        "medicationCodeableConcept",
        "medicationReference",
    ] {
        s.insert(k.to_string());
    }
    // Keeping the root's type is the one thing a mutation must not change: it says which
    // mapping sources apply and what every expression is rooted at.
    s.remove("resourceType");
    s.into_iter().collect()
}

// --- strategies -------------------------------------------------------------------------

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(string_pool()),
        2 => "[a-zA-Z0-9 .#|:/_-]{0,16}",
        1 => any::<String>(),
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![4 => select(key_pool()), 1 => "[a-z_][a-zA-Z0-9_]{0,10}"]
}

fn arb_json(keys: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => (-3i64..1000).prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        5 => arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_resource(keys: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    (
        select(RESOURCE_TYPES),
        prop_oneof![select(string_pool()), "[a-z]{1,6}"],
        prop::collection::vec((keys.clone(), arb_json(keys)), 0..6),
    )
        .prop_map(|(rt, id, fields)| {
            let mut m: Map<String, Value> = fields.into_iter().collect();
            m.insert("resourceType".into(), json!(rt));
            m.insert("id".into(), json!(id.trim_start_matches('#')));
            Value::Object(m)
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace a string leaf (not the root's resourceType) with another string.
    Replace { at: Index, with: String },
    /// Insert (or overwrite) an element in some object.
    Insert {
        at: Index,
        key: String,
        value: Value,
    },
    /// Add a contained resource.
    Contain { resource: Value },
    /// Remove an element from some object.
    Remove { at: Index },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let keys = arb_key().boxed();
    prop_oneof![
        4 => (any::<Index>(), arb_string()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        3 => (any::<Index>(), arb_key(), arb_json(keys.clone()))
            .prop_map(|(at, key, value)| Mutation::Insert { at, key, value }),
        2 => arb_resource(keys).prop_map(|resource| Mutation::Contain { resource }),
        1 => any::<Index>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(doc: &mut Value, m: &Mutation) {
    match m {
        Mutation::Replace { at, with } => {
            let leaves = pointers(doc, &|p, v| v.is_string() && p != "/resourceType");
            if !leaves.is_empty() {
                *doc.pointer_mut(&leaves[at.index(leaves.len())]).unwrap() = json!(with);
            }
        }
        Mutation::Insert { at, key, value } => {
            let objects = pointers(doc, &|_, v| v.is_object());
            let target = &objects[at.index(objects.len())];
            doc.pointer_mut(target)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(key.clone(), value.clone());
        }
        Mutation::Contain { resource } => {
            let root = doc.as_object_mut().unwrap();
            match root.get_mut("contained") {
                Some(Value::Array(list)) => list.push(resource.clone()),
                _ => {
                    root.insert("contained".into(), json!([resource]));
                }
            }
        }
        Mutation::Remove { at } => {
            let elements: Vec<_> = pointers(doc, &|p, _| !p.is_empty() && p != "/resourceType")
                .into_iter()
                .filter(|p| {
                    doc.pointer(p.rsplit_once('/').unwrap().0)
                        .is_some_and(Value::is_object)
                })
                .collect();
            if !elements.is_empty() {
                let p = &elements[at.index(elements.len())];
                let (parent, key) = p.rsplit_once('/').unwrap();
                let key = key.replace("~1", "/").replace("~0", "~");
                doc.pointer_mut(parent)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(&key);
            }
        }
    }
}

// --- the checks -------------------------------------------------------------------------

/// Scalar leaves of an item's JSON, by field path in the trace's format
/// (`status`, `routes[0].value`, `follow_up[1].due`).
fn leaves(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(c, &p, out);
            }
        }
        Value::Array(l) => {
            for (i, c) in l.iter().enumerate() {
                leaves(c, &format!("{prefix}[{i}]"), out);
            }
        }
        scalar => out.push((prefix.to_string(), scalar.clone())),
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `RT(.name|[n])+` → the JSON pointer it names; `None` if not of that shape.
fn expression_to_pointer(expr: &str, resource_type: &str) -> Option<String> {
    let mut rest = expr.strip_prefix(resource_type)?;
    let mut ptr = String::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if !is_name(name) {
                return None;
            }
            ptr.push('/');
            ptr.push_str(name);
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let n = &r[..end];
            if n.is_empty()
                || !n.chars().all(|c| c.is_ascii_digit())
                || (n.len() > 1 && n.starts_with('0'))
            {
                return None;
            }
            ptr.push('/');
            ptr.push_str(n);
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    (!ptr.is_empty()).then_some(ptr)
}

fn literal_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every value of every item traces to a mapping rule; every reported path is a real,
/// well-formed, maximal dropped subtree that no output value came from.
///
/// `element_names` says the input's keys are all FHIR-like element names, so dropped
/// paths can be parsed back into pointers.
fn check(input: &Value, t: &Translation, element_names: bool) -> Result<(), TestCaseError> {
    let rt = input["resourceType"].as_str().unwrap_or_default();
    let texts = mapping_texts();

    let mut dropped_ptrs = Vec::new();
    let mut seen = BTreeSet::new();
    for d in &t.dropped {
        prop_assert!(seen.insert(d.clone()), "`{d}` reported twice");
        prop_assert!(
            d.starts_with(rt)
                && d.len() > rt.len()
                && matches!(d.as_bytes()[rt.len()], b'.' | b'['),
            "dropped path `{d}` does not start with `{rt}.`"
        );
        if element_names {
            let ptr = expression_to_pointer(d, rt);
            prop_assert!(
                ptr.is_some(),
                "dropped path `{d}` is not `{rt}(.name|[n])+`"
            );
            let ptr = ptr.unwrap();
            prop_assert!(
                input.pointer(&ptr).is_some(),
                "dropped path `{d}` names nothing in the input"
            );
            dropped_ptrs.push(ptr);
        }
    }
    // Maximal subtrees: no reported path lies inside another.
    for a in &dropped_ptrs {
        for b in &dropped_ptrs {
            prop_assert!(
                !(b.len() > a.len() && b.starts_with(a.as_str()) && b.as_bytes()[a.len()] == b'/'),
                "dropped `{b}` lies inside dropped `{a}`"
            );
        }
    }

    for mapped in &t.items {
        let mut item = serde_json::to_value(&mapped.item).unwrap();
        let kind = item
            .as_object_mut()
            .and_then(|o| o.remove("item"))
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default();
        prop_assert!(!kind.is_empty(), "item without its tag: {item}");
        if element_names {
            prop_assert!(
                expression_to_pointer(&mapped.source, rt).is_some() || mapped.source == rt,
                "item source `{}` is not an expression",
                mapped.source
            );
        }

        let mut traced: HashMap<&str, &str> = HashMap::new();
        for tr in &mapped.trace {
            prop_assert!(
                traced.insert(tr.field.as_str(), tr.from.as_str()).is_none(),
                "field `{}` traced twice in {:?}",
                tr.field,
                mapped.trace
            );
        }
        let mut out = Vec::new();
        leaves(&item, "", &mut out);
        let out_fields: BTreeSet<&str> = out.iter().map(|(f, _)| f.as_str()).collect();
        for tr in &mapped.trace {
            prop_assert!(
                out_fields.contains(tr.field.as_str()),
                "trace names `{}`, which the {kind} item does not have: {item}",
                tr.field
            );
        }

        for (field, value) in &out {
            let Some(from) = traced.get(field.as_str()) else {
                // A defaulted flag (`routes[n].preferred` when no rank says so) carries
                // nothing from the input; anything else must be traced.
                prop_assert!(
                    *value == Value::Bool(false),
                    "{kind}.{field} = {value} has no trace: {:?}",
                    mapped.trace
                );
                continue;
            };
            if from.starts_with('/') {
                prop_assert_eq!(
                    input.pointer(from),
                    Some(value),
                    "{}.{} traces to {} but the input differs there",
                    kind,
                    field,
                    from
                );
                // What reached the output was not reported as dropped, nor lies inside
                // something reported as dropped.
                for d in &dropped_ptrs {
                    prop_assert!(
                        !(from == d
                            || (from.starts_with(d.as_str()) && from.as_bytes()[d.len()] == b'/')),
                        "{kind}.{field} came from {from}, inside the dropped {d}"
                    );
                }
            } else if let Some(file) = from.strip_prefix("mapping:") {
                let text = texts.get(file);
                prop_assert!(
                    text.is_some(),
                    "{kind}.{field} traces to unknown mapping file `{file}`"
                );
                let text = text.unwrap();
                prop_assert!(
                    text.contains(&format!("item = \"{kind}\"")),
                    "{kind}.{field} traces to {file}, which maps another item"
                );
                let lit = literal_text(value);
                prop_assert!(
                    !lit.is_empty() && text.contains(&lit),
                    "{kind}.{field} = {value} traces to {file}, which does not contain it"
                );
            } else {
                prop_assert!(
                    false,
                    "{kind}.{field}: trace `{from}` is neither a pointer nor mapping:FILE"
                );
            }
        }
    }
    Ok(())
}

// --- the properties ---------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        // PROPTEST_CASES=10000 for a longer hunt; the default keeps the suite fast.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        // Failures are reported with their minimal input; nothing is written into tests/.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn every_fixture_translates_to_fully_traced_items() {
    for (name, f) in fixtures() {
        let t = mappings().translate(f);
        assert!(!t.items.is_empty(), "{name} yields no items");
        assert!(t.problems.is_empty(), "{name}: {:?}", t.problems);
        if let Err(e) = check(f, &t, true) {
            panic!("{name}: {e}");
        }
    }
}

/// The oracle itself: a value that does not trace, a missing trace, a mapping trace
/// for a word the file never wrote, and a dropped path that names nothing all fail it.
#[test]
fn the_check_catches_values_that_do_not_trace() {
    use hearth::dataset::DatasetItem;
    let input = fixture("discharge-notice.json");
    let fresh = || mappings().translate(&input);
    let discharge = |t: &mut Translation| match &mut t.items[0].item {
        DatasetItem::Discharge(d) => d.clone(),
        other => panic!("expected a discharge, got {other:?}"),
    };
    assert!(check(&input, &fresh(), true).is_ok());

    // A value altered after it was read: the pointer no longer yields it.
    let mut t = fresh();
    let mut d = discharge(&mut t);
    d.facility = Some("Riverside General Hospital, ward 4".into());
    t.items[0].item = DatasetItem::Discharge(d);
    assert!(check(&input, &t, true).is_err(), "an altered value passed");

    // A value with no trace at all.
    let mut t = fresh();
    t.items[0].trace.retain(|tr| tr.field != "date");
    assert!(check(&input, &t, true).is_err(), "an untraced value passed");

    // A "constant" the mapping file never wrote.
    let mut t = fresh();
    let mut d = discharge(&mut t);
    d.status = hearth::dataset::Code::try_from("deceased".to_string()).unwrap();
    t.items[0].item = DatasetItem::Discharge(d);
    assert!(
        t.items[0]
            .trace
            .iter()
            .any(|tr| tr.field == "status" && tr.from == "mapping:discharge.toml")
    );
    assert!(
        check(&input, &t, true).is_err(),
        "an invented constant passed"
    );

    // A dropped path that is not an element of the input, or not well-formed.
    for bad in [
        "Communication.nothingHere",
        "Communication.contained[x]",
        "Encounter.status",
        "Communication",
    ] {
        let mut t = fresh();
        t.dropped.push(bad.into());
        assert!(check(&input, &t, true).is_err(), "dropped `{bad}` passed");
    }

    // A dropped path covering a value that reached the output.
    let mut t = fresh();
    let source = t.items[0].source.clone();
    t.dropped.push(source);
    assert!(
        check(&input, &t, true).is_err(),
        "a dropped subtree feeding the output passed"
    );
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_fixtures_only_ever_yield_traced_values(
        which in any::<Index>(),
        mutations in prop::collection::vec(arb_mutation(), 1..12),
    ) {
        let (name, original) = &fixtures()[which.index(FIXTURES.len())];
        let mut input = original.clone();
        for m in &mutations {
            apply(&mut input, m);
        }
        let t = mappings().translate(&input);
        // Deterministic: the same input gives the same answer.
        let again = mappings().translate(&input);
        prop_assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::to_value(&again).unwrap(),
            "translate is not pure"
        );
        let element_names = pointers(&input, &|_, v| v.is_object())
            .iter()
            .all(|p| input.pointer(p).unwrap().as_object().unwrap().keys().all(|k| is_name(k)));
        check(&input, &t, element_names).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    }
}

/// Contained resources and root elements of every fixture, to build envelopes from.
fn contained_pool() -> Vec<Value> {
    fixtures()
        .iter()
        .flat_map(|(_, f)| f["contained"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn root_element_pool() -> Vec<(String, Value)> {
    fixtures()
        .iter()
        .flat_map(|(_, f)| f.as_object().unwrap().clone())
        .filter(|(k, _)| k != "resourceType" && k != "contained")
        .collect()
}

/// A Communication (or CarePlan) put together at random: a notice-kind category (or
/// anything), contained resources taken from the fixtures or made up, root elements
/// from any fixture or made up with arbitrary (non-FHIR) names, then mutated.
fn arb_envelope() -> impl Strategy<Value = Value> {
    let wild_keys = prop_oneof![2 => arb_key(), 1 => any::<String>()].boxed();
    let kinds = vec![
        "discharge-notice",
        "medication-change",
        "appointment-notice",
        "risk-flag-update",
        "care-contact-update",
        "accommodation-needs",
    ];
    let category = prop_oneof![
        3 => select(kinds).prop_map(|k| json!([{"coding": [{
            "system": "https://hearth.example/fhir/CodeSystem/notice-kind", "code": k}]}])),
        1 => Just(json!([{"coding": [{
            "system": "https://hearth.example/fhir/CodeSystem/plan-kind", "code": "follow-up-plan"}]}])),
        1 => arb_json(wild_keys.clone()),
    ];
    (
        select(vec![
            "Communication",
            "Communication",
            "Communication",
            "CarePlan",
        ]),
        category,
        prop::collection::vec(
            prop_oneof![
                4 => select(contained_pool()),
                2 => arb_resource(arb_key().boxed()),
                1 => arb_json(wild_keys.clone()),
            ],
            0..8,
        ),
        prop::collection::vec(
            prop_oneof![
                2 => select(root_element_pool()),
                1 => (wild_keys.clone(), arb_json(wild_keys)),
            ],
            0..8,
        ),
        prop::collection::vec(arb_mutation(), 0..6),
    )
        .prop_map(|(rt, category, contained, extra, mutations)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.insert("resourceType".into(), json!(rt));
            m.insert("category".into(), category);
            m.insert("contained".into(), Value::Array(contained));
            let mut doc = Value::Object(m);
            for mutation in &mutations {
                apply(&mut doc, mutation);
            }
            doc
        })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn translate_never_panics_and_traces_everything_on_arbitrary_json(input in arb_envelope()) {
        let t = mappings().translate(&input);
        let element_names = pointers(&input, &|_, v| v.is_object())
            .iter()
            .all(|p| input.pointer(p).unwrap().as_object().unwrap().keys().all(|k| is_name(k)));
        check(&input, &t, element_names)?;
    }

    #[test]
    fn translate_never_panics_on_any_json_value(input in arb_json(prop_oneof![2 => arb_key(), 1 => any::<String>()].boxed())) {
        let t = mappings().translate(&input);
        // With no (string) resourceType, no mapping source applies.
        if input.get("resourceType").and_then(Value::as_str).is_none() {
            prop_assert!(t.items.is_empty());
        }
    }
}

// --- end to end through the real server ------------------------------------------------

const MARKER: &str = "QZX-MARKER-8c41f2";

/// The over-sharing discharge notice with MARKER planted in unmapped places.
fn marked_oversharing() -> Value {
    let mut r = fixture("discharge-notice-oversharing.json");
    r["identifier"][0]["value"] = json!("RCC-MSG-PROPERTY-MARKER-1");
    r["note"][0]["text"] = json!(format!("note {MARKER}"));
    r["text"]["div"] = json!(format!(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{MARKER}</p></div>"
    ));
    r["extension"][0]["valueString"] = json!(format!("remark {MARKER}"));
    r["extension"].as_array_mut().unwrap().push(json!({
        "url": "https://ehr.riverside.example/fhir/StructureDefinition/unmapped",
        "valueString": MARKER,
    }));
    r["payload"][0]["contentString"] = json!(format!("summary {MARKER}"));
    let contained = r["contained"].as_array_mut().unwrap();
    for c in contained.iter_mut() {
        match c["resourceType"].as_str().unwrap() {
            "Condition" => c["code"]["text"] = json!(format!("diagnosis {MARKER}")),
            "RelatedPerson" => {
                c["name"][0]["text"] = json!(format!("{MARKER} Nowak"));
                c["name"][0]["family"] = json!(MARKER);
            }
            "Patient" => c["name"][0]["text"] = json!(MARKER),
            "Encounter" => {
                c["reasonCode"][0]["text"] = json!(MARKER);
                c["extension"] =
                    json!([{"url": "https://ehr.riverside.example/x", "valueString": MARKER}]);
            }
            "Task" => c["note"] = json!([{"text": MARKER}]),
            "MedicationStatement" => c["dosage"][0]["text"] = json!(MARKER),
            _ => {}
        }
    }
    contained.push(json!({
        "resourceType": "Condition",
        "id": "dx-marker",
        "subject": {"reference": "#tenant"},
        "code": {"text": MARKER, "coding": [{"system": "http://snomed.info/sct", "code": "86406008", "display": MARKER}]}
    }));
    r
}

#[tokio::test]
async fn a_marker_in_unmapped_places_never_reaches_housing() {
    let input = marked_oversharing();
    // The marker really is only in places no rule reads.
    let t = mappings().translate(&input);
    assert_eq!(t.items.len(), 1, "{:?}", t.items);
    assert!(!serde_json::to_string(&t).unwrap().contains(MARKER));

    // reqwest is built with `rustls-no-provider`: the process picks the crypto provider.
    hearth::tls::install_crypto_provider();
    let app = spawn_app().await.with_consenting_tenant().await;
    let posted = app.post("/fhir/Communication", CLINIC, &input).await;
    assert_eq!(posted.status, 201, "{posted:?}");
    assert!(
        !posted.body.to_string().contains(MARKER),
        "the POST answer echoes the marker: {}",
        posted.body
    );
    let location = posted.header("location").expect("Location header");

    let mut bodies = Vec::new();
    let feed = app.get("/housing/updates?since=0", HOUSING).await;
    assert_eq!(feed.status, 200, "{feed:?}");
    bodies.push(("feed", feed.body));
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert_eq!(view.status, 200, "{view:?}");
    let items = view.body["items"].as_array().cloned().unwrap_or_default();
    assert!(
        items
            .iter()
            .any(|i| i["item"] == "discharge" && i["facility"] == "Riverside General Hospital"),
        "the discharge did not arrive, so the check below proves nothing: {}",
        view.body
    );
    bodies.push(("tenant view", view.body));
    for (who, token) in [("clinic", CLINIC), ("housing", HOUSING)] {
        let copy = app.get(&location, token).await;
        assert_eq!(copy.status, 200, "GET {location} as {who}: {copy:?}");
        bodies.push(("Location", copy.body));
    }
    let audit = app.get("/audit/records", AUDITOR).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    bodies.push(("audit records", audit.body));

    for (what, body) in &bodies {
        let text = body.to_string();
        assert!(
            !text.contains(MARKER),
            "the marker reached the {what}: {text}"
        );
        assert!(
            !text.contains("Nowak"),
            "the daughter's name reached the {what}: {text}"
        );
    }

    // "The original resource is never stored": not in the database file or its WAL.
    let db = app.db_path();
    for file in [db.clone(), db.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                "{} holds the marker",
                file.display()
            );
        }
    }
    app.stop().await;
}

// --- security labels: the other thing that travels with an item -----------------------

const V3_ACTCODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const FREE_TEXT_LABEL: &str = "QZX-LABEL Patient disclosed HIV status to the nurse";
const FREE_TEXT_CONTAINED_LABEL: &str = "QZX-LABEL drinks heavily, daughter says";

/// The labels Hearth can act on: those `mappings/sensitivity.toml` assigns, plus the
/// HL7 confidentiality codes and v3-ActCode sensitivity codes a consent's deny provision
/// may name. A label outside this set has no consent function; if it reaches housing it
/// is just inbound text.
fn label_vocabulary() -> BTreeSet<String> {
    let text = &mapping_texts()["sensitivity.toml"];
    let table: toml::Table = toml::from_str(text).unwrap();
    let mut out: BTreeSet<String> = table
        .values()
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|rule| rule.get("labels").and_then(|l| l.as_array()))
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    // Plain-word restrictions (`[restrictions] substance-use = ["SUD", "ETH"]`), if any.
    if let Some(r) = table.get("restrictions").and_then(|r| r.as_table()) {
        out.extend(
            r.values()
                .filter_map(|l| l.as_array())
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string)),
        );
    }
    out.extend(
        [
            // Confidentiality
            "U", "L", "M", "N", "R", "V", // InformationSensitivityPolicy (v3-ActCode)
            "ETH", "ETHUD", "OPIOIDUD", "SUD", "HIV", "PSY", "PSYTHPN", "MH", "BH", "SEX", "STD",
            "SDV", "SICKLE", "TBOO", "GDIS", "MST", "SCA", "SPI", "DEMO", "COGN", "DVD", "EMOTDIS",
        ]
        .map(String::from),
    );
    out
}

fn labelled_risk_flags() -> Value {
    let mut input = fixture("risk-flag-update.json");
    input["identifier"][0]["value"] = json!("RCC-MSG-PROPERTY-LABEL-1");
    input["meta"] = json!({"security": [
        {"system": V3_ACTCODE, "code": "R"},
        {"system": V3_ACTCODE, "code": FREE_TEXT_LABEL},
    ]});
    input["contained"][0]["meta"] = json!({"security": [{"code": FREE_TEXT_CONTAINED_LABEL}]});
    input
}

/// `meta.security` codes become item labels, and labels are served to housing with the
/// item. A label must therefore be a code Hearth knows, not whatever text the sender put
/// in `meta.security[].code`.
#[test]
fn item_labels_are_security_codes_not_inbound_text() {
    let input = labelled_risk_flags();
    let t = mappings().translate(&input);
    assert_eq!(t.items.len(), 3, "{:?}", t.items);
    let vocabulary = label_vocabulary();
    for item in &t.items {
        // A known label still classifies the item (consent restrictions rely on it).
        assert!(
            item.labels.contains("R"),
            "the resource's `R` label was lost: {:?}",
            item.labels
        );
        for label in &item.labels {
            assert!(
                vocabulary.contains(label),
                "inbound text `{label}` became a label of the {} item (labels reach housing)",
                item.source
            );
        }
    }
    // What was reported dropped must not be what was kept.
    let falls = &t.items[0];
    assert!(
        !(t.dropped
            .contains(&"Communication.contained[0].meta".to_string())
            && falls.labels.contains(FREE_TEXT_CONTAINED_LABEL)),
        "Communication.contained[0].meta is reported dropped, yet its security code is a label of the item"
    );
}

#[tokio::test]
async fn a_free_text_security_label_never_reaches_housing() {
    hearth::tls::install_crypto_provider();
    let app = spawn_app().await.with_consenting_tenant().await;
    let posted = app
        .post("/fhir/Communication", CLINIC, &labelled_risk_flags())
        .await;
    assert_eq!(posted.status, 201, "{posted:?}");
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert_eq!(view.status, 200, "{view:?}");
    assert_eq!(
        view.body["items"].as_array().map(Vec::len),
        Some(3),
        "{}",
        view.body
    );
    let feed = app.get("/housing/updates?since=0", HOUSING).await;
    assert_eq!(feed.status, 200, "{feed:?}");
    // The audit trail holds labels too, and must never hold clinical values.
    let audit = app.get("/audit/records", AUDITOR).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    for (what, body) in [
        ("tenant view", &view.body),
        ("feed", &feed.body),
        ("audit trail", &audit.body),
    ] {
        let text = body.to_string();
        assert!(
            !text.contains("QZX-LABEL"),
            "free text from meta.security reached the {what}: {text}"
        );
    }
    app.stop().await;
}
