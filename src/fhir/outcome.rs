//! OperationOutcome issues, the one way Hearth reports a problem to a FHIR client.

use serde::Serialize;
use serde_json::Value;

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
    MultipleMatches,
    Conflict,
    TooLong,
    Timeout,
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
    serde_json::to_value(OperationOutcome {
        reference_id,
        issues,
    })
    .expect("an OperationOutcome has only string keys, so it always serialises")
}

/// An OperationOutcome that serialises straight from its issues (no intermediate JSON
/// tree): the receipt of every inbound notice is one, with an issue per dropped path.
#[derive(Debug, Clone, Copy)]
pub struct OperationOutcome<'a> {
    pub reference_id: &'a str,
    pub issues: &'a [Issue],
}

impl Serialize for OperationOutcome<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Issues<'a>(&'a OperationOutcome<'a>);
        impl Serialize for Issues<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.issues.len() + 1))?;
                for issue in self.0.issues {
                    seq.serialize_element(issue)?;
                }
                seq.serialize_element(&Issue::information(format!(
                    "reference ID {}",
                    self.0.reference_id
                )))?;
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("resourceType", "OperationOutcome")?;
        map.serialize_entry("id", self.reference_id)?;
        map.serialize_entry("issue", &Issues(self))?;
        map.end()
    }
}
