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
    /// Stored already superseded: a later version from the same partner was stored
    /// first (requests finish out of order).
    Overtaken,
    Read,
    Refused,
    Invalid,
    Failed,
}

impl Outcome {
    /// The outcome of a request that ended with HTTP `status`, when the handler did not
    /// say (a replayed 2xx stays a replay). One rule for whole requests and for a batch's
    /// entries, so the trail reads the same for both.
    pub fn of_status(status: u16, said: Outcome) -> Outcome {
        match status {
            200..=299 if said == Outcome::Replayed => Outcome::Replayed,
            200..=299 => Outcome::Read,
            400 | 404 | 405 | 413 | 415 | 422 => Outcome::Invalid,
            401 | 403 | 409 | 412 => Outcome::Refused,
            _ => Outcome::Failed,
        }
    }
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
    /// `METHOD /path` (no query string: queries can carry identifiers; a path segment
    /// Hearth did not issue shows as its route template).
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
    /// For housing's reads: the dataset items shown (ids), so "who saw what about this
    /// tenant" has an answer for each read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items_read: Vec<String>,
    /// For a read across tenants (the feed): every tenant the page was about. The audit
    /// query's tenant filter matches these as well as `tenant`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants_read: Vec<TenantId>,
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
    /// `sha256:<hex>` of that reason: the chain covers it, so a reason edited in the
    /// review list no longer matches its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_reason_digest: Option<String>,
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
            items_read: Vec::new(),
            tenants_read: Vec::new(),
            dropped_paths: Vec::new(),
            payload_digest: None,
            count: None,
            break_glass: None,
            break_glass_reason: None,
            break_glass_reason_digest: None,
        }
    }

    /// Records an exchange permitted by break-glass: the purpose in the record, the
    /// stated reason beside it (for review) with its digest in the record.
    pub fn set_break_glass(&mut self, purpose: &str, reason: &str) {
        self.break_glass = Some(purpose.to_string());
        self.break_glass_reason_digest = Some(digest(reason.as_bytes()));
        self.break_glass_reason = Some(reason.to_string());
    }
}

/// The record as a FHIR R4 `AuditEvent`, shaped after IHE BALP: import for a partner's
/// push, export for a disclosure or delivery, a REST event otherwise. Values never enter
/// it — only kinds, ids, paths and digests, as in the record itself.
pub fn to_audit_event(seq: u64, hash: &str, e: &AuditEntry) -> serde_json::Value {
    use serde_json::json;
    const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    let (ty, action) = match (e.direction, e.action.as_str()) {
        // A transaction's Patient entry: its identifiers were read to name the subject of
        // the entries about it; nothing of it was created.
        (Direction::Inbound, "identify-subject") => (
            json!({"system": DCM, "code": "110107", "display": "Import"}),
            "R",
        ),
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
        | Outcome::Overtaken
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
    // The tenant, or every tenant a read across tenants (the feed) was about.
    for t in e.tenant.iter().chain(&e.tenants_read) {
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
    for id in &e.items_read {
        detail.push(json!({"type": "item-read", "valueString": id}));
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

/// An anchor for `audit verify`: a record hash as `hash` and `/audit/records` print it,
/// 64 hex digits. Anything shorter or longer could never match, and would be reported as
/// a rewritten log rather than a mistyped anchor.
pub fn parse_anchor(text: &str) -> Result<Vec<u8>, &'static str> {
    match hex::decode(text.trim()) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err("the anchor must be a record hash: 64 hexadecimal digits"),
    }
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
    /// The break-glass review list checked against the reason digests in the chain
    /// (when the store keeps one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<ReasonCheck>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
            && self.anchor_found != Some(false)
            && self
                .break_glass
                .as_ref()
                .is_none_or(|c| c.problems.is_empty())
    }
}

/// An emergency exchange as its audit record states it: the reason's digest is in the
/// chain, the reason itself in the store's review list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emergency {
    pub seq: u64,
    pub reference_id: String,
    pub reason_digest: String,
}

/// The review list of break-glass reasons against the chain: every emergency in the
/// chain has its reason, unchanged, and every reason has its emergency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCheck {
    /// Emergency exchanges found in the verified records.
    pub emergencies: u64,
    pub problems: Vec<ReasonProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonProblem {
    pub reference_id: String,
    pub problem: String,
}

/// Checks the stored reasons (reference ID → reason as stated) against the emergencies
/// the chain records. The chain is the evidence: a reason deleted, edited or added
/// behind Hearth's back no longer lines up with it.
pub fn check_reasons(
    emergencies: &[Emergency],
    reasons: &std::collections::HashMap<String, String>,
) -> ReasonCheck {
    let mut problems = Vec::new();
    for e in emergencies {
        let problem = match reasons.get(&e.reference_id) {
            None => {
                "the chain records an emergency exchange whose stated reason is missing from the review list"
            }
            Some(reason) if digest(reason.as_bytes()) != e.reason_digest => {
                "the stated reason differs from the one the chain recorded"
            }
            Some(_) => continue,
        };
        problems.push(ReasonProblem {
            reference_id: e.reference_id.clone(),
            problem: problem.to_string(),
        });
    }
    let recorded: std::collections::HashSet<&str> = emergencies
        .iter()
        .map(|e| e.reference_id.as_str())
        .collect();
    let mut unrecorded: Vec<&String> = reasons
        .keys()
        .filter(|r| !recorded.contains(r.as_str()))
        .collect();
    unrecorded.sort();
    problems.extend(unrecorded.into_iter().map(|r| ReasonProblem {
        reference_id: r.clone(),
        problem: "a stated reason with no emergency exchange in the chain".to_string(),
    }));
    ReasonCheck {
        emergencies: emergencies.len() as u64,
        problems,
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
        if !walk.step_record(&r?) {
            break;
        }
    }
    Ok(walk.finish())
}

/// Verification of a contiguous run of records, one at a time, over borrowed bytes (the
/// store feeds it rows straight from SQLite without copying them).
///
/// Every link inside the run is checked as it is walked. The run's first record is
/// taken on trust (its sequence number and the predecessor hash it names) and checked
/// afterwards by [`stitch`] against the end of the run before it. Each record's hash
/// depends only on its own row, so runs can be walked in parallel and the result is the
/// same as one walk from the genesis.
pub struct ChainWalk<'a> {
    /// The run's first record, as found (None until one is seen).
    entry: Option<RunEntry>,
    /// The last record verified: its sequence number and hash.
    last_seq: u64,
    prev: [u8; 32],
    anchor: Option<&'a [u8]>,
    anchor_found: bool,
    broken: Option<BrokenLink>,
    /// Emergency exchanges among the verified records, in order.
    emergencies: Vec<Emergency>,
}

/// How a record names its break-glass reason's digest. Records are serialised JSON, so
/// this key with its quotes cannot occur inside a string value (quotes there are escaped).
const REASON_DIGEST_KEY: &[u8] = b"\"break_glass_reason_digest\":\"";

/// The reason digest a record's body states, if any (without parsing the body: the walk
/// reads every record).
fn reason_digest(body: &[u8]) -> Option<&str> {
    let at = memchr::memmem::find(body, REASON_DIGEST_KEY)? + REASON_DIGEST_KEY.len();
    let len = memchr::memchr(b'"', &body[at..])?;
    std::str::from_utf8(&body[at..at + len]).ok()
}

/// What the first record of a run says about the record before it.
struct RunEntry {
    seq: u64,
    reference_id: String,
    prev_hash: Vec<u8>,
}

impl<'a> ChainWalk<'a> {
    /// A walk of one run; `anchor` is the hash looked for in it.
    pub fn new(anchor: Option<&'a [u8]>) -> Self {
        Self {
            entry: None,
            last_seq: 0,
            prev: GENESIS,
            anchor,
            anchor_found: false,
            broken: None,
            emergencies: Vec::new(),
        }
    }

    /// The emergency exchanges among the records this walk verified.
    pub fn take_emergencies(&mut self) -> Vec<Emergency> {
        std::mem::take(&mut self.emergencies)
    }

    /// Checks the next record; false once the run is broken (stop walking).
    pub fn step(
        &mut self,
        seq: u64,
        reference_id: &str,
        recorded: &str,
        prev_hash: &[u8],
        hash: &[u8],
        body: &[u8],
    ) -> bool {
        if self.entry.is_none() {
            self.entry = Some(RunEntry {
                seq,
                reference_id: reference_id.to_string(),
                prev_hash: prev_hash.to_vec(),
            });
            self.last_seq = seq.wrapping_sub(1);
            if let Ok(prev) = <[u8; 32]>::try_from(prev_hash) {
                self.prev = prev;
            }
        }
        let problem = if seq != self.last_seq.wrapping_add(1) {
            Some(format!("sequence jumps from {} to {seq}", self.last_seq))
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
        self.anchor_found |= self.anchor == Some(hash);
        self.last_seq = seq;
        if let Some(d) = reason_digest(body) {
            self.emergencies.push(Emergency {
                seq,
                reference_id: reference_id.to_string(),
                reason_digest: d.to_string(),
            });
        }
        true
    }

    /// [`Self::step`] for a record read back whole.
    pub fn step_record(&mut self, r: &StoredRecord) -> bool {
        self.step(
            r.seq,
            &r.reference_id,
            &r.recorded,
            &r.prev_hash,
            &r.hash,
            &r.body,
        )
    }

    /// The verification of this run as the whole chain.
    pub fn finish(self) -> Verification {
        let anchor = self.anchor;
        stitch([self], anchor)
    }
}

/// Joins runs walked separately, in sequence order, into the verification of the whole
/// chain: each run's first record must follow on from the end of the run before it (the
/// first from the genesis), and the first broken link in order is the one reported.
pub fn stitch<'a>(
    runs: impl IntoIterator<Item = ChainWalk<'a>>,
    anchor: Option<&[u8]>,
) -> Verification {
    let mut last_seq = 0;
    let mut prev = GENESIS;
    let mut anchor_found = false;
    let mut first_broken = None;
    for run in runs {
        // A run with no records (its range was empty) joins nothing.
        let Some(entry) = run.entry else { continue };
        let problem = if entry.seq != last_seq + 1 {
            Some(format!("sequence jumps from {last_seq} to {}", entry.seq))
        } else if entry.prev_hash != prev {
            Some("does not link to the previous record's hash".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            first_broken = Some(BrokenLink {
                seq: entry.seq,
                reference_id: entry.reference_id,
                problem,
            });
            break;
        }
        // The link held, so a run that verified nothing ends where it began.
        anchor_found |= run.anchor_found;
        last_seq = run.last_seq;
        prev = run.prev;
        if run.broken.is_some() {
            first_broken = run.broken;
            break;
        }
    }
    Verification {
        records: last_seq,
        head: hex::encode(prev),
        first_broken,
        anchor_found: anchor.map(|_| anchor_found),
        break_glass: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patient_entry_read_to_name_the_subject_exports_as_a_read_not_a_create() {
        let entry = |action: &str| {
            let mut e = AuditEntry::new(
                ReferenceId::new(),
                "2026-11-23T10:00:00Z".into(),
                "POST /fhir entry[0]".into(),
                action,
                Direction::Inbound,
            );
            e.outcome = Outcome::Read;
            e
        };
        assert_eq!(
            to_audit_event(1, "h", &entry("identify-subject"))["action"],
            "R"
        );
        assert_eq!(to_audit_event(2, "h", &entry("create"))["action"], "C");
    }

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

    #[test]
    fn a_records_reason_digest_is_found_without_parsing_it() {
        let mut e = AuditEntry::new(
            ReferenceId::new(),
            "2026-11-29T00:00:00Z".into(),
            "POST /fhir/Communication".into(),
            "create",
            Direction::Inbound,
        );
        e.reason = Some(r#"quoted "break_glass_reason_digest":"sha256:forged" in a value"#.into());
        let plain = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            reason_digest(&plain),
            None,
            "a key quoted inside a value is not a key"
        );
        e.set_break_glass("BTG", "on-call nurse");
        let body = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            reason_digest(&body),
            Some(digest(b"on-call nurse").as_str())
        );
    }

    #[test]
    fn the_review_list_must_line_up_with_the_chains_emergencies() {
        let emergency = |r: &str, reason: &str| Emergency {
            seq: 1,
            reference_id: r.into(),
            reason_digest: digest(reason.as_bytes()),
        };
        let chain = [
            emergency("A", "fire"),
            emergency("B", "flood"),
            emergency("C", "fall"),
        ];
        let reasons: std::collections::HashMap<String, String> = [
            ("A", "fire"),          // as recorded
            ("B", "routine check"), // edited
            // C deleted
            ("D", "made up"), // added
        ]
        .into_iter()
        .map(|(r, why)| (r.to_string(), why.to_string()))
        .collect();
        let check = check_reasons(&chain, &reasons);
        assert_eq!(check.emergencies, 3);
        let found: Vec<(&str, &str)> = check
            .problems
            .iter()
            .map(|p| (p.reference_id.as_str(), p.problem.as_str()))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].0 == "B" && found[0].1.contains("differs"));
        assert!(found[1].0 == "C" && found[1].1.contains("missing"));
        assert!(found[2].0 == "D" && found[2].1.contains("no emergency"));
        let v = Verification {
            records: 3,
            head: String::new(),
            first_broken: None,
            anchor_found: None,
            break_glass: Some(check),
        };
        assert!(!v.ok());
    }

    /// The definition: one walk from the genesis, stopping at the first bad record.
    fn reference(records: &[StoredRecord], anchor: Option<&[u8]>) -> Verification {
        let (mut count, mut prev, mut found) = (0u64, GENESIS, false);
        for r in records {
            let problem = if r.seq != count + 1 {
                Some(format!("sequence jumps from {count} to {}", r.seq))
            } else if r.prev_hash != prev {
                Some("does not link to the previous record's hash".to_string())
            } else if r.hash != record_hash(r.seq, &prev, &r.reference_id, &r.recorded, &r.body) {
                Some("content does not match its hash".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Verification {
                    records: count,
                    head: hex::encode(prev),
                    first_broken: Some(BrokenLink {
                        seq: r.seq,
                        reference_id: r.reference_id.clone(),
                        problem,
                    }),
                    anchor_found: anchor.map(|_| found),
                    break_glass: None,
                };
            }
            prev.copy_from_slice(&r.hash);
            found |= anchor == Some(&r.hash[..]);
            count += 1;
        }
        Verification {
            records: count,
            head: hex::encode(prev),
            first_broken: None,
            anchor_found: anchor.map(|_| found),
            break_glass: None,
        }
    }

    /// Walks `records` as separate runs cut at `cuts` (indices), then stitches them.
    fn in_runs(records: &[StoredRecord], cuts: &[usize], anchor: Option<&[u8]>) -> Verification {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (records.len() + 1)).collect();
        bounds.extend([0, records.len()]);
        bounds.sort_unstable();
        let runs = bounds.windows(2).map(|w| {
            let mut walk = ChainWalk::new(anchor);
            for r in &records[w[0]..w[1]] {
                if !walk.step_record(r) {
                    break;
                }
            }
            walk
        });
        stitch(runs.collect::<Vec<_>>(), anchor)
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        None,
        EditBody(usize),
        Delete(usize),
        DeleteRange(usize, usize),
        Swap(usize, usize),
        EditPrev(usize),
        Renumber(usize, u64),
    }

    fn tamper(mut c: Vec<StoredRecord>, t: &Tamper) -> Vec<StoredRecord> {
        let n = c.len();
        match *t {
            Tamper::None => {}
            Tamper::EditBody(i) => c[i % n].body.push(b' '),
            Tamper::Delete(i) => {
                c.remove(i % n);
            }
            Tamper::DeleteRange(i, len) => {
                let i = i % n;
                c.drain(i..(i + len).min(n));
            }
            Tamper::Swap(i, j) => c.swap(i % n, j % n),
            Tamper::EditPrev(i) => c[i % n].prev_hash[0] ^= 1,
            Tamper::Renumber(i, seq) => c[i % n].seq = seq,
        }
        c
    }

    fn any_tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            Just(Tamper::None),
            any::<usize>().prop_map(Tamper::EditBody),
            any::<usize>().prop_map(Tamper::Delete),
            (any::<usize>(), 1usize..20).prop_map(|(i, l)| Tamper::DeleteRange(i, l)),
            (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Tamper::Swap(i, j)),
            any::<usize>().prop_map(Tamper::EditPrev),
            (any::<usize>(), 0u64..70).prop_map(|(i, s)| Tamper::Renumber(i, s)),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        /// However the chain is cut into runs, and whatever was done to it, stitching
        /// the runs finds exactly what one walk from the genesis finds.
        #[test]
        fn runs_stitched_together_verify_like_one_walk(
            n in 1u64..60,
            t in any_tamper(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            anchor_at in any::<usize>(),
        ) {
            let original = chain(n);
            let anchor = original[anchor_at % original.len()].hash.clone();
            let records = tamper(original, &t);
            for anchor in [None, Some(&anchor[..])] {
                prop_assert_eq!(in_runs(&records, &cuts, anchor), reference(&records, anchor));
            }
        }
    }
}
