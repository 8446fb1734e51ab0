//! A small FHIRPath subset for mapping files, evaluated over `serde_json::Value`. The
//! [`Doc`] keeps where every node it reached sits in the resource, so Hearth knows
//! exactly which elements it read.

use serde_json::Value;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    OfType(String),
    Resolve,
    Extension(String),
    /// `where(p = v)` / `where(p in v | w …)`: keep the nodes at which a primitive that
    /// `p` (relative to the node) yields equals one of the literals.
    Where(Path, Vec<Literal>),
}

/// A literal in a `where()` condition: a `'quoted'` string, `true` or `false`.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Bool(bool),
}

impl Literal {
    /// FHIRPath equality: a string equals a string, a boolean a boolean; `'true'` is not
    /// `true`.
    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Literal::Str(l), Value::String(s)) => l == s,
            (Literal::Bool(l), Value::Bool(b)) => l == b,
            _ => false,
        }
    }
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
                let close =
                    closing_paren(after).ok_or_else(|| format!("unclosed `(` in `{text}`"))?;
                let raw = &after[..close];
                let arg = raw.trim().trim_matches('\'');
                rest = &after[close + 1..];
                steps.push(match (name, arg.is_empty()) {
                    ("where", false) => parse_where(raw, text)?,
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

/// Where the `)` closing an argument list sits in `s` (the text after its `(`): the first
/// `)` outside quotes and nested parentheses.
fn closing_paren(s: &str) -> Option<usize> {
    top_level(s).find(|&(_, b)| b == b')').map(|(i, _)| i)
}

/// The bytes of `s` outside quoted literals and nested parentheses, with their offsets;
/// a `)` that closes nothing opened in `s` is among them (it ends an argument list).
fn top_level(s: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let (mut quoted, mut depth) = (false, 0usize);
    s.bytes().enumerate().filter(move |&(_, b)| {
        let outside = !quoted && depth == 0;
        match b {
            b'\'' => quoted = !quoted,
            _ if quoted => {}
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        outside && b != b'\''
    })
}

/// The argument of `where(…)`: `p = literal` or `p in literal | literal …` (the list may
/// be parenthesised), where `p` is a path relative to the node being tested.
fn parse_where(arg: &str, text: &str) -> Result<Step, String> {
    let shape = || {
        format!(
            "expected `where(path = literal)` or `where(path in literal | literal)` in `{text}`"
        )
    };
    let (left, right, single) = split_operator(arg).ok_or_else(shape)?;
    let left = left.trim();
    if left.ends_with(['!', '<', '>', '~']) {
        return Err(format!(
            "only `=` and `in` are supported in `where()`, in `{text}`"
        ));
    }
    if left.is_empty() {
        return Err(shape());
    }
    let condition = Path::parse(left)?;
    if condition.from_resource {
        return Err(format!(
            "a `where()` condition reads from the node it tests, not `%resource`, in `{text}`"
        ));
    }
    let literals = parse_literals(right, text)?;
    if single && literals.len() != 1 {
        return Err(format!(
            "`=` compares with one literal; use `in` for a list, in `{text}`"
        ));
    }
    Ok(Step::Where(condition, literals))
}

/// Splits a `where()` argument at its operator (`=` or the word `in`), outside quotes
/// and parentheses: the left side, the right side, and whether it was `=`.
fn split_operator(arg: &str) -> Option<(&str, &str, bool)> {
    let bytes = arg.as_bytes();
    for (i, b) in top_level(arg) {
        match b {
            b'=' => return Some((&arg[..i], &arg[i + 1..], true)),
            b'i' if i > 0
                && bytes[i - 1].is_ascii_whitespace()
                && bytes.get(i + 1) == Some(&b'n')
                && bytes
                    .get(i + 2)
                    .is_some_and(|c| c.is_ascii_whitespace() || *c == b'(' || *c == b'\'') =>
            {
                return Some((&arg[..i], &arg[i + 2..], false));
            }
            _ => {}
        }
    }
    None
}

/// `'a' | 'b' | true`, optionally in parentheses.
fn parse_literals(list: &str, text: &str) -> Result<Vec<Literal>, String> {
    let mut list = list.trim();
    if let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) {
        list = inner;
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in top_level(list).filter(|&(_, b)| b == b'|') {
        out.push(parse_literal(&list[start..i], text)?);
        start = i + 1;
    }
    out.push(parse_literal(&list[start..], text)?);
    Ok(out)
}

fn parse_literal(s: &str, text: &str) -> Result<Literal, String> {
    match s.trim() {
        "true" => Ok(Literal::Bool(true)),
        "false" => Ok(Literal::Bool(false)),
        s => s
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .filter(|s| !s.contains('\''))
            .map(|s| Literal::Str(s.to_string()))
            .ok_or_else(|| {
                format!("expected a 'quoted' string, true or false, not `{s}` in `{text}`")
            }),
    }
}

/// One step from a node down to a child: an object key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A node of the inbound resource and where it sits.
///
/// Where it sits is an index into its [`Doc`]'s locations: each location is one step
/// (an object key or an array index) from a parent location, with the value it reached.
/// Walking the parents gives the node's ancestors, which the dropped-path report needs
/// (see [`Read`]), and a pointer or a FHIRPath expression, rendered only for the few
/// nodes that are output. A node is two words and `Copy`, because evaluation moves and
/// keeps many of them (docs/PERFORMANCE.md). A node belongs to the `Doc` that made it.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a Value,
    at: u32,
}

/// A value's identity within the borrowed resource: every `&Value` of it has its own
/// address, so nodes are told apart without building pointer strings.
pub fn address(v: &Value) -> usize {
    v as *const Value as usize
}

/// The location of the resource itself: it has no parent and no step.
const ROOT: u32 = u32::MAX;

/// One step down from the location `parent`.
#[derive(Debug)]
struct Location<'a> {
    seg: Seg<'a>,
    value: &'a Value,
    parent: u32,
}

/// An element translation relied on, for the dropped-path report: everything a resource
/// carries that no read covers is reported as dropped.
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    /// This node, as a whole.
    Whole(Node<'a>),
    /// An element looked for below this node that is not there (a contained resource
    /// without an `id`, `meta` without `security`). Nothing of the node was read, but it
    /// counts as looked into: what it holds is reported element by element, not as one
    /// dropped whole.
    Inside(Node<'a>),
}

/// The posted resource, indexed for `resolve()`, and the locations of the nodes
/// evaluation has reached.
pub struct Doc<'a> {
    pub root: &'a Value,
    /// Ids come from the sender: foldhash is seeded per process, and the body size limit
    /// bounds how many there are.
    contained: HashMap<&'a str, usize, foldhash::fast::RandomState>,
    /// Append-only, one entry per element reached: a node's index stays valid for the
    /// document's life.
    locations: RefCell<Vec<Location<'a>>>,
    /// Each element's location, by its address: an element reached again (a contained
    /// resource every item resolves) reuses its entry, so the list is bounded by the
    /// resource's size however often rules revisit it.
    located: RefCell<HashMap<usize, u32, foldhash::fast::RandomState>>,
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
        Self {
            root,
            contained,
            locations: RefCell::new(Vec::with_capacity(256)),
            located: RefCell::new(HashMap::default()),
        }
    }

    pub fn root_node(&self) -> Node<'a> {
        Node {
            value: self.root,
            at: ROOT,
        }
    }

    /// The child of `node` at `seg`, whose value is `value`.
    fn child(&self, node: Node<'a>, seg: Seg<'a>, value: &'a Value) -> Node<'a> {
        let address = address(value);
        if let Some(&at) = self.located.borrow().get(&address) {
            return Node { value, at };
        }
        let mut locations = self.locations.borrow_mut();
        let at = u32::try_from(locations.len())
            .ok()
            .filter(|&at| at != ROOT)
            .expect("fewer than 2^32 - 1 nodes per resource");
        locations.push(Location {
            seg,
            value,
            parent: node.at,
        });
        self.located.borrow_mut().insert(address, at);
        Node { value, at }
    }

    /// The child of `node` under object key `key`, if it is an object that has one.
    pub fn get(&self, node: Node<'a>, key: &str) -> Option<Node<'a>> {
        // The key is borrowed from the document, so the node does not borrow `key`.
        let (key, value) = node.value.as_object()?.get_key_value(key)?;
        Some(self.child(node, Seg::Key(key), value))
    }

    /// `f` of each location from `node` up to (not including) the resource, innermost
    /// first. A node of another `Doc` panics rather than reading someone else's path.
    fn walk_up<T>(&self, node: Node<'a>, f: impl Fn(&Location<'a>) -> T) -> SmallVec<[T; 8]> {
        let locations = self.locations.borrow();
        let mut out = SmallVec::new();
        let mut at = node.at;
        while at != ROOT {
            let l = &locations[at as usize];
            assert!(
                !out.is_empty() || std::ptr::eq(l.value, node.value),
                "a node used with a Doc that did not make it"
            );
            out.push(f(l));
            at = l.parent;
        }
        out
    }

    /// The values between the resource and `node`: its ancestors, not counting the
    /// resource itself, innermost first.
    pub fn ancestors(&self, node: Node<'a>) -> impl Iterator<Item = &'a Value> {
        self.walk_up(node, |l| l.value).into_iter().skip(1)
    }

    /// The steps from the resource down to `node`, outermost first.
    fn segs(&self, node: Node<'a>) -> impl Iterator<Item = Seg<'a>> {
        self.walk_up(node, |l| l.seg).into_iter().rev()
    }

    /// Records that the element at `keys` below `node` was read (see [`Read`]).
    pub fn read(&self, node: Node<'a>, keys: &[&str], reads: &mut Vec<Read<'a>>) {
        let mut node = node;
        for key in keys {
            match self.get(node, key) {
                Some(child) => node = child,
                None => {
                    reads.push(Read::Inside(node));
                    return;
                }
            }
        }
        reads.push(Read::Whole(node));
    }

    /// `node`'s JSON pointer (RFC 6901), e.g. `/contained/1/name`.
    pub fn pointer(&self, node: Node<'a>) -> String {
        let mut out = String::new();
        for seg in self.segs(node) {
            out.push('/');
            match seg {
                Seg::Key(key) => {
                    for c in key.chars() {
                        match c {
                            '~' => out.push_str("~0"),
                            '/' => out.push_str("~1"),
                            c => out.push(c),
                        }
                    }
                }
                Seg::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    /// `node` as a FHIRPath-style expression, e.g. `Communication.contained[1].name`.
    pub fn expression(&self, node: Node<'a>, resource_type: &str) -> String {
        let mut out = resource_type.to_string();
        for seg in self.segs(node) {
            push_expression_step(&mut out, seg);
        }
        out
    }

    /// The contained resource a local reference (`#id`) points at.
    pub fn resolve_local(&self, reference: &str) -> Option<Node<'a>> {
        let id = reference.strip_prefix('#')?;
        let i = *self.contained.get(id)?;
        let list = self.get(self.root_node(), "contained")?;
        Some(self.child(list, Seg::Index(i), &list.value[i]))
    }

    /// Evaluates `path` from `from`. The elements navigation relied on (reference
    /// strings, extension urls, resolved resources' type and id, the value that let a
    /// node through a `where()`) go to `reads`.
    pub fn eval(&self, path: &Path, from: Node<'a>, reads: &mut Vec<Read<'a>>) -> Vec<Node<'a>> {
        let mut nodes = vec![if path.from_resource {
            self.root_node()
        } else {
            from
        }];
        for step in &path.steps {
            let mut next = Vec::new();
            for node in nodes {
                match step {
                    Step::Field(name) => {
                        if let Some(child) = self.get(node, name) {
                            self.push_flat(child, &mut next);
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
                            self.read(node, &["reference"], reads);
                            self.read(target, &["resourceType"], reads);
                            self.read(target, &["id"], reads);
                            next.push(target);
                        }
                    }
                    Step::Where(condition, literals) => {
                        // What the test read counts only for a node it keeps: a revoked
                        // request's status decided nothing that was kept.
                        let mark = reads.len();
                        let hit = self
                            .eval(condition, node, reads)
                            .into_iter()
                            .find(|n| literals.iter().any(|l| l.matches(n.value)));
                        match hit {
                            Some(n) => {
                                reads.push(Read::Whole(n));
                                next.push(node);
                            }
                            None => reads.truncate(mark),
                        }
                    }
                    Step::Extension(url) => {
                        if let Some(list) = self.get(node, "extension")
                            && let Value::Array(exts) = list.value
                        {
                            for (i, ext) in exts.iter().enumerate() {
                                if ext.get("url").and_then(Value::as_str) == Some(url) {
                                    let ext = self.child(list, Seg::Index(i), ext);
                                    self.read(ext, &["url"], reads);
                                    next.push(ext);
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

    /// Pushes `node`, or each of its entries if it is an array (FHIRPath flattens lists).
    fn push_flat(&self, node: Node<'a>, out: &mut Vec<Node<'a>>) {
        match node.value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    out.push(self.child(node, Seg::Index(i), item));
                }
            }
            _ => out.push(node),
        }
    }
}

/// Appends one step as FHIRPath writes it: `.name`, or `[n]` for an array index. A key
/// made only of digits is written `[n]` too: a JSON pointer cannot tell the two apart,
/// and [`pointer_to_expression`] must agree with [`Doc::expression`].
pub fn push_expression_step(out: &mut String, seg: Seg) {
    match seg {
        Seg::Index(i) => {
            out.push('[');
            out.push_str(&i.to_string());
            out.push(']');
        }
        Seg::Key(key) if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) => {
            out.push('[');
            out.push_str(key);
            out.push(']');
        }
        Seg::Key(key) => {
            out.push('.');
            out.push_str(key);
        }
    }
}

/// Turns a JSON pointer into a FHIRPath-style expression rooted at the resource type:
/// `/contained/2/note/0` → `Communication.contained[2].note[0]`.
pub fn pointer_to_expression(resource_type: &str, ptr: &str) -> String {
    let mut out = resource_type.to_string();
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        push_expression_step(&mut out, Seg::Key(&seg));
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

    /// `where()` keeps the nodes whose element holds one of the values, and records the
    /// value that let each kept node through (nothing of a node it drops).
    #[test]
    fn where_keeps_only_the_nodes_that_satisfy_it() {
        let r = json!({
            "resourceType": "Communication",
            "contained": [
                {"resourceType": "ServiceRequest", "id": "a", "status": "revoked", "code": {"text": "A"}},
                {"resourceType": "ServiceRequest", "id": "b", "status": "active", "code": {"text": "B"}},
                {"resourceType": "Patient", "id": "p", "communication": [
                    {"language": "en"},
                    {"language": "pl", "preferred": true},
                    {"language": "de", "preferred": "true"}
                ]}
            ]
        });
        let doc = Doc::new(&r);
        let values = |path: &str, reads: &mut Vec<_>| -> Vec<Value> {
            let path = Path::parse(path).unwrap();
            doc.eval(&path, doc.root_node(), reads)
                .into_iter()
                .map(|n| n.value.clone())
                .collect()
        };
        let mut reads = Vec::new();
        assert_eq!(
            values(
                "contained.ofType(ServiceRequest).where(status in 'draft' | 'active').code.text",
                &mut reads
            ),
            [json!("B")]
        );
        let read: Vec<String> = reads
            .iter()
            .filter_map(|r| match r {
                Read::Whole(n) => Some(doc.pointer(*n)),
                Read::Inside(_) => None,
            })
            .collect();
        assert_eq!(read, ["/contained/1/status"]);
        let mut reads = Vec::new();
        // A parenthesised list, and `=` with one value.
        assert_eq!(
            values("contained.where(status in ('revoked')).id", &mut reads),
            [json!("a")]
        );
        assert_eq!(
            values("contained.where(id = 'b').status", &mut reads),
            [json!("active")]
        );
        // A boolean is not the string 'true'.
        assert_eq!(
            values(
                "contained.communication.where(preferred = true).language",
                &mut reads
            ),
            [json!("pl")]
        );
        assert_eq!(
            values(
                "contained.communication.where(preferred = 'true').language",
                &mut reads
            ),
            [json!("de")]
        );
        assert!(values("contained.where(status = 'unknown')", &mut reads).is_empty());

        for bad in [
            "a.where(b != 'x')",
            "a.where(%resource.b = 'x')",
            "a.where(b = x)",
            "a.where(b = 'x' | 'y')",
            "a.where(b in )",
            "a.where( = 'x')",
            "a.where(b = 'x'",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_contained_references_and_records_what_it_used() {
        let r = json!({
            "resourceType": "Appointment",
            "contained": [{"resourceType": "Location", "id": "loc", "name": "Suite 4"}],
            "participant": [{"actor": {"display": "Dr Who"}}, {"actor": {"reference": "#loc"}}]
        });
        let doc = Doc::new(&r);
        let mut reads = Vec::new();
        let path = Path::parse("participant.actor.resolve().ofType(Location).name").unwrap();
        let nodes = doc.eval(&path, doc.root_node(), &mut reads);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].value, "Suite 4");
        assert_eq!(doc.pointer(nodes[0]), "/contained/0/name");
        assert_eq!(
            doc.expression(nodes[0], "Appointment"),
            "Appointment.contained[0].name"
        );
        let read: Vec<String> = reads
            .iter()
            .map(|r| match r {
                Read::Whole(n) => doc.pointer(*n),
                Read::Inside(n) => format!("inside {}", doc.pointer(*n)),
            })
            .collect();
        assert_eq!(
            read,
            [
                "/participant/1/actor/reference",
                "/contained/0/resourceType",
                "/contained/0/id"
            ]
        );
    }

    /// Rules revisit the same elements (every item resolves `%resource.contained`); the
    /// document keeps one location per element, not one per visit.
    #[test]
    fn revisiting_elements_does_not_grow_the_locations() {
        let contained: Vec<Value> = (0..50)
            .map(|i| json!({"resourceType": "Task", "id": format!("t{i}")}))
            .collect();
        let r = json!({"resourceType": "Communication", "contained": contained});
        let doc = Doc::new(&r);
        let path = Path::parse("%resource.contained.ofType(Task)").unwrap();
        let mut reads = Vec::new();
        for _ in 0..100 {
            assert_eq!(doc.eval(&path, doc.root_node(), &mut reads).len(), 50);
        }
        assert_eq!(
            doc.locations.borrow().len(),
            51,
            "the list and its 50 entries"
        );
        let fifth = doc.eval(&path, doc.root_node(), &mut reads)[4];
        assert_eq!(doc.pointer(fifth), "/contained/4");
    }

    #[test]
    fn pointers_become_fhirpath_expressions() {
        assert_eq!(
            pointer_to_expression("Communication", "/contained/2/note/0"),
            "Communication.contained[2].note[0]"
        );
        // Keys that need escaping, or are all digits, render as the walk renders them.
        let r = json!({"a/b": {"~": {"7": 1}}});
        let doc = Doc::new(&r);
        let node = ["a/b", "~", "7"]
            .iter()
            .try_fold(doc.root_node(), |n, k| doc.get(n, k))
            .unwrap();
        assert_eq!(doc.pointer(node), "/a~1b/~0/7");
        assert_eq!(doc.expression(node, "X"), "X.a/b.~[7]");
        assert_eq!(pointer_to_expression("X", &doc.pointer(node)), "X.a/b.~[7]");
    }
}
