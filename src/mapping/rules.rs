//! Mapping files, parsed: value sets, sensitivity rules and one item file per dataset item.
//! See `mappings/README.md` for the format.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path as FsPath;

use serde_json::Value;

use super::path::Path;
use crate::dataset::ItemKind;

/// A mapping file could not be read or does not make sense. Reported at start-up.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct MappingError {
    pub file: String,
    pub message: String,
}

fn err(file: &str, message: impl Into<String>) -> MappingError {
    MappingError {
        file: file.to_string(),
        message: message.into(),
    }
}

/// Named sets of `system|code`.
///
/// Set name → system → codes: a lookup allocates nothing (it runs for every Coding an
/// item carries, against every sensitivity set). Hashed with foldhash rather than
/// SipHash, which showed in translation's profile: the keys come from the mapping
/// files and lookups never insert, so there is no flooding to defend against.
#[derive(Debug, Default)]
pub struct ValueSets(FastMap<String, FastMap<String, HashSet<String, FastHash>>>);

type FastHash = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, FastHash>;

impl ValueSets {
    pub fn contains(&self, set: &str, system: &str, code: &str) -> bool {
        self.0
            .get(set)
            .and_then(|systems| systems.get(system))
            .is_some_and(|codes| codes.contains(code))
    }

    pub fn has(&self, set: &str) -> bool {
        self.0.contains_key(set)
    }

    fn parse(file: &str, text: &str) -> Result<Self, MappingError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| err(file, e.to_string()))?;
        let sets = table
            .get("valueset")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| err(file, "expected [valueset.NAME] tables"))?;
        let mut direct: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (name, def) in sets {
            let def = def
                .as_table()
                .ok_or_else(|| err(file, format!("valueset `{name}` must be a table")))?;
            let mut codes = Vec::new();
            let mut include = Vec::new();
            for (key, value) in def {
                let list = strings(value).ok_or_else(|| {
                    err(
                        file,
                        format!("valueset `{name}`: `{key}` must be a list of strings"),
                    )
                })?;
                match key.as_str() {
                    "codes" => {
                        for code in &list {
                            if code
                                .split_once('|')
                                .is_none_or(|(s, c)| s.is_empty() || c.is_empty())
                            {
                                return Err(err(
                                    file,
                                    format!("valueset `{name}`: `{code}` is not system|code"),
                                ));
                            }
                        }
                        codes = list;
                    }
                    "include" => include = list,
                    other => {
                        return Err(err(
                            file,
                            format!("valueset `{name}`: unknown key `{other}`"),
                        ));
                    }
                }
            }
            direct.insert(name.clone(), (codes, include));
        }
        let mut out = FastMap::default();
        for name in direct.keys() {
            let mut codes: FastMap<String, HashSet<String, FastHash>> = FastMap::default();
            let mut stack = vec![name.clone()];
            let mut seen = HashSet::new();
            while let Some(n) = stack.pop() {
                if !seen.insert(n.clone()) {
                    continue;
                }
                let (c, inc) = direct.get(&n).ok_or_else(|| {
                    err(file, format!("valueset `{name}` includes unknown `{n}`"))
                })?;
                for entry in c {
                    // Checked above: every entry is `system|code`.
                    if let Some((system, code)) = entry.split_once('|') {
                        codes
                            .entry(system.to_string())
                            .or_default()
                            .insert(code.to_string());
                    }
                }
                stack.extend(inc.iter().cloned());
            }
            out.insert(name.clone(), codes);
        }
        Ok(Self(out))
    }
}

fn strings(v: &toml::Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Converts a TOML value to JSON (mapping outputs are plain strings, booleans, numbers).
fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// What a path rule does with the nodes its path yields.
#[derive(Debug)]
pub enum Op {
    /// The first primitive value.
    First,
    /// The first primitive value, translated through the table.
    Map(BTreeMap<String, Value>),
    /// The output whose value set holds a Coding at the path.
    Classify(Vec<(Value, String)>),
    /// `value` when a Coding at the path is in the set.
    In { set: String, value: Value },
    /// `value` when the path yields anything.
    Exists(Value),
    /// `value` when the path yields nothing (a fallback only when nothing is marked).
    Absent(Value),
}

/// One rule: read something from the resource, or a constant.
#[derive(Debug)]
pub enum Rule {
    Path {
        path: Path,
        op: Op,
        /// Rules that must all hold on the same node for this one to apply (`when`): a
        /// finished encounter is dated by its end, never by its start.
        when: Vec<Rule>,
    },
    Const(Value),
}

/// How one dataset field is filled.
#[derive(Debug)]
pub enum FieldRule {
    /// The first rule that yields.
    FirstOf(Vec<Rule>),
    /// A list with one entry per node: the entries of each block in turn (a plan's
    /// follow-ups described inline, then those it refers to).
    Each(Vec<EachBlock>),
}

/// One source of a list field's entries.
#[derive(Debug)]
pub struct EachBlock {
    pub each: Path,
    /// Every rule must hold on an entry for it to count.
    pub filter: Vec<Rule>,
    pub fields: Vec<(String, FieldRule)>,
}

impl FieldRule {
    /// The first path this rule reads, to point a sender at a missing element.
    pub fn first_path(&self) -> Option<&Path> {
        match self {
            FieldRule::FirstOf(rules) => rules.iter().find_map(|r| match r {
                Rule::Path { path, .. } => Some(path),
                Rule::Const(_) => None,
            }),
            FieldRule::Each(blocks) => blocks.first().map(|b| &b.each),
        }
    }
}

/// One inbound shape that produces items of a kind.
#[derive(Debug)]
pub struct Source {
    pub file: String,
    pub kind: ItemKind,
    pub resource: String,
    pub when: Option<Rule>,
    pub each: Option<Path>,
    /// Every rule must hold on a node for it to make an item.
    pub filter: Vec<Rule>,
    pub fields: Vec<(String, FieldRule)>,
}

/// Labels from codes in a value set, or from an item's own value.
#[derive(Debug, Default)]
pub struct Sensitivity {
    pub by_codes: Vec<(String, Vec<String>)>,
    pub by_item: Vec<(ItemKind, String, Value, Vec<String>)>,
    /// Plain-word restrictions and the labels each withholds.
    pub restrictions: BTreeMap<String, Vec<String>>,
    /// Narrow labels and the broader ones each belongs to (OPIOIDUD → SUD, ETH).
    pub implies: crate::consent::LabelHierarchy,
    /// Words and phrases that make text carry labels (`[[words]]`).
    pub by_words: Words,
}

/// `[[words]]`: every listed phrase, found in one pass over a text (Aho-Corasick), and
/// the labels of the rule each came from.
#[derive(Debug, Default)]
pub struct Words {
    finder: Option<aho_corasick::AhoCorasick>,
    /// Indexed by pattern id: the labels that phrase gives.
    labels: Vec<Vec<String>>,
}

impl Words {
    /// From (phrases, labels) rules; phrases already normalised ([`normalise_words`]).
    fn new(rules: Vec<(Vec<String>, Vec<String>)>) -> Result<Self, String> {
        let mut phrases = Vec::new();
        let mut labels = Vec::new();
        for (words, rule_labels) in rules {
            for w in words {
                phrases.push(w);
                labels.push(rule_labels.clone());
            }
        }
        if phrases.is_empty() {
            return Ok(Self::default());
        }
        let finder = aho_corasick::AhoCorasick::new(&phrases).map_err(|e| e.to_string())?;
        Ok(Self {
            finder: Some(finder),
            labels,
        })
    }

    /// The labels of every phrase `text` uses.
    fn found_in(&self, text: &str) -> impl Iterator<Item = &String> {
        let normal = normalise_words(text);
        let mut found: Vec<usize> = self
            .finder
            .iter()
            .flat_map(|f| f.find_overlapping_iter(&normal))
            .map(|m| m.pattern().as_usize())
            .collect();
        found.sort_unstable();
        found.dedup();
        found.into_iter().flat_map(|p| self.labels[p].iter())
    }

    fn names_label(&self, code: &str) -> bool {
        self.labels.iter().flatten().any(|x| x == code)
    }
}

/// Text as lowercase words separated by single spaces, padded with a space at each end,
/// so a phrase matches only whole words: " methadone " is not found in "methadones".
pub fn normalise_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.extend(word.chars().flat_map(char::to_lowercase));
        out.push(' ');
    }
    out
}

impl Sensitivity {
    /// `labels` with every label they imply, transitively: an item a sender labelled
    /// OPIOIDUD is substance-use information to a restriction written as SUD.
    pub fn widen(&self, labels: &mut BTreeSet<String>) {
        crate::consent::widen(labels, &self.implies);
    }

    /// The labels free text carries by the words it uses (`[[words]]`), widened.
    pub fn text_labels(&self, text: &str) -> BTreeSet<String> {
        let mut labels: BTreeSet<String> = self.by_words.found_in(text).cloned().collect();
        self.widen(&mut labels);
        labels
    }

    /// Whether any rule or restriction names this label.
    pub fn names_label(&self, code: &str) -> bool {
        self.by_codes
            .iter()
            .any(|(_, l)| l.iter().any(|x| x == code))
            || self.by_words.names_label(code)
            || self
                .by_item
                .iter()
                .any(|(_, _, _, l)| l.iter().any(|x| x == code))
            || self
                .restrictions
                .values()
                .any(|l| l.iter().any(|x| x == code))
            // Both ends of `[implies]`: an item with the narrow label carries the broad one.
            || self.implies.contains_key(code)
            || self.implies.values().flatten().any(|x| x == code)
    }
}

struct Ctx<'a> {
    file: &'a str,
    sets: &'a ValueSets,
}

impl Ctx<'_> {
    fn path(&self, v: &toml::Value, what: &str) -> Result<Path, MappingError> {
        let s = v
            .as_str()
            .ok_or_else(|| err(self.file, format!("{what}: a path must be a string")))?;
        Path::parse(s).map_err(|m| err(self.file, format!("{what}: {m}")))
    }

    fn set(&self, v: &toml::Value, what: &str) -> Result<String, MappingError> {
        let name = v.as_str().ok_or_else(|| {
            err(
                self.file,
                format!("{what}: a value set name must be a string"),
            )
        })?;
        if !self.sets.has(name) {
            return Err(err(
                self.file,
                format!("{what}: no value set named `{name}` in valuesets.toml"),
            ));
        }
        Ok(name.to_string())
    }

    fn rule(&self, v: &toml::Value, what: &str) -> Result<Rule, MappingError> {
        let t = v
            .as_table()
            .ok_or_else(|| err(self.file, format!("{what}: a rule must be an inline table")))?;
        if let Some(c) = t.get("const") {
            if t.len() != 1 {
                return Err(err(self.file, format!("{what}: `const` stands alone")));
            }
            return Ok(Rule::Const(to_json(c)));
        }
        let path = self.path(
            t.get("path")
                .ok_or_else(|| err(self.file, format!("{what}: a rule needs `path` or `const`")))?,
            what,
        )?;
        let value = t.get("value").map(to_json);
        let when = self.filter(t.get("when"), what)?;
        let mut ops = t
            .keys()
            .filter(|k| !matches!(k.as_str(), "path" | "value" | "when"));
        let op = match ops.next().map(String::as_str) {
            None => Op::First,
            Some("map") => Op::Map(
                t["map"]
                    .as_table()
                    .ok_or_else(|| err(self.file, format!("{what}: `map` must be a table")))?
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            ),
            Some("classify") => Op::Classify(
                t["classify"]
                    .as_table()
                    .ok_or_else(|| err(self.file, format!("{what}: `classify` must be a table")))?
                    .iter()
                    .map(|(out, set)| Ok((Value::String(out.clone()), self.set(set, what)?)))
                    .collect::<Result<_, MappingError>>()?,
            ),
            Some("in") => Op::In {
                set: self.set(&t["in"], what)?,
                value: value.clone().unwrap_or(Value::Bool(true)),
            },
            Some("exists") => Op::Exists(to_json(&t["exists"])),
            Some("absent") => Op::Absent(to_json(&t["absent"])),
            Some(other) => {
                return Err(err(
                    self.file,
                    format!("{what}: unknown rule key `{other}`"),
                ));
            }
        };
        if let Some(extra) = ops.next() {
            return Err(err(
                self.file,
                format!("{what}: `{extra}` cannot be combined with another operation"),
            ));
        }
        if value.is_some() && !matches!(op, Op::In { .. }) {
            return Err(err(
                self.file,
                format!("{what}: `value` only goes with `in`"),
            ));
        }
        Ok(Rule::Path { path, op, when })
    }

    /// A `filter`: one rule, or a list of rules that must all hold.
    fn filter(&self, v: Option<&toml::Value>, what: &str) -> Result<Vec<Rule>, MappingError> {
        match v {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(list)) => list.iter().map(|r| self.rule(r, what)).collect(),
            Some(one) => Ok(vec![self.rule(one, what)?]),
        }
    }

    fn field_rule(
        &self,
        v: &toml::Value,
        allowed: &[&str],
        what: &str,
    ) -> Result<FieldRule, MappingError> {
        let is_each = |v: &toml::Value| v.as_table().is_some_and(|t| t.contains_key("each"));
        match v {
            toml::Value::Table(t) if t.contains_key("each") => {
                Ok(FieldRule::Each(vec![self.each_block(t, allowed, what)?]))
            }
            // A list field may take several `each` blocks: their entries, in order.
            toml::Value::Array(list) if list.iter().any(is_each) => Ok(FieldRule::Each(
                list.iter()
                    .map(|b| match b.as_table() {
                        Some(t) if t.contains_key("each") => self.each_block(t, allowed, what),
                        _ => Err(err(
                            self.file,
                            format!("{what}: a list of `each` blocks takes only `each` blocks"),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            )),
            toml::Value::Array(list) => Ok(FieldRule::FirstOf(
                list.iter()
                    .map(|r| self.rule(r, what))
                    .collect::<Result<_, _>>()?,
            )),
            other => Ok(FieldRule::FirstOf(vec![self.rule(other, what)?])),
        }
    }

    /// `{ each = "p", filter = …, fields = { … } }`.
    fn each_block(
        &self,
        t: &toml::Table,
        allowed: &[&str],
        what: &str,
    ) -> Result<EachBlock, MappingError> {
        let each = self.path(&t["each"], what)?;
        let filter = self.filter(t.get("filter"), what)?;
        let fields = t
            .get("fields")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| err(self.file, format!("{what}: `each` needs a `fields` table")))?;
        if let Some(k) = t
            .keys()
            .find(|k| !matches!(k.as_str(), "each" | "filter" | "fields"))
        {
            return Err(err(self.file, format!("{what}: unknown key `{k}`")));
        }
        Ok(EachBlock {
            each,
            filter,
            fields: self.fields(fields, allowed, &[], what)?,
        })
    }

    fn fields(
        &self,
        table: &toml::Table,
        allowed: &[&str],
        nested: &[(&str, &[&str])],
        what: &str,
    ) -> Result<Vec<(String, FieldRule)>, MappingError> {
        table
            .iter()
            .map(|(name, v)| {
                let sub = nested.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
                if !allowed.contains(&name.as_str()) {
                    return Err(err(
                        self.file,
                        format!(
                            "{what}: `{name}` is not a field of this dataset item (fields: {})",
                            allowed.join(", ")
                        ),
                    ));
                }
                let rule = self.field_rule(v, sub.unwrap_or(&[]), &format!("{what}.{name}"))?;
                if matches!(rule, FieldRule::Each(_)) != sub.is_some_and(|s| !s.is_empty()) {
                    return Err(err(
                        self.file,
                        format!("{what}.{name}: list fields take `each`, others do not"),
                    ));
                }
                Ok((name.clone(), rule))
            })
            .collect()
    }
}

/// Parses one item file into its sources.
pub fn parse_item_file(
    file: &str,
    text: &str,
    sets: &ValueSets,
) -> Result<Vec<Source>, MappingError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| err(file, e.to_string()))?;
    let kind_name = table
        .get("item")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| err(file, "missing `item = \"…\"`"))?;
    let kind = ItemKind::parse(kind_name).ok_or_else(|| {
        let known: Vec<_> = ItemKind::ALL.iter().map(|k| k.as_str()).collect();
        err(
            file,
            format!("unknown item `{kind_name}` (known: {})", known.join(", ")),
        )
    })?;
    if let Some(k) = table
        .keys()
        .find(|k| !matches!(k.as_str(), "item" | "source"))
    {
        return Err(err(file, format!("unknown key `{k}`")));
    }
    let ctx = Ctx { file, sets };
    let declared = kind.fields();
    let allowed: Vec<&str> = declared.iter().map(|(f, _)| *f).collect();
    let sources = table
        .get("source")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| err(file, "expected at least one [[source]]"))?;
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let what = format!("source {}", i + 1);
            let t = s
                .as_table()
                .ok_or_else(|| err(file, format!("{what} must be a table")))?;
            if let Some(k) = t.keys().find(|k| {
                !matches!(
                    k.as_str(),
                    "resource" | "when" | "each" | "filter" | "fields"
                )
            }) {
                return Err(err(file, format!("{what}: unknown key `{k}`")));
            }
            let resource = t
                .get("resource")
                .and_then(toml::Value::as_str)
                .ok_or_else(|| err(file, format!("{what}: missing `resource`")))?
                .to_string();
            let fields = t
                .get("fields")
                .and_then(toml::Value::as_table)
                .ok_or_else(|| err(file, format!("{what}: missing [source.fields]")))?;
            Ok(Source {
                file: file.to_string(),
                kind,
                resource,
                when: t.get("when").map(|w| ctx.rule(w, &what)).transpose()?,
                each: t.get("each").map(|e| ctx.path(e, &what)).transpose()?,
                filter: ctx.filter(t.get("filter"), &what)?,
                fields: ctx.fields(fields, &allowed, declared, &what)?,
            })
        })
        .collect()
}

pub fn parse_sensitivity(
    file: &str,
    text: &str,
    sets: &ValueSets,
) -> Result<Sensitivity, MappingError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CodeRule {
        valueset: String,
        labels: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ItemRule {
        item: String,
        field: String,
        equals: toml::Value,
        labels: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WordRule {
        words: Vec<String>,
        labels: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        codes: Vec<CodeRule>,
        #[serde(default)]
        words: Vec<WordRule>,
        #[serde(default)]
        items: Vec<ItemRule>,
        #[serde(default)]
        restrictions: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        implies: BTreeMap<String, Vec<String>>,
    }
    let f: File = toml::from_str(text).map_err(|e| err(file, e.to_string()))?;
    let mut out = Sensitivity {
        restrictions: f.restrictions,
        implies: f.implies,
        ..Sensitivity::default()
    };
    for r in f.codes {
        if !sets.has(&r.valueset) {
            return Err(err(file, format!("no value set named `{}`", r.valueset)));
        }
        out.by_codes.push((r.valueset, r.labels));
    }
    let mut word_rules = Vec::new();
    for r in f.words {
        let mut words = Vec::new();
        for w in &r.words {
            let normal = normalise_words(w);
            // A blank entry would match every text.
            if normal.trim().is_empty() {
                return Err(err(
                    file,
                    format!("`{w}` in [[words]] has no letters or digits"),
                ));
            }
            words.push(normal);
        }
        if r.labels.is_empty() {
            return Err(err(file, "a [[words]] rule names no labels".to_string()));
        }
        word_rules.push((words, r.labels));
    }
    out.by_words = Words::new(word_rules).map_err(|e| err(file, format!("[[words]]: {e}")))?;
    for r in f.items {
        let kind = ItemKind::parse(&r.item)
            .ok_or_else(|| err(file, format!("unknown item `{}`", r.item)))?;
        // A misspelt field would never match, and the label it should add would
        // silently never be added.
        if !kind.fields().iter().any(|(f, _)| *f == r.field) {
            return Err(err(
                file,
                format!("`{}` has no field `{}`", r.item, r.field),
            ));
        }
        out.by_item
            .push((kind, r.field, to_json(&r.equals), r.labels));
    }
    Ok(out)
}

/// Reads `valuesets.toml`, `sensitivity.toml` and every other `*.toml` in `dir`.
pub fn load_dir(dir: &FsPath) -> Result<(ValueSets, Sensitivity, Vec<Source>), MappingError> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| err(&dir.join(name).display().to_string(), e.to_string()))
    };
    let sets = ValueSets::parse("valuesets.toml", &read("valuesets.toml")?)?;
    let sensitivity = parse_sensitivity("sensitivity.toml", &read("sensitivity.toml")?, &sets)?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| err(&dir.display().to_string(), e.to_string()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml") && n != "valuesets.toml" && n != "sensitivity.toml")
        .collect();
    names.sort();
    let mut sources = Vec::new();
    for name in names {
        sources.extend(parse_item_file(&name, &read(&name)?, &sets)?);
    }
    if sources.is_empty() {
        return Err(err(
            &dir.display().to_string(),
            "no item mapping files found",
        ));
    }
    Ok((sets, sensitivity, sources))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label that only widening puts on data is still one a consent can restrict.
    #[test]
    fn a_label_reached_only_through_implies_is_named() {
        let sensitivity = Sensitivity {
            implies: [("PSYTHPN".to_string(), vec!["MH".to_string()])].into(),
            ..Default::default()
        };
        assert!(sensitivity.names_label("MH") && sensitivity.names_label("PSYTHPN"));
        assert!(!sensitivity.names_label("GDIS"));
    }

    /// A list field given a list of `each` blocks takes the entries of each in turn; a
    /// plain rule among them is a start-up error, not a block silently ignored.
    #[test]
    fn a_list_field_takes_several_each_blocks_and_nothing_else() {
        let file = |follow_up: &str| {
            format!(
                "item = \"discharge\"\n[[source]]\nresource = \"CarePlan\"\n[source.fields]\nstatus = {{ const = \"planned\" }}\nfollow_up = {follow_up}\n"
            )
        };
        let sets = ValueSets::default();
        let one = r#"{ each = "a", fields = { action = { path = "x" } } }"#;
        let two = format!(r#"[{one}, {{ each = "b", fields = {{ action = {{ path = "y" }} }} }}]"#);
        let sources = parse_item_file("d.toml", &file(&two), &sets).unwrap();
        let follow_up = sources[0].fields.iter().find(|(n, _)| n == "follow_up");
        assert!(
            matches!(follow_up, Some((_, FieldRule::Each(blocks))) if blocks.len() == 2),
            "{follow_up:?}"
        );
        assert!(parse_item_file("d.toml", &file(one), &sets).is_ok());
        let mixed = format!(r#"[{one}, {{ path = "y" }}]"#);
        let e = parse_item_file("d.toml", &file(&mixed), &sets).unwrap_err();
        assert!(e.message.contains("only `each` blocks"), "{e}");
    }

    /// A misspelt field in an item rule is a start-up error, not a label never added.
    #[test]
    fn an_item_rule_naming_no_field_of_its_item_is_refused() {
        let rule = |field: &str| {
            format!(
                "[[items]]\nitem = \"risk_flag\"\nfield = \"{field}\"\nequals = \"withdrawal-risk\"\nlabels = [\"SUD\"]\n"
            )
        };
        let sets = ValueSets::default();
        assert!(parse_sensitivity("sensitivity.toml", &rule("flag"), &sets).is_ok());
        let e = parse_sensitivity("sensitivity.toml", &rule("flags"), &sets).unwrap_err();
        assert!(e.message.contains("has no field `flags`"), "{e}");
    }

    /// Words match whole words in any case, phrases their words in order across any
    /// punctuation, and carry the labels they imply; a blank word is refused, since it
    /// would match every text.
    #[test]
    fn free_text_carries_the_labels_of_the_words_it_uses() {
        let sets = ValueSets::default();
        let file = "[[words]]\nlabels = [\"OPIOIDUD\"]\nwords = [\"methadone\", \"drug use\"]\n[implies]\nOPIOIDUD = [\"SUD\"]\n";
        let s = parse_sensitivity("sensitivity.toml", file, &sets).unwrap();
        let labels = |t: &str| s.text_labels(t).into_iter().collect::<Vec<_>>();
        assert_eq!(labels("Her METHADONE dose changed."), ["OPIOIDUD", "SUD"]);
        assert_eq!(
            labels("history of drug-use, now stable"),
            ["OPIOIDUD", "SUD"]
        );
        assert!(labels("methadones; drug user; use of drugs").is_empty());
        let blank = "[[words]]\nlabels = [\"SUD\"]\nwords = [\" - \"]\n";
        let e = parse_sensitivity("sensitivity.toml", blank, &sets).unwrap_err();
        assert!(e.message.contains("no letters or digits"), "{e}");
    }
}
