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

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path as FsPath;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::dataset::{DatasetItem, ItemKind, MAX_TEXT};
use path::{Doc, Node, Read, Seg, address};
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
const ENVELOPE: &[&[&str]] = &[
    &["resourceType"],
    &["id"],
    &["identifier"],
    &["status"],
    &["intent"],
    &["subject"],
    &["patient"],
    &["category"],
    &["meta", "security"],
    &["inResponseTo"],
];

/// Where a value came from: an element of the resource, or the mapping file itself
/// (constants, code translations).
enum Origin<'a> {
    Resource(Node<'a>),
    Mapping,
}

impl Mappings {
    /// `meta.security` labels of a resource, as bare codes (`SUD`, `R`, …). Only known
    /// label codes of the HL7 label systems count: a label is a code, never text a
    /// sender wrote, so nothing else may ride along with the items into housing.
    fn security_labels(&self, resource: &Value) -> BTreeSet<String> {
        resource
            .get("meta")
            .and_then(|m| m.get("security"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                c.get("system")
                    .and_then(Value::as_str)
                    .is_some_and(|s| crate::consent::fhir::LABEL_SYSTEMS.contains(&s))
            })
            .filter_map(|c| c.get("code").and_then(Value::as_str))
            .filter(|code| self.is_label(code))
            .map(str::to_string)
            .collect()
    }

    /// Whether Hearth ever puts this security label code on data: the labels it keeps
    /// from senders and the ones `mappings/sensitivity.toml` assigns.
    pub fn is_label(&self, code: &str) -> bool {
        KNOWN_LABELS.contains(&code) || self.sensitivity.names_label(code)
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
        // Everything translation relied on, for the dropped-path report. Reads are
        // appended as rules run and rolled back (truncated) when what they were for is
        // not produced: a rejected item's reads do not count.
        let mut reads = Vec::new();
        for keys in ENVELOPE {
            doc.read(root, keys, &mut reads);
        }
        // A subject given as a contained Patient: its identity is read for linking.
        if let Some(target) = ["subject", "patient"]
            .iter()
            .find_map(|k| resource.get(k)?.get("reference")?.as_str())
            .and_then(|r| doc.resolve_local(r))
        {
            for e in ["resourceType", "id", "identifier"] {
                doc.read(target, &[e], &mut reads);
            }
        }
        let root_labels = self.security_labels(resource);
        let mut items = Vec::new();
        let mut problems = Vec::new();

        for source in self.sources.iter().filter(|s| s.resource == resource_type) {
            let source_start = reads.len();
            if let Some(when) = &source.when
                && !holds(self.eval_rule(&doc, when, root, &mut reads))
            {
                reads.truncate(source_start);
                continue;
            }
            let nodes = match &source.each {
                Some(each) => doc.eval(each, root, &mut reads),
                None => vec![root],
            };
            let mut produced = false;
            for node in nodes {
                let node_start = reads.len();
                match self.item_at(&doc, source, node, resource_type, &root_labels, &mut reads) {
                    Some(Ok(item)) => {
                        items.push(item);
                        produced = true;
                    }
                    Some(Err(problem)) => {
                        problems.push(problem);
                        reads.truncate(node_start);
                    }
                    None => reads.truncate(node_start),
                }
            }
            // `when` and `each` were read only if they led to an item.
            if !produced {
                reads.truncate(source_start);
            }
        }

        Translation {
            items,
            dropped: dropped_paths(&doc, resource_type, &reads),
            problems,
        }
    }

    /// The item `source` makes of `node`: none if its filter fails or it reads nothing
    /// from the resource, a problem if the values read do not make a valid item.
    #[allow(clippy::too_many_arguments)]
    fn item_at<'a>(
        &'a self,
        doc: &Doc<'a>,
        source: &'a Source,
        node: Node<'a>,
        resource_type: &str,
        root_labels: &BTreeSet<String>,
        reads: &mut Vec<Read<'a>>,
    ) -> Option<Result<MappedItem, Problem>> {
        if !source
            .filter
            .iter()
            .all(|f| holds(self.eval_rule(doc, f, node, reads)))
        {
            return None;
        }
        let mut trace = Vec::new();
        let fields = self.eval_fields(
            doc,
            &source.fields,
            node,
            &source.file,
            reads,
            "",
            &mut trace,
        );
        // An item needs at least one value read from the resource; constants alone (e.g.
        // a plan kind with nothing under it) say nothing.
        if !trace.iter().any(|t| t.from.starts_with('/')) {
            return None;
        }
        // Free text is short (`dataset::MAX_TEXT`, as for housing's own notes): a longer
        // value is refused at its element, not cut, so nothing is silently changed and the
        // sender learns which one. The text itself is not quoted back.
        if let Some(long) = overlong_text(doc.root, &fields, &trace) {
            let kind = source.kind.as_str().replace('_', " ");
            return Some(Err(Problem {
                expression: path::pointer_to_expression(resource_type, &long.from),
                message: format!(
                    "this resource carries a {kind}, but its `{}` is longer than the {MAX_TEXT} characters the dataset keeps",
                    long.field
                ),
            }));
        }
        let expression = doc.expression(node, resource_type);
        // Taken before `from_fields` consumes the fields.
        let item_labels = self.item_labels(source.kind, &fields);
        let item = match DatasetItem::from_fields(source.kind, Value::Object(fields)) {
            Ok(item) => item,
            Err(e) => return Some(Err(problem_for(source, &expression, &e))),
        };
        if node.value.get("resourceType").is_some() {
            doc.read(node, &["resourceType"], reads);
            doc.read(node, &["id"], reads);
        }
        let node_labels = self.security_labels(node.value);
        if !node_labels.is_empty() {
            doc.read(node, &["meta", "security"], reads);
        }
        let mut labels = root_labels.clone();
        labels.extend(node_labels);
        labels.extend(self.code_labels(node.value));
        // A value read through a reference (a medication's name from the Medication it
        // points at) carries that resource's sensitivity too.
        for contained in referenced_resources(doc.root, node.value, &trace) {
            labels.extend(self.code_labels(contained));
            labels.extend(self.security_labels(contained));
        }
        // So does its reason: a reasonCode inside the node labels the item, and the same
        // diagnosis given as a reasonReference to a contained Condition must as well.
        for reason in reason_references(doc, node) {
            labels.extend(self.code_labels(reason.value));
            labels.extend(self.security_labels(reason.value));
        }
        labels.extend(item_labels);
        self.sensitivity.widen(&mut labels);
        Some(Ok(MappedItem {
            item,
            labels,
            source: expression,
            trace,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_fields<'a>(
        &'a self,
        doc: &Doc<'a>,
        fields: &'a [(String, FieldRule)],
        node: Node<'a>,
        file: &str,
        reads: &mut Vec<Read<'a>>,
        prefix: &str,
        trace: &mut Vec<Trace>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, rule) in fields {
            match rule {
                FieldRule::FirstOf(rules) => {
                    if let Some((value, origin)) = rules
                        .iter()
                        .find_map(|r| self.eval_rule(doc, r, node, reads))
                    {
                        let from = match origin {
                            Origin::Resource(n) => doc.pointer(n),
                            Origin::Mapping => format!("mapping:{file}"),
                        };
                        trace.push(Trace {
                            field: format!("{prefix}{name}"),
                            from,
                        });
                        out.insert(name.clone(), value.clone());
                    }
                }
                FieldRule::Each(blocks) => {
                    let mut list = Vec::new();
                    for block in blocks {
                        for entry in doc.eval(&block.each, node, reads) {
                            let entry_start = reads.len();
                            if !block
                                .filter
                                .iter()
                                .all(|f| holds(self.eval_rule(doc, f, entry, reads)))
                            {
                                reads.truncate(entry_start);
                                continue;
                            }
                            let entry_prefix = format!("{prefix}{name}[{}].", list.len());
                            let obj = self.eval_fields(
                                doc,
                                &block.fields,
                                entry,
                                file,
                                reads,
                                &entry_prefix,
                                trace,
                            );
                            if obj.is_empty() {
                                reads.truncate(entry_start);
                                continue;
                            }
                            if entry.value.get("resourceType").is_some() {
                                doc.read(entry, &["resourceType"], reads);
                                doc.read(entry, &["id"], reads);
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

    /// Evaluates one rule at `node`: the value and where it came from. What it read goes
    /// to `reads` only if it yields.
    fn eval_rule<'a>(
        &'a self,
        doc: &Doc<'a>,
        rule: &'a Rule,
        node: Node<'a>,
        reads: &mut Vec<Read<'a>>,
    ) -> Option<(&'a Value, Origin<'a>)> {
        let (path, op, when) = match rule {
            Rule::Const(v) => return Some((v, Origin::Mapping)),
            Rule::Path { path, op, when } => (path, op, when),
        };
        let start = reads.len();
        for condition in when {
            let result = self.eval_rule(doc, condition, node, reads);
            if !holds(result) {
                reads.truncate(start);
                return None;
            }
        }
        let nodes = doc.eval(path, node, reads);
        let found = match op {
            Op::First => nodes.into_iter().find(|n| is_primitive(n.value)).map(|n| {
                reads.push(Read::Whole(n));
                (n.value, Origin::Resource(n))
            }),
            Op::Map(table) => nodes.into_iter().find_map(|n| {
                let value = table.get(primitive_text(n.value)?.as_ref())?;
                reads.push(Read::Whole(n));
                Some((value, Origin::Mapping))
            }),
            Op::Classify(outputs) => nodes.into_iter().find_map(|n| {
                let (system, code) = coding(n.value)?;
                let (out, _) = outputs
                    .iter()
                    .find(|(_, set)| self.sets.contains(set, system, code))?;
                doc.read(n, &["system"], reads);
                doc.read(n, &["code"], reads);
                Some((out, Origin::Mapping))
            }),
            Op::In { set, value } => nodes.into_iter().find_map(|n| {
                let (system, code) = coding(n.value)?;
                if !self.sets.contains(set, system, code) {
                    return None;
                }
                doc.read(n, &["system"], reads);
                doc.read(n, &["code"], reads);
                Some((value, Origin::Mapping))
            }),
            // Only the presence was read: what the node holds (a prior prescription's
            // old dose) is not kept, and is reported to the sender element by element.
            Op::Exists(value) => (!nodes.is_empty()).then(|| {
                reads.extend(nodes.into_iter().map(Read::Inside));
                (value, Origin::Mapping)
            }),
            // Nothing is there to read.
            Op::Absent(value) => nodes.is_empty().then_some((value, Origin::Mapping)),
        };
        if found.is_none() {
            reads.truncate(start);
        }
        found
    }

    /// Labels from the codes of the subtree an item was read from.
    fn code_labels(&self, node: &Value) -> BTreeSet<String> {
        let mut codings = Vec::new();
        collect_codings(node, &mut codings);
        let mut labels = BTreeSet::new();
        for (set, set_labels) in &self.sensitivity.by_codes {
            if codings.iter().any(|(s, c)| self.sets.contains(set, s, c)) {
                labels.extend(set_labels.iter().cloned());
            }
        }
        labels
    }

    /// Labels an item carries for what it says (a withdrawal-risk flag), whoever wrote
    /// it: a mapped notice, or a fact a housing worker typed into a note.
    pub fn item_labels(&self, of: ItemKind, fields: &Map<String, Value>) -> BTreeSet<String> {
        let mut labels = BTreeSet::new();
        for (kind, field, equals, item_labels) in &self.sensitivity.by_item {
            if *kind == of && fields.get(field) == Some(equals) {
                labels.extend(item_labels.iter().cloned());
            }
        }
        // And for the words it uses: a medication coded at product level (a brand, a
        // strength) that no value set lists is still substance-use treatment when its
        // name says buprenorphine.
        let mut texts = Vec::new();
        strings_in(fields.values(), &mut texts);
        for text in texts {
            labels.extend(self.sensitivity.text_labels(text));
        }
        self.sensitivity.widen(&mut labels);
        labels
    }

    /// The labels free text carries by its words (`[[words]]` in sensitivity.toml): a
    /// note's reason that says "methadone" is substance-use information.
    pub fn text_labels(&self, text: &str) -> BTreeSet<String> {
        self.sensitivity.text_labels(text)
    }

    /// Which labels imply which broader ones (`[implies]` in sensitivity.toml).
    pub fn label_hierarchy(&self) -> &crate::consent::LabelHierarchy {
        &self.sensitivity.implies
    }

    /// `labels` with the broader labels they imply (`[implies]` in sensitivity.toml).
    /// A consent that denies a narrow label withholds what that label belongs to: Hearth
    /// cannot tell an opioid from another substance-use item by its codes, so a denial
    /// of OPIOIDUD withholds every substance-use item rather than none.
    pub fn widen(&self, labels: &[String]) -> Vec<String> {
        let mut set: BTreeSet<String> = labels.iter().cloned().collect();
        self.sensitivity.widen(&mut set);
        let mut out = labels.to_vec();
        out.extend(set.into_iter().filter(|l| !labels.contains(l)));
        out
    }
}

fn holds(result: Option<(&Value, Origin)>) -> bool {
    matches!(result, Some((v, _)) if !matches!(v, Value::Null | Value::Bool(false)))
}

fn is_primitive(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn primitive_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

fn coding(v: &Value) -> Option<(&str, &str)> {
    Some((v.get("system")?.as_str()?, v.get("code")?.as_str()?))
}

/// Every string among `values`, however deeply nested.
fn strings_in<'a>(values: impl Iterator<Item = &'a Value>, out: &mut Vec<&'a str>) {
    for v in values {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => strings_in(a.iter(), out),
            Value::Object(o) => strings_in(o.values(), out),
            _ => {}
        }
    }
}

/// HL7 confidentiality and sensitivity codes Hearth recognises in `meta.security`,
/// besides those `sensitivity.toml` names.
const KNOWN_LABELS: &[&str] = &[
    "U", "L", "M", "N", "R", "V", "SUD", "ETH", "ETHUD", "OPIOIDUD", "PSY", "SDV", "HIV", "BH",
    "SEX", "STD",
];

/// The contained resources `node`'s `reasonReference`s point at.
fn reason_references<'a>(doc: &Doc<'a>, node: Node<'a>) -> Vec<Node<'a>> {
    node.value
        .get("reasonReference")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("reference")?.as_str())
        .filter_map(|r| doc.resolve_local(r))
        .collect()
}

/// The contained resources, other than `node` itself, that the item's values were read
/// from (`/contained/N/...` in its trace).
fn referenced_resources<'a>(
    root: &'a Value,
    node: &Value,
    trace: &[Trace],
) -> impl Iterator<Item = &'a Value> {
    let mut indexes: Vec<usize> = trace
        .iter()
        .filter_map(|t| {
            t.from
                .strip_prefix("/contained/")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    let node = address(node);
    indexes
        .into_iter()
        .filter_map(|i| root.get("contained")?.get(i))
        .filter(move |c| address(c) != node)
}

/// Every Coding in the subtree an item was read from (a medication's own code and
/// reason, a flag's code). References are followed only to resources a value was read
/// from (see [`referenced_resources`]): a discharge is not sensitive because the
/// Encounter lists a sensitive diagnosis the item never carries.
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

/// The trace of the first value read from the resource that is longer than an item's
/// free text may be. The output is scanned first: most values are a few words, and only
/// a long one needs its element looked up.
fn overlong_text<'t>(
    root: &Value,
    fields: &Map<String, Value>,
    trace: &'t [Trace],
) -> Option<&'t Trace> {
    fn long(v: &Value) -> bool {
        match v {
            Value::String(s) => s.len() > MAX_TEXT && s.chars().count() > MAX_TEXT,
            Value::Array(list) => list.iter().any(long),
            Value::Object(map) => map.values().any(long),
            _ => false,
        }
    }
    if !fields.values().any(long) {
        return None;
    }
    trace
        .iter()
        .find(|t| t.from.starts_with('/') && root.pointer(&t.from).is_some_and(long))
}

fn problem_for(source: &Source, node_expr: &str, e: &serde_json::Error) -> Problem {
    let msg = e.to_string();
    // serde names the field in backticks: "missing field `start`". Other messages
    // quote the value there ("unknown variant `…`"), which is not a field to name.
    let field = if msg.starts_with("missing field") || msg.starts_with("unknown field") {
        msg.split('`').nth(1).unwrap_or_default()
    } else {
        ""
    };
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
        // Only what was expected: serde's message also quotes the value it got, which
        // is clinical content and goes back to the sender and into logs.
        // The last ", expected": the value, quoted earlier in the message, may itself
        // contain the word.
        let expected = msg
            .rfind(", expected ")
            .map(|at| format!(" ({})", &msg[at + 2..]))
            .unwrap_or_default();
        format!(
            "this resource carries a {kind}, but a value is outside the dataset's vocabulary{expected}"
        )
    };
    Problem {
        expression,
        message,
    }
}

/// Maximal subtrees of the resource that no rule read, as FHIRPath expressions.
fn dropped_paths<'a>(doc: &Doc<'a>, resource_type: &str, reads: &[Read<'a>]) -> Vec<String> {
    // Nodes are told apart by address: every `&Value` of the borrowed resource has its
    // own, so no pointer strings need building or comparing.
    let mut seen = Seen::default();
    for read in reads {
        let (list, n) = match *read {
            Read::Whole(n) => (&mut seen.whole, n),
            Read::Inside(n) => (&mut seen.inside, n),
        };
        list.push(address(n.value));
        seen.inside.extend(doc.ancestors(n).map(address));
    }
    // A few dozen addresses: sorted and binary-searched, cheaper than hashing them.
    for list in [&mut seen.whole, &mut seen.inside] {
        list.sort_unstable();
        list.dedup();
    }
    let mut out = Vec::new();
    walk_dropped(doc.root, &mut resource_type.to_string(), &seen, &mut out);
    out
}

/// What translation read, by node address (each list sorted).
#[derive(Default)]
struct Seen {
    /// Nodes read as a whole.
    whole: Vec<usize>,
    /// Nodes something below was read from (or looked for in).
    inside: Vec<usize>,
}

/// Reports each child of `v` that was not read at all, and descends into those that were
/// read in part. `expr` is `v`'s expression, extended in place as the walk descends.
fn walk_dropped(v: &Value, expr: &mut String, seen: &Seen, out: &mut Vec<String>) {
    let mut visit = |expr: &mut String, seg: Seg, child: &Value| {
        let at = address(child);
        if seen.whole.binary_search(&at).is_ok() {
            return;
        }
        let len = expr.len();
        path::push_expression_step(expr, seg);
        if seen.inside.binary_search(&at).is_ok() {
            walk_dropped(child, expr, seen, out);
        } else {
            out.push(expr.clone());
        }
        expr.truncate(len);
    };
    match v {
        Value::Object(map) => map.iter().for_each(|(k, c)| visit(expr, Seg::Key(k), c)),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .for_each(|(i, c)| visit(expr, Seg::Index(i), c)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ChangeKind, DatasetItem, NeedKind};
    use serde_json::json;

    pub(crate) fn mappings() -> Mappings {
        Mappings::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")).unwrap()
    }

    fn fixture(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Where the first contained resource of `resource_type` is.
    fn contained_index(resource: &Value, resource_type: &str) -> usize {
        resource["contained"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c["resourceType"] == resource_type)
            .unwrap()
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
        // The intent decided that this is a change (an order, not a proposal); it is read,
        // not reported as dropped.
        assert!(
            !t.dropped
                .contains(&"Communication.contained[0].intent".to_string())
        );
        // The rxnorm coding's system/code were read for sensitivity only, not kept.
        assert!(t.items[0].labels.contains("SUD"), "{:?}", t.items[0].labels);
    }

    /// A "no mental health details" restriction has codes to act on: an antipsychotic
    /// start is labelled PSY without the sender having to label it.
    #[test]
    fn an_antipsychotic_start_is_labelled_mental_health() {
        let mut r = med_notice(json!({}));
        r["contained"][0]["medicationCodeableConcept"] = json!({"text": "Olanzapine 10 mg",
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "61381"}]});
        let t = mappings().translate(&r);
        assert!(t.items[0].labels.contains("PSY"), "{:?}", t.items[0].labels);
        assert!(
            !t.items[0].labels.contains("SUD"),
            "{:?}",
            t.items[0].labels
        );
    }

    /// A medication's reason labels it whether it is written inline (`reasonCode`) or
    /// given as a `reasonReference` to a contained Condition.
    #[test]
    fn a_medication_started_for_a_referenced_diagnosis_carries_its_sensitivity() {
        let alcohol_dependence =
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "66590003"}]});
        let labels_with = |reason: Value, condition: Option<Value>| {
            let mut r = med_notice(json!({}));
            r["contained"][0]["medicationCodeableConcept"] = json!({"text": "Acamprosate 333 mg"});
            r["contained"][0]
                .as_object_mut()
                .unwrap()
                .extend(reason.as_object().unwrap().clone());
            if let Some(c) = condition {
                r["contained"].as_array_mut().unwrap().push(c);
            }
            let t = mappings().translate(&r);
            assert!(t.problems.is_empty(), "{:?}", t.problems);
            t.items[0].labels.clone()
        };
        let inline = labels_with(json!({"reasonCode": [alcohol_dependence]}), None);
        let referenced = labels_with(
            json!({"reasonReference": [{"reference": "#dx"}]}),
            Some(
                json!({"resourceType": "Condition", "id": "dx", "code": alcohol_dependence,
                        "subject": {"reference": "Patient/x"}}),
            ),
        );
        assert!(inline.contains("SUD"), "{inline:?}");
        assert_eq!(referenced, inline);
        let none = labels_with(json!({}), None);
        assert!(none.is_empty(), "{none:?}");
    }

    /// A replacement order that is itself stopped is a stop, not a dose change.
    #[test]
    fn a_stopped_replacement_order_is_a_stop() {
        let mut r = med_notice(json!({}));
        r["contained"][0]["priorPrescription"] = json!({"reference": "MedicationRequest/old"});
        let change = |r: &Value| match &mappings().translate(r).items[0].item {
            DatasetItem::MedicationChange(m) => m.change,
            other => panic!("expected a medication change, got {other:?}"),
        };
        assert_eq!(change(&r), ChangeKind::DoseChanged);
        r["contained"][0]["status"] = json!("stopped");
        assert_eq!(change(&r), ChangeKind::Stopped);
    }

    /// The medication named through `medicationReference` labels the item as if it were
    /// named inline: a substance-use restriction must withhold it either way.
    #[test]
    fn a_medication_named_by_reference_carries_its_sensitivity() {
        let mut r = med_notice(json!({}));
        let request = &mut r["contained"][0];
        request
            .as_object_mut()
            .unwrap()
            .remove("medicationCodeableConcept");
        request["medicationReference"] = json!({"reference": "#med"});
        r["contained"].as_array_mut().unwrap().push(json!({
            "resourceType": "Medication", "id": "med",
            "code": {"text": "Methadone 10 mg/mL oral solution",
                     "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6813"}]}
        }));
        let t = mappings().translate(&r);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let DatasetItem::MedicationChange(m) = &t.items[0].item else {
            panic!("expected a medication change")
        };
        assert_eq!(m.medication, "Methadone 10 mg/mL oral solution");
        assert!(t.items[0].labels.contains("SUD"), "{:?}", t.items[0].labels);
    }

    /// The shipped word list reads housing's everyday words as housing's, and the plain
    /// clinical slips as what they are.
    #[test]
    fn the_word_list_leaves_housing_phrases_unlabelled() {
        let m = mappings();
        for housing in [
            "Unit rehab works start Monday",
            "Hallway sectioned off for repairs",
            "Std tenancy agreement, 12 months",
            "Referred to the council's housing crisis team",
            "Alcohol-free scheme; naloxone kit kept in the office",
            "Depression in the kitchen floor near the door",
            "Mobility aids fitted; crack in the bedroom ceiling",
            "Benefit withdrawal appeal pending",
            "Gambling addiction support leaflet given",
            "Email: std.rehab@housing.example",
        ] {
            assert!(
                m.text_labels(housing).is_empty(),
                "{housing}: {:?}",
                m.text_labels(housing)
            );
        }
        for (clinical, label) in [
            ("Her methadone dose changed", "SUD"),
            ("Recent overdose, now home", "SUD"),
            ("Drinking problem getting worse", "ETH"),
            ("Started antiretrovirals last month", "HIV"),
            ("Under the community mental health team", "PSY"),
            ("Pregnant, due in March", "SEX"),
        ] {
            assert!(m.text_labels(clinical).contains(label), "{clinical}");
        }
    }

    /// A medication coded at product level, which no value set lists, is labelled by its
    /// name: "buprenorphine" is substance-use treatment whatever the code.
    #[test]
    fn a_medication_no_value_set_lists_is_labelled_by_its_name() {
        let mut r = med_notice(json!({}));
        r["contained"][0]["medicationCodeableConcept"] = json!({
            "text": "Buprenorphine 8 MG / Naloxone 2 MG Sublingual Film",
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1010600"}]
        });
        let t = mappings().translate(&r);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let DatasetItem::MedicationChange(m) = &t.items[0].item else {
            panic!("expected a medication change")
        };
        assert_eq!(
            m.medication,
            "Buprenorphine 8 MG / Naloxone 2 MG Sublingual Film"
        );
        assert!(t.items[0].labels.contains("SUD"), "{:?}", t.items[0].labels);
        // A name no word list knows, under a code no value set lists: no label.
        r["contained"][0]["medicationCodeableConcept"]["text"] =
            json!("Amlodipine 5 MG Oral Tablet");
        let t = mappings().translate(&r);
        assert!(t.items[0].labels.is_empty(), "{:?}", t.items[0].labels);
    }

    /// Housing reads one appointment status vocabulary whether the appointment came as
    /// an Appointment or as a care plan activity, whose FHIR code lists differ.
    #[test]
    fn appointment_statuses_from_either_resource_share_the_dataset_vocabulary() {
        let status_of = |r: &Value| {
            let t = mappings().translate(r);
            assert!(t.problems.is_empty(), "{:?}", t.problems);
            let found = t.items.iter().find_map(|i| match &i.item {
                DatasetItem::NextAppointment(a) => {
                    Some(a.status.as_ref().map(|c| c.as_str().to_string()))
                }
                _ => None,
            });
            found.expect("an appointment item")
        };
        let notice = fixture("appointment-notice.json");
        let at = contained_index(&notice, "Appointment");
        let plan = fixture("follow-up-plan.json");
        let cases = [
            ("proposed", "requested"),
            ("pending", "requested"),
            ("waitlist", "requested"),
            ("booked", "booked"),
            ("arrived", "attended"),
            ("checked-in", "attended"),
            ("fulfilled", "attended"),
            ("noshow", "missed"),
            ("cancelled", "cancelled"),
        ];
        for (fhir, dataset) in cases {
            let mut r = notice.clone();
            r["contained"][at]["status"] = json!(fhir);
            assert_eq!(
                status_of(&r).as_deref(),
                Some(dataset),
                "Appointment {fhir}"
            );
        }
        let cases = [
            ("not-started", "requested"),
            ("on-hold", "requested"),
            ("scheduled", "booked"),
            ("in-progress", "attended"),
            ("completed", "attended"),
            ("cancelled", "cancelled"),
            ("stopped", "cancelled"),
        ];
        for (fhir, dataset) in cases {
            let mut r = plan.clone();
            r["activity"][0]["detail"]["status"] = json!(fhir);
            assert_eq!(status_of(&r).as_deref(), Some(dataset), "activity {fhir}");
        }
        // A status that says nothing to housing is left out rather than passed through.
        let mut r = plan.clone();
        r["activity"][0]["detail"]["status"] = json!("unknown");
        assert_eq!(status_of(&r), None);
    }

    /// Transport is needed only while a transport request or activity still stands: a
    /// revoked or mistaken request, or a cancelled activity, no longer says so.
    #[test]
    fn withdrawn_transport_requests_do_not_make_transport_needed() {
        let transport = |r: &Value| {
            let t = mappings().translate(r);
            assert!(t.problems.is_empty(), "{:?}", t.problems);
            let found = t.items.iter().find_map(|i| match &i.item {
                DatasetItem::NextAppointment(a) => Some(a.transport_needed),
                _ => None,
            });
            found.expect("an appointment item")
        };
        let notice = fixture("appointment-notice.json");
        assert_eq!(transport(&notice), Some(true));
        let request = contained_index(&notice, "ServiceRequest");
        for status in ["revoked", "entered-in-error"] {
            let mut r = notice.clone();
            r["contained"][request]["status"] = json!(status);
            assert_eq!(transport(&r), None, "ServiceRequest {status}");
        }
        let mut r = notice.clone();
        r["contained"][request]["status"] = json!("completed");
        assert_eq!(transport(&r), Some(true), "a completed request still stood");

        let plan = fixture("follow-up-plan.json");
        assert_eq!(transport(&plan), Some(true));
        let activity = plan["activity"]
            .as_array()
            .unwrap()
            .iter()
            .position(|a| a["detail"]["kind"] == "ServiceRequest")
            .unwrap();
        for status in ["cancelled", "stopped", "entered-in-error"] {
            let mut r = plan.clone();
            r["activity"][activity]["detail"]["status"] = json!(status);
            assert_eq!(transport(&r), None, "activity {status}");
        }
    }

    /// A plan may refer to its activities (`activity.reference` to a contained resource)
    /// instead of describing them: a referred Appointment is an appointment, an open
    /// referred Task a follow-up, and a referred transport request marks the plan's
    /// appointments, each only while it stands.
    #[test]
    fn plan_activities_given_by_reference_are_read() {
        let mut r = fixture("follow-up-plan.json");
        let transport = r["activity"]
            .as_array()
            .unwrap()
            .iter()
            .position(|a| a["detail"]["kind"] == "ServiceRequest")
            .unwrap();
        // The transport request, now referred to rather than described.
        let _described = r["activity"].as_array_mut().unwrap().remove(transport);
        let contained = r["contained"].as_array_mut().unwrap();
        contained.push(json!({
            "resourceType": "Appointment", "id": "review", "status": "booked",
            "appointmentType": {"text": "Fracture clinic review"},
            "start": "2026-12-09T14:00:00-08:00",
            "participant": [{"actor": {"display": "Fracture clinic"}, "status": "accepted"}]
        }));
        contained.push(json!({
            "resourceType": "Task", "id": "rails", "status": "requested", "intent": "order",
            "description": "Check the grab rails are fitted",
            "restriction": {"period": {"end": "2026-12-11"}},
            "owner": {"display": "Harbor Lane maintenance"}
        }));
        contained.push(json!({
            "resourceType": "Task", "id": "done", "status": "completed", "intent": "order",
            "description": "Already done"
        }));
        contained.push(json!({
            "resourceType": "ServiceRequest", "id": "ride", "status": "active", "intent": "order",
            "code": {"coding": [{"system": "https://hearth.example/fhir/CodeSystem/support-service", "code": "transport"}], "text": "Transport to the fracture clinic"},
            "occurrenceDateTime": "2026-12-09T13:15:00-08:00",
            "performer": [{"display": "Bayview Health Plan transportation benefit"}],
            "subject": {"identifier": {"system": "https://riverside-clinic.example/fhir/mrn", "value": "MRN-448812"}}
        }));
        let ride = contained.len() - 1;
        for id in ["review", "rails", "done", "ride"] {
            r["activity"]
                .as_array_mut()
                .unwrap()
                .push(json!({"reference": {"reference": format!("#{id}")}}));
        }

        let t = mappings().translate(&r);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let appointments: Vec<_> = t
            .items
            .iter()
            .filter_map(|i| match &i.item {
                DatasetItem::NextAppointment(a) => Some((a, i.source.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(appointments.len(), 2, "{appointments:?}");
        let (review, source) = appointments
            .iter()
            .find(|(a, _)| a.start == "2026-12-09T14:00:00-08:00")
            .expect("the referred appointment");
        assert_eq!(review.kind.as_deref(), Some("Fracture clinic review"));
        assert_eq!(review.status.as_ref().map(|s| s.as_str()), Some("booked"));
        assert!(source.starts_with("CarePlan.contained["), "{source}");
        for (a, _) in &appointments {
            assert_eq!(a.transport_needed, Some(true), "{a:?}");
        }
        let follow_up = t
            .items
            .iter()
            .find_map(|i| match &i.item {
                DatasetItem::Discharge(d) => Some(d.follow_up.clone()),
                _ => None,
            })
            .expect("the plan's follow-ups");
        let actions: Vec<&str> = follow_up.iter().map(|f| f.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "Fit grab rails in the bathroom and remove loose rugs",
                "Transport to the fracture clinic",
                "Check the grab rails are fitted"
            ]
        );
        assert_eq!(
            follow_up[1].due.as_deref(),
            Some("2026-12-09T13:15:00-08:00")
        );
        assert_eq!(
            follow_up[1].owner.as_deref(),
            Some("Bayview Health Plan transportation benefit")
        );
        assert_eq!(follow_up[2].due.as_deref(), Some("2026-12-11"));
        assert_eq!(
            follow_up[2].owner.as_deref(),
            Some("Harbor Lane maintenance")
        );

        // A revoked transport request no longer marks them, nor is it a follow-up.
        r["contained"][ride]["status"] = json!("revoked");
        let t = mappings().translate(&r);
        for i in &t.items {
            match &i.item {
                DatasetItem::NextAppointment(a) => assert_eq!(a.transport_needed, None, "{a:?}"),
                DatasetItem::Discharge(d) => assert_eq!(d.follow_up.len(), 2, "{d:?}"),
                _ => {}
            }
        }
    }

    #[test]
    fn a_recognised_item_missing_a_required_field_is_a_problem_pointing_at_it() {
        let mut r = med_notice(json!({}));
        r["contained"][0]
            .as_object_mut()
            .unwrap()
            .remove("medicationCodeableConcept");
        let t = mappings().translate(&r);
        assert!(t.items.is_empty());
        assert_eq!(t.problems.len(), 1);
        assert_eq!(
            t.problems[0].expression,
            "Communication.contained[0].medicationCodeableConcept.text"
        );
    }

    /// A value the dataset's vocabulary refuses is described by what was expected; the
    /// value itself (clinical content) is not quoted back.
    #[test]
    fn a_value_outside_the_vocabulary_is_not_quoted_in_the_problem() {
        let m = mappings();
        let source = m
            .sources
            .iter()
            .find(|s| s.kind == ItemKind::NextAppointment)
            .unwrap();
        let e = DatasetItem::from_fields(
            ItemKind::NextAppointment,
            json!({"start": "2026-12-01T09:00:00Z", "transport_needed": "expected after methadone dosing, expected soon"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("methadone dosing"), "{e}");
        let p = problem_for(source, "Communication.contained[0]", &e);
        assert!(!p.message.contains("methadone"), "{}", p.message);
        assert!(p.message.contains("expected"), "{}", p.message);
    }

    /// Only an order in force or ended is a medication change: a draft, a paused or
    /// mistaken order, or a proposal says nothing has changed.
    #[test]
    fn orders_not_in_force_are_not_medication_changes() {
        for (field, value) in [
            ("status", "draft"),
            ("status", "on-hold"),
            ("status", "entered-in-error"),
            // Withdrawn before anything was taken: not a stop of something started.
            ("status", "cancelled"),
            ("intent", "proposal"),
            ("intent", "plan"),
        ] {
            let mut r = med_notice(json!({}));
            r["contained"][0]["priorPrescription"] = json!({"reference": "MedicationRequest/old"});
            r["contained"][0][field] = json!(value);
            let t = mappings().translate(&r);
            assert!(t.items.is_empty(), "{field} {value}: {:?}", t.items);
        }
    }

    /// A tenant still in hospital is `admitted`, dated by the admission.
    #[test]
    fn an_admission_is_dated_by_its_start() {
        let mut r = fixture("discharge-notice.json");
        let encounter = contained_index(&r, "Encounter");
        r["contained"][encounter]["status"] = json!("in-progress");
        r["contained"][encounter]["period"] = json!({"start": "2026-11-18T22:10:00-08:00"});
        let t = mappings().translate(&r);
        let DatasetItem::Discharge(d) = &t.items[0].item else {
            panic!("expected a discharge")
        };
        assert_eq!(d.status.as_str(), "admitted");
        assert_eq!(d.date.as_deref(), Some("2026-11-18T22:10:00-08:00"));

        // Discharged, with no end recorded: no date, rather than the admission's.
        r["contained"][encounter]["status"] = json!("finished");
        let t = mappings().translate(&r);
        let DatasetItem::Discharge(d) = &t.items[0].item else {
            panic!("expected a discharge")
        };
        assert_eq!(d.status.as_str(), "discharged");
        assert_eq!(d.date, None);
    }

    /// A follow-up already done, cancelled or entered in error is no requirement.
    #[test]
    fn only_open_tasks_are_follow_up_requirements() {
        let mut r = fixture("discharge-notice.json");
        let follow_ups = |r: &Value| match &mappings().translate(r).items[0].item {
            DatasetItem::Discharge(d) => d.follow_up.len(),
            other => panic!("expected a discharge, got {other:?}"),
        };
        let open = follow_ups(&r);
        assert_eq!(open, 2);
        let task = contained_index(&r, "Task");
        for status in ["completed", "cancelled", "entered-in-error"] {
            r["contained"][task]["status"] = json!(status);
            assert_eq!(follow_ups(&r), open - 1, "{status}");
        }
    }

    /// Inputs whose translation is pinned: every fixture, each Bundle entry's resource,
    /// and one notice with awkward shapes (keys that are digits or need pointer escapes,
    /// `meta` without `security`, a contained resource without an id).
    fn pinned_inputs() -> Vec<(String, Value)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let v = fixture(&name);
            let stem = name.trim_end_matches(".json").to_string();
            if let Some(entries) = v.get("entry").and_then(Value::as_array) {
                for (i, e) in entries.iter().enumerate() {
                    out.push((format!("{stem}.entry{i}"), e["resource"].clone()));
                }
            }
            out.push((stem, v));
        }
        let mut odd = out
            .iter()
            .find(|(n, _)| n == "discharge-notice-oversharing")
            .unwrap()
            .1
            .clone();
        odd["meta"] = json!({"profile": ["urn:p"], "0": {"x": 1}});
        odd["a/b~c"] = json!({"~1": [1, {"2": "x"}], "": true});
        odd["123"] = json!(["y"]);
        odd["subject"] = json!({"reference": "#nobody"});
        odd["contained"]
            .as_array_mut()
            .unwrap()
            .push(json!({"resourceType": "Location", "name": "No id"}));
        odd["contained"][1]["serviceProvider"] = json!({"reference": "#missing", "display": "RGH"});
        out.push(("edge-shapes".into(), odd));
        out
    }

    /// Translation output is pinned byte for byte in `src/mapping/snapshots/`. After an
    /// intended change, regenerate with `UPDATE_SNAPSHOTS=1 cargo test --lib mapping` and
    /// review the diff.
    #[test]
    fn translations_match_the_pinned_snapshots() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mapping/snapshots");
        let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
        let m = mappings();
        let mut mismatched = Vec::new();
        for (name, input) in pinned_inputs() {
            let got = serde_json::to_string_pretty(&m.translate(&input)).unwrap() + "\n";
            let file = dir.join(format!("{name}.json"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&file, &got).unwrap();
            } else if std::fs::read_to_string(&file).ok().as_deref() != Some(got.as_str()) {
                mismatched.push(name);
            }
        }
        assert!(
            mismatched.is_empty(),
            "translation differs from src/mapping/snapshots/ for {mismatched:?}"
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

    /// US EHRs code the reason for a medication in ICD-10-CM more often than SNOMED: an
    /// unlisted product code with an opioid-dependence reason is still substance-use
    /// treatment, and an antiretroviral for HIV disease is HIV-labelled.
    #[test]
    fn icd_10_cm_reasons_label_a_medication() {
        for (icd, label) in [("F11.20", "SUD"), ("B20", "HIV")] {
            let mut r = med_notice(json!({}));
            let m = &mut r["contained"][0];
            m["medicationCodeableConcept"] = json!({"text": "a product the value sets do not list",
                "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "999999"}]});
            m["reasonCode"] =
                json!([{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": icd}]}]);
            let t = mappings().translate(&r);
            assert_eq!(t.items.len(), 1, "{icd}");
            assert!(
                t.items[0].labels.contains(label),
                "{icd}: {:?}",
                t.items[0].labels
            );
        }
    }

    /// A waitlisted appointment has no start yet, only the period asked for: housing is
    /// told it is requested for then, rather than the whole notice being refused.
    #[test]
    fn an_appointment_without_a_start_is_expected_when_it_was_requested() {
        let mut r = fixture("appointment-notice.json");
        let at = contained_index(&r, "Appointment");
        let appointment = r["contained"][at].as_object_mut().unwrap();
        appointment.remove("start");
        appointment.remove("end");
        appointment.insert("status".into(), json!("waitlist"));
        appointment.insert("requestedPeriod".into(), json!([{"start": "2026-12-01"}]));
        let t = mappings().translate(&r);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let DatasetItem::NextAppointment(a) = &t.items[0].item else {
            panic!("expected an appointment: {:?}", t.items)
        };
        assert_eq!(a.start, "2026-12-01");
        assert_eq!(a.status.as_ref().map(|s| s.as_str()), Some("requested"));
    }

    /// The tenant's language is the one marked preferred, not merely the first listed;
    /// US Core's interpreter-needed extension (a yes/no Coding) counts like FHIR's own.
    #[test]
    fn the_preferred_language_and_us_core_interpreter_needed_are_read() {
        let language_need = |r: &Value| {
            let t = mappings().translate(r);
            assert!(t.problems.is_empty(), "{:?}", t.problems);
            let found = t.items.iter().find_map(|i| match &i.item {
                DatasetItem::AccommodationNeed(a) if a.need == NeedKind::Language => Some((
                    a.language.as_ref().map(|c| c.as_str().to_string()),
                    a.interpreter,
                )),
                _ => None,
            });
            found.expect("a language need")
        };
        let mut r = fixture("accommodation-needs.json");
        let patient = contained_index(&r, "Patient");
        r["contained"][patient]["communication"] = json!([
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "pl"}]}, "preferred": true}
        ]);
        assert_eq!(language_need(&r).0.as_deref(), Some("pl"));
        // The preferred one, uncoded: not the first listed, which the tenant did not prefer.
        r["contained"][patient]["communication"][1]["language"] = json!({"text": "Polish"});
        assert_eq!(language_need(&r).0, None);
        r["contained"][patient]["communication"][1]["language"] =
            json!({"coding": [{"system": "urn:ietf:bcp:47", "code": "pl"}]});
        // None marked preferred: the first listed.
        r["contained"][patient]["communication"][1]
            .as_object_mut()
            .unwrap()
            .remove("preferred");
        assert_eq!(language_need(&r).0.as_deref(), Some("en"));

        let us_core = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-interpreter-needed";
        let coded = |system: &str, code: &str| json!({"url": us_core, "valueCoding": {"system": system, "code": code}});
        for (extension, expected) in [
            (coded("http://snomed.info/sct", "373066001"), Some(true)),
            (coded("http://snomed.info/sct", "373067005"), Some(false)),
            (
                coded("http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "UNK"),
                None,
            ),
            (json!({"url": us_core, "valueBoolean": true}), Some(true)),
        ] {
            r["contained"][patient]["extension"] = json!([extension.clone()]);
            assert_eq!(language_need(&r).1, expected, "{extension}");
        }
    }

    /// Free text longer than the dataset keeps (the bound on housing's own notes) is
    /// refused at its element, neither cut nor passed on, and not quoted back. The bound
    /// counts characters, not bytes.
    #[test]
    fn free_text_longer_than_the_dataset_keeps_is_a_problem_at_its_element() {
        let at = "/contained/0/dosageInstruction/0/patientInstruction";
        let mut r = med_notice(json!({}));
        *r.pointer_mut(at).unwrap() = json!("é".repeat(MAX_TEXT));
        let t = mappings().translate(&r);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        assert_eq!(t.items.len(), 1);

        *r.pointer_mut(at).unwrap() = json!(format!("Take daily. {}", "x".repeat(MAX_TEXT)));
        let t = mappings().translate(&r);
        assert!(t.items.is_empty(), "{:?}", t.items);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert_eq!(
            t.problems[0].expression,
            "Communication.contained[0].dosageInstruction[0].patientInstruction"
        );
        let message = &t.problems[0].message;
        assert!(message.contains("`instruction`"), "{message}");
        assert!(!message.contains("Take daily"), "{message}");
    }

    /// A flag entered in error never held: it is no risk flag or need for housing. A
    /// resolved one (inactive) still is, so housing can stand its support down.
    #[test]
    fn flags_entered_in_error_are_not_items() {
        for (file, kind) in [
            ("risk-flag-update.json", ItemKind::RiskFlag),
            ("accommodation-needs.json", ItemKind::AccommodationNeed),
        ] {
            let mut r = fixture(file);
            let flags = |r: &Value| -> usize {
                mappings()
                    .translate(r)
                    .items
                    .iter()
                    .filter(|i| i.item.kind() == kind)
                    .count()
            };
            let before = flags(&r);
            assert!(before > 0, "{file}");
            let first = r["contained"]
                .as_array()
                .unwrap()
                .iter()
                .position(|c| c["resourceType"] == "Flag")
                .unwrap();
            r["contained"][first]["status"] = json!("inactive");
            assert_eq!(flags(&r), before, "{file}: a resolved flag still counts");
            r["contained"][first]["status"] = json!("entered-in-error");
            assert_eq!(flags(&r), before - 1, "{file}");
        }
    }
}
