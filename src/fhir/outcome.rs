//! OperationOutcome issues, the one way Hearth reports a problem to a FHIR client.

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

/// `http://hl7.org/fhir/issue-type` codes Hearth uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Forbidden,
    Processing,
    NotSupported,
    NotFound,
    Duplicate,
    Conflict,
    TooLong,
    BusinessRule,
    Exception,
    Informational,
}

/// One issue: what is wrong (or of note), and where (`expression`, FHIRPath).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub diagnostics: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

impl Issue {
    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    /// An element that was not forwarded because no mapping names it.
    pub fn dropped(path: &str) -> Self {
        Self {
            severity: Severity::Information,
            code: IssueCode::Informational,
            diagnostics: "not part of the integration dataset; dropped".into(),
            expression: vec![path.to_string()],
        }
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self {
            severity: Severity::Information,
            code: IssueCode::Informational,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }
}

/// Renders an OperationOutcome. The reference ID is both the resource id and the last
/// issue, so a person reading the response can quote it.
pub fn operation_outcome(reference_id: &str, issues: &[Issue]) -> Value {
    let mut list: Vec<Value> = issues.iter().map(|i| json!(i)).collect();
    list.push(json!({
        "severity": "information",
        "code": "informational",
        "diagnostics": format!("reference ID {reference_id}"),
    }));
    json!({
        "resourceType": "OperationOutcome",
        "id": reference_id,
        "issue": list,
    })
}
