//! Hearth's profiles: the JSON Schemas in `profiles/`, compiled once at start-up.
//!
//! A resource is checked against the profile of its `resourceType`; each `contained`
//! resource against its own type's profile (or `Resource` for types no mapping reads).
//! Dispatching by type replaces the R4 schema's 146-way `oneOf`, which is slow and gives
//! useless errors.

use std::collections::HashMap;
use std::path::Path;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::{Issue, IssueCode};
use crate::mapping::path::pointer_to_expression;

const ID_BASE: &str = "https://hearth.example/profiles/";

/// Compiled validators, one per resource type.
pub struct Profiles {
    by_type: HashMap<String, jsonschema::Validator>,
}

impl std::fmt::Debug for Profiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<_> = self.by_type.keys().collect();
        types.sort();
        f.debug_struct("Profiles").field("types", &types).finish()
    }
}

impl Profiles {
    /// Reads and compiles every `*.schema.json` in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut schemas = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(ty) = name.strip_suffix(".schema.json") else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let schema: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            let id = schema
                .get("$id")
                .and_then(Value::as_str)
                .with_context(|| format!("{} has no $id", path.display()))?
                .to_string();
            anyhow::ensure!(
                id == format!("{ID_BASE}{ty}"),
                "{}: $id must be {ID_BASE}{ty}",
                path.display()
            );
            schemas.push((ty.to_string(), id, schema));
        }
        let registry = jsonschema::Registry::new()
            .extend(schemas.iter().map(|(_, id, s)| (id.clone(), s.clone())))?
            .prepare()?;
        let mut by_type = HashMap::new();
        for (ty, id, _) in &schemas {
            if ty == "datatypes" {
                continue;
            }
            let validator = jsonschema::options()
                .with_registry(&registry)
                .build(&serde_json::json!({ "$ref": id }))
                .with_context(|| format!("compiling profile {ty}"))?;
            by_type.insert(ty.clone(), validator);
        }
        for required in ["Communication", "CarePlan", "Consent", "Bundle", "Resource"] {
            anyhow::ensure!(
                by_type.contains_key(required),
                "profiles/{required}.schema.json is missing"
            );
        }
        Ok(Self { by_type })
    }

    /// Whether Hearth has a profile for this type (other than the `Resource` fallback).
    pub fn knows(&self, resource_type: &str) -> bool {
        resource_type != "Resource" && self.by_type.contains_key(resource_type)
    }

    /// Every problem with `resource` as an error issue with an `expression`.
    /// `Bundle.entry.resource` is not descended into: each entry is validated on its own.
    pub fn validate(&self, resource: &Value) -> Vec<Issue> {
        let Some(ty) = super::resource_type(resource) else {
            return vec![
                Issue::error(IssueCode::Required, "resourceType is missing").at("resourceType"),
            ];
        };
        let mut issues = Vec::new();
        self.check(ty, ty, "", resource, &mut issues);
        if let Some(contained) = resource.get("contained").and_then(Value::as_array) {
            for (i, c) in contained.iter().enumerate() {
                let cty = super::resource_type(c).unwrap_or("Resource");
                let profile = if self.knows(cty) { cty } else { "Resource" };
                self.check(profile, ty, &format!("/contained/{i}"), c, &mut issues);
            }
        }
        issues
    }

    fn check(
        &self,
        profile: &str,
        root_type: &str,
        prefix: &str,
        value: &Value,
        issues: &mut Vec<Issue>,
    ) {
        let Some(validator) = self.by_type.get(profile) else {
            issues.push(
                Issue::error(
                    IssueCode::NotSupported,
                    format!("Hearth does not accept {profile} resources"),
                )
                .at(pointer_to_expression(root_type, prefix)),
            );
            return;
        };
        // Almost every resource is valid: the short-circuiting check is several times
        // cheaper than collecting (no) errors.
        if validator.is_valid(value) {
            return;
        }
        for error in validator.iter_errors(value) {
            let mut ptr = format!("{prefix}{}", error.instance_path().as_str());
            let code = match error.kind() {
                ValidationErrorKind::Required { property } => {
                    if let Some(p) = property.as_str() {
                        ptr.push('/');
                        ptr.push_str(p);
                    }
                    IssueCode::Required
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    if let [one] = unexpected.as_slice() {
                        ptr.push('/');
                        ptr.push_str(one);
                    }
                    IssueCode::Structure
                }
                ValidationErrorKind::Type { .. } => IssueCode::Structure,
                _ => IssueCode::Value,
            };
            // Masked: the schema's own message quotes the offending value, which may be
            // a date of birth or a note's text; the expression says where it is.
            issues.push(
                Issue::error(code, error.masked().to_string())
                    .at(pointer_to_expression(root_type, &ptr)),
            );
        }
    }
}
