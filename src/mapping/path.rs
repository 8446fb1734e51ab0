//! A small FHIRPath subset for mapping files, evaluated over `serde_json::Value` with the
//! JSON pointer of every node kept, so Hearth knows exactly which elements it read.

use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    OfType(String),
    Resolve,
    Extension(String),
}

/// A parsed path such as `participant.actor.resolve().ofType(Location).name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    from_resource: bool,
    steps: Vec<Step>,
    text: String,
}

impl Path {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text.trim();
        let mut from_resource = false;
        if let Some(r) = rest.strip_prefix("%resource") {
            from_resource = true;
            rest = r.strip_prefix('.').unwrap_or(r);
        }
        let mut steps = Vec::new();
        while !rest.is_empty() {
            let name_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if name_len == 0 {
                return Err(format!("expected an element name at `{rest}` in `{text}`"));
            }
            let name = &rest[..name_len];
            rest = &rest[name_len..];
            if let Some(after) = rest.strip_prefix('(') {
                let close = after
                    .find(')')
                    .ok_or_else(|| format!("unclosed `(` in `{text}`"))?;
                let arg = after[..close].trim().trim_matches('\'');
                rest = &after[close + 1..];
                steps.push(match (name, arg.is_empty()) {
                    ("ofType", false) => Step::OfType(arg.to_string()),
                    ("resolve", true) => Step::Resolve,
                    ("extension", false) => Step::Extension(arg.to_string()),
                    _ => return Err(format!("unsupported function `{name}({arg})` in `{text}`")),
                });
            } else {
                steps.push(Step::Field(name.to_string()));
            }
            match rest.strip_prefix('.') {
                Some(r) if !r.is_empty() => rest = r,
                Some(_) => return Err(format!("path `{text}` ends with `.`")),
                None if rest.is_empty() => {}
                None => return Err(format!("unexpected `{rest}` in `{text}`")),
            }
        }
        Ok(Self {
            from_resource,
            steps,
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The last element name of the path, for error messages (`start`, `status`, …).
    pub fn leaf(&self) -> Option<&str> {
        self.steps.iter().rev().find_map(|s| match s {
            Step::Field(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// The element-name steps from the context node, joined with `.` (no functions).
    pub fn elements(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Field(f) => Some(f.as_str()),
                _ => None,
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_functions_with_dotted_arguments() {
        let p = Path::parse(
            "extension('http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired').valueBoolean",
        )
        .unwrap();
        assert_eq!(p.leaf(), Some("valueBoolean"));
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("a.where(x)").is_err());
    }

    #[test]
    fn resolves_contained_references_and_records_what_it_used() {
        let r = json!({
            "resourceType": "Appointment",
            "contained": [{"resourceType": "Location", "id": "loc", "name": "Suite 4"}],
            "participant": [{"actor": {"display": "Dr Who"}}, {"actor": {"reference": "#loc"}}]
        });
        let doc = Doc::new(&r);
        let mut used = Vec::new();
        let path = Path::parse("participant.actor.resolve().ofType(Location).name").unwrap();
        let nodes = doc.eval(&path, &doc.root_node(), &mut used);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].value, "Suite 4");
        assert_eq!(nodes[0].ptr, "/contained/0/name");
        assert!(used.contains(&"/participant/1/actor/reference".to_string()));
    }

    #[test]
    fn pointers_become_fhirpath_expressions() {
        assert_eq!(
            pointer_to_expression("Communication", "/contained/2/note/0"),
            "Communication.contained[2].note[0]"
        );
    }
}
