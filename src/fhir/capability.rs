//! The CapabilityStatement, built from the same table the router is built from, so it
//! cannot claim an interaction Hearth does not serve (or hide one it does).

use serde_json::{Value, json};

/// One resource type Hearth serves under `/fhir` and what can be done with it.
#[derive(Debug, Clone, Copy)]
pub struct ResourceSupport {
    pub resource: &'static str,
    /// FHIR `TypeRestfulInteraction` codes: `create`, `read`, `search-type`, …
    pub interactions: &'static [&'static str],
    /// Search parameters, when `search-type` is supported: (name, type).
    pub search: &'static [(&'static str, &'static str)],
    /// Hearth's profile for the type (served under `profiles/`).
    pub profile: &'static str,
    /// Whether `If-None-Exist` is honoured on create.
    pub conditional_create: bool,
}

/// The CapabilityStatement for the given resources and system interactions.
pub fn capability_statement(
    resources: &[ResourceSupport],
    system_interactions: &[&str],
    software_version: &str,
    date: &str,
) -> Value {
    let resource: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut v = json!({
                "type": r.resource,
                "profile": r.profile,
                "interaction": r.interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned",
                "readHistory": r.interactions.contains(&"vread"),
                "updateCreate": false,
                // If-None-Exist is honoured for notices, the resources retries matter for.
                "conditionalCreate": r.conditional_create,
            });
            if !r.search.is_empty() {
                v["searchParam"] = r
                    .search
                    .iter()
                    .map(|(name, ty)| json!({"name": name, "type": ty}))
                    .collect();
            }
            v
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "Hearth", "version": software_version},
        "implementation": {"description": "Hearth housing–health gateway: minimum-necessary exchange under tenant consent"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "description": "Bearer token per principal (Authorization: Bearer …); each principal has an organisation and a role",
            },
            "resource": resource,
            "interaction": system_interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
        }],
    })
}
