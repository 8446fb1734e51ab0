//! FHIR R4 wire format: OperationOutcome, profile validation, the CapabilityStatement.
//!
//! Invariant: `fhir` knows the shape of FHIR JSON, not what Hearth does with it; it holds
//! no state beyond the compiled profiles.

pub mod bundle;
pub mod capability;
pub mod outcome;
pub mod profiles;

pub use outcome::{Issue, IssueCode, Severity};
pub use profiles::Profiles;

use serde_json::Value;

/// The FHIR JSON media type; `application/json` is accepted as well.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Hearth's own namespace for code systems and identifiers it issues.
pub const HEARTH_BASE: &str = "https://hearth.example/fhir";

/// The identifier system of Hearth reference IDs.
pub const REFERENCE_ID_SYSTEM: &str = "https://hearth.example/fhir/reference-id";

/// The `resourceType` of a JSON value, if it has one.
pub fn resource_type(v: &Value) -> Option<&str> {
    v.get("resourceType").and_then(Value::as_str)
}
