//! TEMPORARY: the translation as it was before the compact-path rewrite, kept only to
//! check the new one against it (differential tests). Deleted once they agree.
#![allow(dead_code, clippy::all)]

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};

use super::path::{Path, Step};
use super::rules::{FieldRule, Op, Rule, Source};
use super::{
    ENVELOPE, KNOWN_LABELS, LABEL_SYSTEMS, MappedItem, Mappings, Trace, Translation, problem_for,
};
use crate::dataset::DatasetItem;

pub struct Legacy<'m>(pub &'m Mappings);

impl Legacy<'_> {
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
            .filter(|code| KNOWN_LABELS.contains(code) || self.0.sensitivity.names_label(code))
            .map(str::to_string)
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
        let mut used: Vec<String> = ENVELOPE
            .iter()
            .map(|keys| keys.iter().map(|k| format!("/{k}")).collect::<String>())
            .collect();
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

        for source in self
            .0
            .sources
            .iter()
            .filter(|s| s.resource == resource_type)
        {
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
                    .find(|(_, set)| self.0.sets.contains(set, system, code))
                    .map(|(out, _)| (out.clone(), coding_ptrs(n), from_mapping()))
            }),
            Op::In { set, value } => nodes.iter().find_map(|n| {
                let (system, code) = coding(n.value)?;
                self.0
                    .sets
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
        for (set, set_labels) in &self.0.sensitivity.by_codes {
            if codings.iter().any(|(s, c)| self.0.sets.contains(set, s, c)) {
                labels.extend(set_labels.iter().cloned());
            }
        }
        for (kind, field, equals, item_labels) in &self.0.sensitivity.by_item {
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
        ptr.push_str(&escape(seg));
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

/// A node of the inbound resource and where it sits (a JSON pointer).
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub ptr: String,
}

/// The posted resource, indexed for `resolve()`.
pub struct Doc<'a> {
    pub root: &'a Value,
    contained: HashMap<&'a str, usize>,
}

impl<'a> Doc<'a> {
    pub fn new(root: &'a Value) -> Self {
        let contained = root
            .get("contained")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.get("id").and_then(Value::as_str).map(|id| (id, i)))
                    .collect()
            })
            .unwrap_or_default();
        Self { root, contained }
    }

    pub fn root_node(&self) -> Node<'a> {
        Node {
            value: self.root,
            ptr: String::new(),
        }
    }

    /// The contained resource a local reference (`#id`) points at.
    pub fn resolve_local(&self, reference: &str) -> Option<Node<'a>> {
        let id = reference.strip_prefix('#')?;
        let i = *self.contained.get(id)?;
        Some(Node {
            value: &self.root["contained"][i],
            ptr: format!("/contained/{i}"),
        })
    }

    /// Evaluates `path` from `from`. Pointers of the elements navigation relied on
    /// (reference strings, extension urls, resolved resources' type and id) go to `used`.
    pub fn eval(&self, path: &Path, from: &Node<'a>, used: &mut Vec<String>) -> Vec<Node<'a>> {
        let mut nodes = vec![if path.from_resource {
            self.root_node()
        } else {
            from.clone()
        }];
        for step in &path.steps {
            let mut next = Vec::new();
            for node in nodes {
                match step {
                    Step::Field(name) => {
                        if let Some(child) = node.value.get(name.as_str()) {
                            let ptr = format!("{}/{}", node.ptr, escape(name));
                            push_flat(child, ptr, &mut next);
                        }
                    }
                    Step::OfType(ty) => {
                        if node.value.get("resourceType").and_then(Value::as_str) == Some(ty) {
                            next.push(node);
                        }
                    }
                    Step::Resolve => {
                        let reference = node.value.get("reference").and_then(Value::as_str);
                        if let Some(target) = reference.and_then(|r| self.resolve_local(r)) {
                            used.push(format!("{}/reference", node.ptr));
                            used.push(format!("{}/resourceType", target.ptr));
                            used.push(format!("{}/id", target.ptr));
                            next.push(target);
                        }
                    }
                    Step::Extension(url) => {
                        if let Some(list) = node.value.get("extension").and_then(Value::as_array) {
                            for (i, ext) in list.iter().enumerate() {
                                if ext.get("url").and_then(Value::as_str) == Some(url) {
                                    let ptr = format!("{}/extension/{i}", node.ptr);
                                    used.push(format!("{ptr}/url"));
                                    next.push(Node { value: ext, ptr });
                                }
                            }
                        }
                    }
                }
            }
            nodes = next;
        }
        nodes
    }
}

fn push_flat<'a>(value: &'a Value, ptr: String, out: &mut Vec<Node<'a>>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                out.push(Node {
                    value: item,
                    ptr: format!("{ptr}/{i}"),
                });
            }
        }
        _ => out.push(Node { value, ptr }),
    }
}

/// Escapes a JSON pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Turns a JSON pointer into a FHIRPath-style expression rooted at the resource type:
/// `/contained/2/note/0` → `Communication.contained[2].note[0]`.
pub fn pointer_to_expression(resource_type: &str, ptr: &str) -> String {
    let mut out = resource_type.to_string();
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            out.push('.');
            out.push_str(&seg);
        }
    }
    out
}
