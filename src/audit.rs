//! The audit trail: one record per transaction, hash-chained so tampering shows.
//!
//! A record says what happened (actor, action, outcome, partner, tenant, consent cited,
//! items written or withheld, dropped paths, payload digest) and never holds a clinical
//! value. Each record's hash covers its sequence number, the previous record's hash and
//! its exact stored bytes, so editing, deleting or reordering any record breaks the chain
//! from that point on.
//!
//! Invariant: pure (hashing and verification over rows given to it); storage lives in
//! `store`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::ConsentCitation;
use crate::ids::{PartnerId, ReferenceId, TenantId};

/// Who made the request, as authenticated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub principal: String,
    pub org: PartnerId,
    pub role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// A partner sent something to Hearth.
    Inbound,
    /// Hearth sent or showed something to a partner or to housing.
    Outbound,
    /// Registry and administration (tenants, consents, audit reads).
    Internal,
}

/// What came of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Accepted,
    Replayed,
    Corrected,
    Retracted,
    Read,
    Refused,
    Invalid,
    Failed,
}

/// A dataset item named in the audit: kind and id, never its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// One audit record, as the caller describes it. The store adds the sequence number
/// and the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub reference_id: ReferenceId,
    /// The enclosing transaction (a Bundle) for an entry processed inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ReferenceId>,
    pub recorded: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// `METHOD /path` (no query string: queries can carry identifiers).
    pub request: String,
    pub action: String,
    pub direction: Direction,
    pub outcome: Outcome,
    /// HTTP status answered.
    pub status: u16,
    /// Machine-readable reason for a refusal or failure; the real one, even when the
    /// caller was told something vaguer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentCitation>,
    /// For replays and corrections: the reference ID of the earlier exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<ReferenceId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items_written: Vec<ItemRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items_withheld: Vec<ItemRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_paths: Vec<String>,
    /// `sha256:<hex>` of the request payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_digest: Option<String>,
    /// How many records a read returned (feed entries, items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The emergency purpose of use, when the exchange was permitted only by break-glass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// The stated reason for a break-glass exchange. Free text, so never part of the
    /// audit record itself: the store keeps it in the review list.
    #[serde(skip)]
    pub break_glass_reason: Option<String>,
}

impl AuditEntry {
    /// An entry with the envelope filled and everything else empty.
    pub fn new(
        reference_id: ReferenceId,
        recorded: String,
        request: String,
        action: &str,
        direction: Direction,
    ) -> Self {
        Self {
            reference_id,
            parent: None,
            recorded,
            actor: None,
            request,
            action: action.to_string(),
            direction,
            outcome: Outcome::Failed,
            status: 500,
            reason: None,
            partner: None,
            tenant: None,
            resource_type: None,
            consent: None,
            related: None,
            items_written: Vec::new(),
            items_withheld: Vec::new(),
            dropped_paths: Vec::new(),
            payload_digest: None,
            count: None,
            break_glass: None,
            break_glass_reason: None,
        }
    }
}

/// The record as a FHIR R4 `AuditEvent`, shaped after IHE BALP: import for a partner's
/// push, export for a disclosure or delivery, a REST event otherwise. Values never enter
/// it — only kinds, ids, paths and digests, as in the record itself.
pub fn to_audit_event(seq: u64, hash: &str, e: &AuditEntry) -> serde_json::Value {
    use serde_json::json;
    const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    let (ty, action) = match (e.direction, e.action.as_str()) {
        (Direction::Inbound, _) => (
            json!({"system": DCM, "code": "110107", "display": "Import"}),
            "C",
        ),
        (
            Direction::Outbound,
            "read" | "read-feed" | "read-tenant" | "search" | "history" | "vread",
        ) => (
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}),
            "R",
        ),
        (Direction::Outbound, _) => (
            json!({"system": DCM, "code": "110106", "display": "Export"}),
            "R",
        ),
        (Direction::Internal, _) => (
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}),
            "E",
        ),
    };
    let outcome = match e.outcome {
        Outcome::Accepted
        | Outcome::Replayed
        | Outcome::Corrected
        | Outcome::Retracted
        | Outcome::Read => "0",
        Outcome::Refused | Outcome::Invalid => "4",
        Outcome::Failed => "8",
    };
    let mut agents = Vec::new();
    if let Some(a) = &e.actor {
        agents.push(json!({
            "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": {"system": "https://hearth.example/fhir/principal", "value": a.principal}},
            "role": [{"text": a.role}],
            "requestor": true,
            "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": e.break_glass.as_deref().unwrap_or("COC")}]}],
        }));
    }
    if let Some(p) = &e.partner {
        agents.push(json!({
            "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
            "who": {"reference": format!("Organization/{p}")},
            "requestor": false,
        }));
    }
    let mut entities = Vec::new();
    if let Some(t) = &e.tenant {
        entities.push(json!({
            "what": {"identifier": {"value": t.as_str()}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
        }));
    }
    if let Some(c) = &e.consent {
        entities.push(json!({
            "what": {"reference": format!("Consent/{}/_history/{}", c.id, c.version)},
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Consent"},
        }));
    }
    let mut detail = vec![
        json!({"type": "reference-id", "valueString": e.reference_id.to_string()}),
        json!({"type": "hash", "valueString": hash}),
        json!({"type": "request", "valueString": e.request}),
    ];
    if let Some(d) = &e.payload_digest {
        detail.push(json!({"type": "payload-digest", "valueString": d}));
    }
    for p in &e.dropped_paths {
        detail.push(json!({"type": "dropped-path", "valueString": p}));
    }
    for i in &e.items_written {
        detail.push(json!({"type": "item-written", "valueString": format!("{} {}", i.kind, i.id.as_deref().unwrap_or(""))}));
    }
    for i in &e.items_withheld {
        detail.push(json!({"type": "item-withheld", "valueString": i.kind}));
    }
    entities.push(json!({
        "what": {"identifier": {"system": crate::fhir::REFERENCE_ID_SYSTEM, "value": e.reference_id.to_string()}},
        "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "code": "XrequestId"},
        "detail": detail,
    }));
    json!({
        "resourceType": "AuditEvent",
        "id": seq.to_string(),
        "type": ty,
        "action": action,
        "recorded": e.recorded,
        "outcome": outcome,
        "outcomeDesc": e.reason.clone().unwrap_or_else(|| format!("{:?}", e.outcome).to_lowercase()),
        "agent": agents,
        "source": {"observer": {"display": "Hearth"}},
        "entity": entities,
    })
}

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of one record: covers its position, its predecessor and its stored bytes.
pub fn record_hash(
    seq: u64,
    prev: &[u8; 32],
    reference_id: &str,
    recorded: &str,
    body: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(reference_id.as_bytes());
    h.update([0]);
    h.update(recorded.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// `sha256:<hex>` of a payload.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One stored audit row, as read back for verification.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    pub reference_id: String,
    pub recorded: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub body: Vec<u8>,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub records: u64,
    /// Hash of the last record (hex), to keep elsewhere as an anchor.
    pub head: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenLink>,
    /// Whether the anchor asked for was found in the verified chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_found: Option<bool>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.first_broken.is_none() && self.anchor_found != Some(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub seq: u64,
    pub reference_id: String,
    pub problem: String,
}

/// Walks records in sequence order and reports the first broken link.
pub fn verify<E>(
    records: impl Iterator<Item = Result<StoredRecord, E>>,
    anchor: Option<&[u8]>,
) -> Result<Verification, E> {
    let mut walk = ChainWalk::new(anchor);
    for r in records {
        let r = r?;
        if !walk.step(
            r.seq,
            &r.reference_id,
            &r.recorded,
            &r.prev_hash,
            &r.hash,
            &r.body,
        ) {
            break;
        }
    }
    Ok(walk.finish())
}

/// Verification one record at a time, over borrowed bytes (the store feeds it rows
/// straight from SQLite without copying them).
pub struct ChainWalk<'a> {
    prev: [u8; 32],
    count: u64,
    anchor: Option<&'a [u8]>,
    anchor_found: Option<bool>,
    broken: Option<BrokenLink>,
}

impl<'a> ChainWalk<'a> {
    pub fn new(anchor: Option<&'a [u8]>) -> Self {
        Self {
            prev: GENESIS,
            count: 0,
            anchor,
            anchor_found: anchor.map(|_| false),
            broken: None,
        }
    }

    /// Checks the next record; false once the chain is broken (stop walking).
    pub fn step(
        &mut self,
        seq: u64,
        reference_id: &str,
        recorded: &str,
        prev_hash: &[u8],
        hash: &[u8],
        body: &[u8],
    ) -> bool {
        let expected = self.count + 1;
        let problem = if seq != expected {
            Some(format!("sequence jumps from {} to {seq}", expected - 1))
        } else if prev_hash != self.prev {
            Some("does not link to the previous record's hash".to_string())
        } else if hash != record_hash(seq, &self.prev, reference_id, recorded, body) {
            Some("content does not match its hash".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.broken = Some(BrokenLink {
                seq,
                reference_id: reference_id.to_string(),
                problem,
            });
            return false;
        }
        self.prev.copy_from_slice(hash);
        if self.anchor == Some(hash) {
            self.anchor_found = Some(true);
        }
        self.count += 1;
        true
    }

    pub fn finish(self) -> Verification {
        Verification {
            records: self.count,
            head: hex::encode(self.prev),
            first_broken: self.broken,
            anchor_found: self.anchor_found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<StoredRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let body = format!("{{\"n\":{seq}}}").into_bytes();
                let hash = record_hash(seq, &prev, "R", "2026-11-23T00:00:00Z", &body);
                let r = StoredRecord {
                    seq,
                    reference_id: "R".into(),
                    recorded: "2026-11-23T00:00:00Z".into(),
                    prev_hash: prev.to_vec(),
                    hash: hash.to_vec(),
                    body,
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn run(records: Vec<StoredRecord>, anchor: Option<&[u8]>) -> Verification {
        verify(records.into_iter().map(Ok::<_, ()>), anchor).unwrap()
    }

    #[test]
    fn an_intact_chain_verifies_and_finds_its_anchor() {
        let c = chain(5);
        let anchor = c[2].hash.clone();
        let v = run(c, Some(&anchor));
        assert!(v.ok());
        assert_eq!(v.records, 5);
        assert_eq!(v.anchor_found, Some(true));
    }

    #[test]
    fn an_edited_record_is_the_first_broken_link() {
        let mut c = chain(5);
        c[2].body = b"{\"n\":99}".to_vec();
        let v = run(c, None);
        assert_eq!(v.first_broken.unwrap().seq, 3);
    }

    #[test]
    fn a_deleted_record_breaks_the_sequence() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(run(c, None).first_broken.unwrap().seq, 3);
    }

    #[test]
    fn a_rewritten_tail_does_not_contain_the_old_anchor() {
        let c = chain(3);
        let anchor = c[2].hash.clone();
        let rewritten = chain(2);
        let v = run(rewritten, Some(&anchor));
        assert!(!v.ok());
    }
}
