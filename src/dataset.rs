//! The integration dataset: the only data that ever reaches housing.
//!
//! Six item kinds, exactly those the operating model names. Each struct rejects unknown
//! fields, so a mapping file cannot smuggle anything else through: if it is not a field
//! here, it does not leave Hearth. Statuses, contact systems and language tags are
//! [`Code`]s, so no rule can carry prose through them either.
//!
//! Invariant: this module knows nothing of FHIR, HTTP or storage.

use serde::{Deserialize, Serialize};

use crate::ids::{PartnerId, ReferenceId};

/// The longest free text an item carries (a medication's instruction, a follow-up's
/// action, a place), in characters: the bound a housing worker's note text has too. The
/// dataset is short by design; anything longer is narrative, not an item.
pub const MAX_TEXT: usize = 1000;

/// One item of the integration dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum DatasetItem {
    CareContact(CareContact),
    NextAppointment(NextAppointment),
    MedicationChange(MedicationChange),
    Discharge(Discharge),
    RiskFlag(RiskFlag),
    AccommodationNeed(AccommodationNeed),
}

/// The six kinds, by the name mapping files use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    CareContact,
    NextAppointment,
    MedicationChange,
    Discharge,
    RiskFlag,
    AccommodationNeed,
}

impl ItemKind {
    pub const ALL: [ItemKind; 6] = [
        ItemKind::CareContact,
        ItemKind::NextAppointment,
        ItemKind::MedicationChange,
        ItemKind::Discharge,
        ItemKind::RiskFlag,
        ItemKind::AccommodationNeed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::CareContact => "care_contact",
            ItemKind::NextAppointment => "next_appointment",
            ItemKind::MedicationChange => "medication_change",
            ItemKind::Discharge => "discharge",
            ItemKind::RiskFlag => "risk_flag",
            ItemKind::AccommodationNeed => "accommodation_need",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The fields a mapping may fill, and for list fields the fields of each entry.
    pub fn fields(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            ItemKind::CareContact => &[
                ("coordinator", &[]),
                ("organization", &[]),
                ("role", &[]),
                ("routes", &["system", "value", "preferred"]),
            ],
            ItemKind::NextAppointment => &[
                ("start", &[]),
                ("kind", &[]),
                ("place", &[]),
                ("transport_needed", &[]),
                ("status", &[]),
            ],
            ItemKind::MedicationChange => &[
                ("medication", &[]),
                ("change", &[]),
                ("effective", &[]),
                ("instruction", &[]),
            ],
            ItemKind::Discharge => &[
                ("status", &[]),
                ("date", &[]),
                ("facility", &[]),
                ("follow_up", &["action", "due", "owner"]),
            ],
            ItemKind::RiskFlag => &[("flag", &[]), ("status", &[]), ("since", &[])],
            ItemKind::AccommodationNeed => &[
                ("need", &[]),
                ("language", &[]),
                ("interpreter", &[]),
                ("status", &[]),
            ],
        }
    }
}

impl DatasetItem {
    pub fn kind(&self) -> ItemKind {
        match self {
            DatasetItem::CareContact(_) => ItemKind::CareContact,
            DatasetItem::NextAppointment(_) => ItemKind::NextAppointment,
            DatasetItem::MedicationChange(_) => ItemKind::MedicationChange,
            DatasetItem::Discharge(_) => ItemKind::Discharge,
            DatasetItem::RiskFlag(_) => ItemKind::RiskFlag,
            DatasetItem::AccommodationNeed(_) => ItemKind::AccommodationNeed,
        }
    }

    /// Builds an item of `kind` from the fields a mapping produced. Fails on a missing
    /// required field, an unknown field or a value outside the item's vocabulary.
    pub fn from_fields(
        kind: ItemKind,
        fields: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        use serde_json::from_value as f;
        Ok(match kind {
            ItemKind::CareContact => DatasetItem::CareContact(f(fields)?),
            ItemKind::NextAppointment => DatasetItem::NextAppointment(f(fields)?),
            ItemKind::MedicationChange => DatasetItem::MedicationChange(f(fields)?),
            ItemKind::Discharge => DatasetItem::Discharge(f(fields)?),
            ItemKind::RiskFlag => DatasetItem::RiskFlag(f(fields)?),
            ItemKind::AccommodationNeed => DatasetItem::AccommodationNeed(f(fields)?),
        })
    }
}

/// 1. A named care coordinator and how to reach them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareContact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub routes: Vec<ContactRoute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRoute {
    /// FHIR ContactPoint system: phone, email, sms, …
    pub system: Code,
    pub value: String,
    #[serde(default)]
    pub preferred: bool,
}

/// 2. The next appointment and whether the tenant needs transport to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextAppointment {
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_needed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Code>,
}

/// 3. A medication change notice — never the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedicationChange {
    pub medication: String,
    pub change: ChangeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<String>,
    /// A short instruction that matters for daily living.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Started,
    Stopped,
    DoseChanged,
}

/// 4. Discharge status and what has to happen next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discharge {
    pub status: Code,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    #[serde(default)]
    pub follow_up: Vec<FollowUp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// 5. A risk flag relevant to the tenancy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskFlag {
    pub flag: RiskFlagKind,
    pub status: Code,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskFlagKind {
    Falls,
    Confusion,
    UnmanagedPain,
    WithdrawalRisk,
}

/// 6. A need that affects how to engage with the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccommodationNeed {
    pub need: NeedKind,
    /// BCP-47 language code, for `need = language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Code>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeedKind {
    Language,
    Hearing,
    Cognitive,
    Other,
}

/// A coded value (a status, a contact system, a language tag): letters, digits and `-`,
/// at most 40 characters. The field names alone do not stop a mapping rule from putting
/// narrative text in a status; this does, so a rule like `status = { path = "note.text" }`
/// makes a problem, not a stored item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Code(String);

impl TryFrom<String> for Code {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "a code is letters, digits and '-', at most 40 characters; not {} characters of text",
                s.chars().count()
            ))
        }
    }
}

impl From<Code> for String {
    fn from(c: Code) -> Self {
        c.0
    }
}

impl Code {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Code {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a stored item came from and what authorised it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub partner: PartnerId,
    pub reference_id: ReferenceId,
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentCitation>,
}

/// The consent (and version) that authorised an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentCitation {
    pub id: String,
    pub version: u32,
}

/// An item as held for a tenant: the item, its labels, where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredItem {
    /// `<reference ID>-<n>`: stable across reads, names the exchange that wrote it.
    pub id: String,
    #[serde(flatten)]
    pub item: DatasetItem,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    pub provenance: Provenance,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_item_rejects_fields_outside_the_dataset() {
        let err = DatasetItem::from_fields(
            ItemKind::MedicationChange,
            json!({"medication": "Metformin", "change": "started", "indication": "diabetes"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `indication`"));
    }

    #[test]
    fn declared_field_lists_match_the_structs() {
        // Every declared field must be accepted; a typo in `fields()` would make a
        // mapping file fail at runtime instead of at start-up.
        let samples = [
            (
                ItemKind::CareContact,
                json!({"coordinator": "a", "organization": "b", "role": "c", "routes": [{"system": "phone", "value": "1", "preferred": true}]}),
            ),
            (
                ItemKind::NextAppointment,
                json!({"start": "2026-12-01", "kind": "a", "place": "b", "transport_needed": true, "status": "booked"}),
            ),
            (
                ItemKind::MedicationChange,
                json!({"medication": "a", "change": "dose-changed", "effective": "2026-11-01", "instruction": "b"}),
            ),
            (
                ItemKind::Discharge,
                json!({"status": "discharged", "date": "2026-11-20", "facility": "a", "follow_up": [{"action": "a", "due": "2026-11-27", "owner": "b"}]}),
            ),
            (
                ItemKind::RiskFlag,
                json!({"flag": "withdrawal-risk", "status": "active", "since": "2026-11-01"}),
            ),
            (
                ItemKind::AccommodationNeed,
                json!({"need": "language", "language": "pl", "interpreter": true, "status": "active"}),
            ),
        ];
        for (kind, fields) in samples {
            let declared: Vec<&str> = kind.fields().iter().map(|(f, _)| *f).collect();
            let given: Vec<&str> = fields
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(declared, given, "{kind:?}");
            let item = DatasetItem::from_fields(kind, fields).unwrap();
            assert_eq!(item.kind(), kind);
        }
    }

    /// Coded fields take codes, not prose: a mapping rule that reads a note into a
    /// status makes a problem instead of an item.
    #[test]
    fn coded_fields_refuse_narrative_text() {
        let flag = |status: &str| {
            DatasetItem::from_fields(
                ItemKind::RiskFlag,
                json!({"flag": "falls", "status": status}),
            )
        };
        assert!(flag("active").is_ok());
        assert!(flag("entered-in-error").is_ok());
        assert!(flag("Fell twice at home; daughter worried about her drinking").is_err());
        assert!(flag("").is_err());
        let route = |system: &str| {
            DatasetItem::from_fields(
                ItemKind::CareContact,
                json!({"routes": [{"system": system, "value": "555-0142"}]}),
            )
        };
        assert!(route("phone").is_ok());
        assert!(route("call after 5pm, not her mobile").is_err());
    }
}
