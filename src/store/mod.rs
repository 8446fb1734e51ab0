//! Storage ports: what the rest of Hearth needs from a store, as narrow traits.
//!
//! [`sqlite::SqliteStore`] is the embedded implementation (one file, WAL,
//! `synchronous=FULL`, one writer that group-commits). A server database can implement
//! the same traits for multi-instance deployments.
//!
//! Contracts every implementation keeps:
//! * A method that writes returns only after its data *and* audit record are durable,
//!   written in one atomic transaction.
//! * Feed sequence numbers are visible in commit order: a reader never sees `n+1`
//!   before `n` (no gaps, no duplicates across pages).
//! * The audit log is append-only and hash-chained; nothing updates or deletes it.

pub mod cache;
pub mod schema;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

use crate::audit::{AuditEntry, Verification};
use crate::consent::{ConsentTerms, ConsentVersion, RenewalDue};
use crate::dataset::{ConsentCitation, StoredItem};
use crate::ids::{Identifier, PartnerId, ReferenceId, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write conflicts with what is stored (e.g. an identifier of another tenant).
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The store failed; the cause is logged, never shown to a client.
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    /// Where, not what: the message of a stored body that no longer reads would quote
    /// its values, and internal errors are logged.
    fn from(e: serde_json::Error) -> Self {
        StoreError::Internal(format!(
            "stored JSON does not read ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What makes an inbound resource "the same resource sent again": the sending partner,
/// the resource type and the resource's business identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeKey {
    pub partner: PartnerId,
    pub resource_type: String,
    pub identifier: Identifier,
}

/// An accepted inbound exchange, ready to store.
#[derive(Debug, Clone)]
pub struct NewExchange {
    pub reference_id: ReferenceId,
    pub key: ExchangeKey,
    pub tenant: TenantId,
    /// Digest of the payload: the same key with the same digest is a replay.
    pub digest: String,
    pub received_at: String,
    pub consent: Option<ConsentCitation>,
    /// The tenant's consent versions when consent was decided (none for a partner
    /// retracting its own exchange). Different ones at commit mean the consent changed
    /// in between (a revocation, say): nothing is stored, and the commit is a
    /// [`StoreError::Conflict`].
    pub consents_seen: Option<ConsentsSeen>,
    pub items: Vec<StoredItem>,
    /// `entered-in-error`: retract whatever the key stored before.
    pub retract: bool,
    /// An event in this exchange that should prompt consent renewal.
    pub renewal: Option<RenewalDue>,
    /// The note this exchange answers, if it is a partner's reply, and the reply's status.
    pub in_response_to: Option<ReferenceId>,
    pub response_status: Option<String>,
    /// Notes forwarding these items to other partners (routing rules), queued with it.
    pub forwards: Vec<NewNote>,
    /// Audit records of forwards a routing rule asked for and consent refused, written
    /// with the exchange.
    pub refused_forwards: Vec<AuditEntry>,
    pub audit: AuditEntry,
}

/// How many consent versions a decision saw: all of them, and those that may govern
/// ([`crate::consent::ConsentStatus::may_govern`]). Versions are only ever added, so
/// equal counts at commit mean nothing changed; a partner's proposal (or housing
/// declining one) changes only the first, and must not fail other partners' exchanges.
///
/// With sharing paused while a renewal is due (`share_while_renewal_due = false`), a
/// decision made while no renewal prompt was open also relies on none opening before
/// the commit (another clinic's discharge notice, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentsSeen {
    pub all: usize,
    pub may_govern: usize,
    pub no_renewal_due: bool,
}

impl ConsentsSeen {
    /// What a decision under `context` relied on; `paused_by_renewal` is the
    /// configuration's `!share_while_renewal_due`.
    pub fn of(context: &ConsentContext, paused_by_renewal: bool) -> Self {
        let versions = &context.consents;
        Self {
            all: versions.len(),
            may_govern: versions
                .iter()
                .filter(|c| c.terms.status.may_govern())
                .count(),
            no_renewal_due: paused_by_renewal && context.renewal_due.is_none(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeOutcome {
    Accepted,
    /// Same key, new content: the earlier exchange's items are superseded.
    Corrected {
        supersedes: ReferenceId,
    },
    Retracted {
        of: Option<ReferenceId>,
    },
    /// Same key, same content: nothing new stored.
    Replayed {
        original: ReferenceId,
    },
    /// Same key, but a later version (a correction or retraction the partner sent after
    /// this one) was stored first: this one is kept as superseded and changes nothing.
    Overtaken {
        by: ReferenceId,
    },
}

/// Hearth's record of one exchange, from which its minimised copy is built.
#[derive(Debug, Clone, Serialize)]
pub struct StoredExchange {
    pub reference_id: ReferenceId,
    pub partner: PartnerId,
    pub resource_type: String,
    pub identifier: Identifier,
    pub tenant: TenantId,
    /// `current`, `superseded` or `retracted`.
    pub state: String,
    pub received_at: String,
    pub items: Vec<StoredItem>,
    /// Ids of its items since superseded or retracted (on their own or with it).
    pub retired: Vec<String>,
}

/// One entry of the housing updates feed. Its JSON form is [`FeedEntry::write_json`].
#[derive(Debug, Clone)]
pub struct FeedEntry {
    pub seq: u64,
    pub tenant: TenantId,
    /// `added`, `superseded`, `retracted` (dataset items), `renewal-due` (consent),
    /// `response` (a partner replied to a note) or `consent` (a new version of the
    /// tenant's consent, or a revocation: read the tenant view again).
    pub change: String,
    pub item_id: Option<String>,
    pub reference_id: ReferenceId,
    pub at: String,
    pub item: Option<FeedItem>,
    pub renewal: Option<RenewalDue>,
    /// For `response` entries: the partner's reply to a note.
    pub response: Option<NoteResponse>,
    /// Set when the tenant's current consent restricts this item from view.
    pub restricted: bool,
}

impl FeedEntry {
    /// Appends this entry as a JSON object: its fields in declaration order, absent ones
    /// left out, and the item as the exact text the store holds.
    ///
    /// The item is copied, not parsed: the store wrote that text itself by serialising a
    /// [`StoredItem`], and parsing every item of a page of 100 (to check it, then to
    /// write it back out) was the largest share of the feed's CPU in the benchmark.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        #[derive(Serialize)]
        struct Head<'a> {
            seq: u64,
            tenant: &'a TenantId,
            change: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            item_id: &'a Option<String>,
            reference_id: &'a ReferenceId,
            at: &'a str,
        }
        #[derive(Serialize)]
        struct Tail<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            renewal: &'a Option<RenewalDue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            response: &'a Option<NoteResponse>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            restricted: bool,
        }
        serde_json::to_writer(
            &mut *out,
            &Head {
                seq: self.seq,
                tenant: &self.tenant,
                change: &self.change,
                item_id: &self.item_id,
                reference_id: &self.reference_id,
                at: &self.at,
            },
        )?;
        out.pop(); // the head's `}`: the object goes on
        if let Some(item) = &self.item {
            out.extend_from_slice(b",\"item\":");
            out.extend_from_slice(item.json.as_bytes());
        }
        let tail = out.len();
        serde_json::to_writer(
            &mut *out,
            &Tail {
                renewal: &self.renewal,
                response: &self.response,
                restricted: self.restricted,
            },
        )?;
        // The tail's fields join the object: its `{` becomes a `,`; an empty tail is
        // just the closing brace.
        if out.len() - tail == 2 {
            out.truncate(tail);
            out.push(b'}');
        } else {
            out[tail] = b',';
        }
        Ok(())
    }
}

/// A stored item as the feed carries it: the item's JSON exactly as the store holds it
/// and its labels (stored beside it), which are all the restriction filter reads.
#[derive(Debug, Clone)]
pub struct FeedItem {
    pub labels: Vec<String>,
    json: String,
}

impl FeedItem {
    /// From a stored item's JSON text, as the store wrote it, and its labels column.
    pub fn from_stored(json: String, labels: &str) -> Result<Self, serde_json::Error> {
        Ok(Self {
            labels: serde_json::from_str(labels)?,
            json,
        })
    }
}

/// An emergency exchange waiting for review.
#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassRecord {
    pub reference_id: String,
    pub recorded_at: String,
    pub tenant: Option<String>,
    pub principal: Option<String>,
    pub purpose: String,
    pub reason: String,
    /// Whether the reason still matches the digest its audit record holds; absent for
    /// records from before digests were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_matches_audit: Option<bool>,
    /// The auditor's review, once made.
    pub review: Option<BreakGlassReview>,
}

/// An auditor's finding on one emergency exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakGlassReview {
    pub reviewed_at: String,
    pub reviewer: String,
    /// `justified` or `not-justified`.
    pub outcome: String,
}

/// A tenant's consent versions and renewal prompt.
#[derive(Debug, Clone, Default)]
pub struct ConsentContext {
    /// Shared, because the store keeps these in memory (see [`cache`]).
    pub consents: std::sync::Arc<[ConsentVersion]>,
    pub renewal_due: Option<RenewalDue>,
}

/// A stored consent version with its FHIR form.
#[derive(Debug, Clone)]
pub struct StoredConsent {
    pub version: ConsentVersion,
    pub tenant: TenantId,
    pub resource: serde_json::Value,
    pub recorded_at: String,
}

/// An audit record as stored, for queries and export.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub seq: u64,
    pub hash: String,
    pub record: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub after_seq: u64,
    pub limit: usize,
    pub reference_id: Option<String>,
    pub tenant: Option<String>,
    /// Every record about this reference ID: its own, and those it is the `parent` of (a
    /// Bundle's entries, a note's delivery attempts) or `related` to (the corrections,
    /// replays and deliveries that name it).
    pub related_to: Option<String>,
}

/// Tenants and the identifiers partners know them by.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Links `identifiers` to `tenant` (creating it). An identifier already linked to
    /// another tenant is a [`StoreError::Conflict`]; nothing is written then.
    async fn register_tenant(
        &self,
        tenant: TenantId,
        identifiers: Vec<Identifier>,
        audit: AuditEntry,
    ) -> StoreResult<Registered>;
    /// The tenant each identifier names, if any.
    async fn resolve(&self, identifiers: &[Identifier]) -> StoreResult<Vec<Option<TenantId>>>;
    async fn tenant_exists(&self, tenant: &TenantId) -> StoreResult<bool>;
    async fn tenant_identifiers(&self, tenant: &TenantId) -> StoreResult<Vec<Identifier>>;
}

/// Where a new consent version goes.
#[derive(Debug, Clone, Default)]
pub struct ConsentSlot {
    /// The consent it is a version of; `None` starts a new consent.
    pub id: Option<String>,
    /// The version it was derived from (a status change, an edit). If another version
    /// was stored since, the write is a [`StoreError::Conflict`] and nothing is stored:
    /// a confirmation read before a revocation must not land after it and undo it.
    pub based_on: Option<u32>,
}

impl ConsentSlot {
    /// A new version of `id` (or a new consent), whatever came before it.
    pub fn of(id: Option<String>) -> Self {
        Self { id, based_on: None }
    }

    /// The version after `based_on` of consent `id`, and no other.
    pub fn after(id: &str, based_on: u32) -> Self {
        Self {
            id: Some(id.to_string()),
            based_on: Some(based_on),
        }
    }
}

/// Every version of every consent.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    async fn consents(&self, tenant: &TenantId) -> StoreResult<Vec<ConsentVersion>>;
    /// Stores a new version in `slot`; the resource is stored with its id and
    /// `meta.versionId` set.
    /// A housing-confirmed (`clears_renewal`) version also clears a renewal prompt.
    async fn save_consent(
        &self,
        slot: ConsentSlot,
        tenant: TenantId,
        terms: ConsentTerms,
        resource: serde_json::Value,
        clears_renewal: bool,
        audit: AuditEntry,
    ) -> StoreResult<StoredConsent>;
    /// The latest version of a consent.
    async fn consent(&self, id: &str) -> StoreResult<Option<StoredConsent>>;
    /// Every version of a consent, oldest first.
    async fn consent_history(&self, id: &str) -> StoreResult<Vec<StoredConsent>>;
    /// Every version of every consent of a tenant, oldest first.
    async fn tenant_consents(&self, tenant: &TenantId) -> StoreResult<Vec<StoredConsent>>;
    /// Marks the tenant's consent renewal-due (unless it already is): true if newly
    /// marked, and the prompt now open (this one, or the one that already was).
    async fn mark_renewal_due(
        &self,
        tenant: &TenantId,
        due: RenewalDue,
        audit: AuditEntry,
    ) -> StoreResult<(bool, RenewalDue)>;
    async fn renewal_due(&self, tenant: &TenantId) -> StoreResult<Option<RenewalDue>>;
    /// Everything a consent decision needs about a tenant, in one read.
    async fn consent_context(&self, tenant: &TenantId) -> StoreResult<ConsentContext>;
    /// For an inbound exchange: what each identifier names, and — when they name exactly
    /// one tenant — that tenant's consent context, in one read.
    async fn inbound_context(
        &self,
        identifiers: &[Identifier],
    ) -> StoreResult<(Vec<Option<TenantId>>, Option<ConsentContext>)>;
    /// Every tenant whose consent is renewal-due.
    async fn renewals_due(&self) -> StoreResult<Vec<(TenantId, RenewalDue)>>;
    /// Every tenant's consent versions (for the expiry list: one read, not one per tenant).
    async fn all_consents(&self) -> StoreResult<Vec<(TenantId, Vec<ConsentVersion>)>>;
}

/// What registering a tenant did, read in the same transaction as the write.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The tenant is new (it may have existed, gaining identifiers).
    pub created: bool,
    /// Every identifier now linked to the tenant, this registration's and earlier ones.
    pub identifiers: Vec<Identifier>,
}

/// Inbound exchanges, the dataset items they wrote and the updates feed.
#[async_trait]
pub trait ExchangeStore: Send + Sync {
    /// Stores all exchanges and their audit records in one transaction, all or nothing
    /// (a transaction Bundle passes several), with `audits` — records of entries that
    /// needed no write of their own (an `If-None-Exist` replay) — in the same commit.
    async fn commit_exchanges(
        &self,
        exchanges: Vec<NewExchange>,
        audits: Vec<AuditEntry>,
    ) -> StoreResult<Vec<ExchangeOutcome>>;
    /// Current exchanges of `partner` with an identifier matching `system` (any when
    /// `None`) and `value`.
    async fn find_exchanges(
        &self,
        partner: &PartnerId,
        resource_type: &str,
        system: Option<&str>,
        value: &str,
    ) -> StoreResult<Vec<ReferenceId>>;
    /// Whether `key`'s partner has sent an exchange under that identifier before (in any
    /// state): what it may retract without consent.
    async fn sent_before(&self, key: &ExchangeKey) -> StoreResult<bool>;
    async fn exchange(&self, reference_id: &ReferenceId) -> StoreResult<Option<StoredExchange>>;
    async fn feed(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<FeedEntry>>;
    /// The feed's newest sequence number, updated after every commit that added to it
    /// (items, retractions, renewal prompts, partners' replies): long-polls wait on it.
    fn feed_head(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The feed's newest sequence number as committed now (0 when it is empty).
    async fn feed_newest(&self) -> StoreResult<u64>;
    async fn tenant_items(&self, tenant: &TenantId) -> StoreResult<Vec<StoredItem>>;
    /// Those of `item_ids` that are stored but no longer current (retracted or
    /// superseded by their sender). Ids not stored at all (facts typed into a note) are
    /// not among them.
    async fn retired_items(&self, item_ids: Vec<String>) -> StoreResult<Vec<String>>;
    /// The partner that sent each of `item_ids`, in order; `None` for an id not stored.
    async fn item_senders(&self, item_ids: Vec<String>) -> StoreResult<Vec<Option<PartnerId>>>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends one record; durable on return.
    async fn append(&self, entry: AuditEntry) -> StoreResult<()>;
    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditRow>>;
    async fn verify(&self, anchor: Option<Vec<u8>>) -> StoreResult<Verification>;
    /// Emergency exchanges, newest first, for review.
    async fn break_glass_records(&self) -> StoreResult<Vec<BreakGlassRecord>>;
    /// Records the review of emergency exchange `reference` with its audit record:
    /// `NotFound` if there is no such exchange, `Conflict` if it was reviewed already.
    async fn review_break_glass(
        &self,
        reference: String,
        review: BreakGlassReview,
        audit: AuditEntry,
    ) -> StoreResult<()>;
}

/// A care coordination note to queue, with its delivery.
#[derive(Debug, Clone)]
pub struct NewNote {
    pub reference_id: ReferenceId,
    pub tenant: TenantId,
    pub partner: PartnerId,
    /// The note as the worker wrote it, validated (reason, facts, action, deadline).
    pub note: serde_json::Value,
    /// The FHIR the partner will receive.
    pub payload: serde_json::Value,
    pub created_at: String,
    pub created_ms: i64,
    /// Dead-letter if not delivered by then (unix ms).
    pub give_up_ms: i64,
    pub audit: AuditEntry,
}

/// A delivery the relay should attempt now. Its `Debug` leaves out the note and payload:
/// they are about the tenant, and must not reach a log line through a `{:?}`.
#[derive(Clone)]
pub struct Delivery {
    pub reference_id: ReferenceId,
    pub tenant: TenantId,
    pub partner: PartnerId,
    pub payload: serde_json::Value,
    /// The note as queued (its facts carry their labels).
    pub note: serde_json::Value,
    pub attempts: u32,
    pub give_up_ms: i64,
    /// The emergency the note was queued under, if it was and no auditor has found it
    /// unjustified: it is honoured at delivery, or the worker would be told the note was
    /// accepted and the partner never get it.
    pub emergency: Option<crate::consent::BreakGlass>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("reference_id", &self.reference_id)
            .field("tenant", &self.tenant)
            .field("partner", &self.partner)
            .field("attempts", &self.attempts)
            .field("give_up_ms", &self.give_up_ms)
            .field("emergency", &self.emergency)
            .finish_non_exhaustive()
    }
}

/// What came of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    Retry {
        next_ms: i64,
        error: String,
    },
    /// Dead-lettered: permanent failure or the deadline passed.
    Dead {
        error: String,
    },
    /// Stopped before sending: consent no longer covers it, or a fact it carries was
    /// retracted or corrected by its sender.
    Stopped {
        reason: String,
    },
}

/// A note's thread: the note, its delivery, and the partner's responses.
#[derive(Debug, Clone, Serialize)]
pub struct NoteThread {
    pub reference_id: ReferenceId,
    pub tenant: TenantId,
    pub partner: PartnerId,
    pub created_at: String,
    pub note: serde_json::Value,
    pub delivery: DeliveryState,
    pub responses: Vec<NoteResponse>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryState {
    /// `pending`, `delivered`, `dead` or `stopped`.
    pub state: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

/// A partner's reply, linked to the note it answers. Its content is dataset items only.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NoteResponse {
    pub reference_id: ReferenceId,
    pub note: ReferenceId,
    pub partner: PartnerId,
    pub received_at: String,
    /// The reply's FHIR status (e.g. `completed`, `in-progress`).
    pub status: String,
    /// Ids of the dataset items the reply carried (its next steps).
    pub items: Vec<String>,
}

/// Care coordination notes and their durable outbox.
#[async_trait]
pub trait NoteStore: Send + Sync {
    /// Stores the note, its outbox entry and its audit record in one transaction; with
    /// `seen`, only if the tenant's consent has not moved since the decision (`Conflict`).
    async fn queue_note(&self, note: NewNote, seen: Option<ConsentsSeen>) -> StoreResult<()>;
    /// Pending deliveries due at `now_ms`, at most `per_partner` per partner, oldest first,
    async fn due_deliveries(&self, now_ms: i64, per_partner: usize) -> StoreResult<Vec<Delivery>>;
    /// Records an attempt's result and its audit record.
    async fn record_attempt(
        &self,
        reference_id: ReferenceId,
        result: AttemptResult,
        at: String,
        audit: AuditEntry,
    ) -> StoreResult<()>;
    /// Whether the note is still pending after `attempts` attempts, as an outbox read
    /// found it: false once another attempt has been recorded since.
    async fn still_due(&self, reference_id: &ReferenceId, attempts: u32) -> StoreResult<bool>;
    async fn note_thread(&self, reference_id: &ReferenceId) -> StoreResult<Option<NoteThread>>;
    /// Threads of a tenant (or all tenants), newest first.
    async fn note_threads(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<NoteThread>>;
    /// Dead-lettered notes, for operators.
    async fn dead_letters(&self) -> StoreResult<Vec<NoteThread>>;
    /// Puts a dead-lettered note back in the queue (with a new deadline).
    async fn replay_dead_letter(
        &self,
        reference_id: &ReferenceId,
        now_ms: i64,
        give_up_ms: i64,
        audit: AuditEntry,
    ) -> StoreResult<bool>;
}

/// Joint case reviews (kept apart from the housing dataset).
#[async_trait]
pub trait ReviewStore: Send + Sync {
    /// Stores a review whose sharing was decided under `seen`; refused with
    /// [`StoreError::Conflict`], nothing stored, if the tenant's consent moved since.
    async fn save_review(
        &self,
        review: crate::gateway::reviews::StoredReview,
        seen: ConsentsSeen,
        audit: AuditEntry,
    ) -> StoreResult<()>;
    async fn review(&self, id: &str) -> StoreResult<Option<crate::gateway::reviews::StoredReview>>;
    /// The latest review of every tenant that has one.
    async fn latest_reviews(&self) -> StoreResult<Vec<crate::gateway::reviews::StoredReview>>;
}

/// Everything Hearth stores, in one handle.
/// Whether the store can take writes now, for `/readyz`.
pub trait Health {
    /// `Err` with a reason while the writer is closed or its last commit failed (a full
    /// or read-only disk): reads may still work, acknowledgements would not.
    fn writer_health(&self) -> Result<(), String>;
}

pub trait Store:
    TenantStore + ConsentStore + ExchangeStore + AuditStore + NoteStore + ReviewStore + Health + 'static
{
}
impl<
    T: TenantStore
        + ConsentStore
        + ExchangeStore
        + AuditStore
        + NoteStore
        + ReviewStore
        + Health
        + 'static,
> Store for T
{
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(seq: u64, change: &str) -> FeedEntry {
        FeedEntry {
            seq,
            tenant: TenantId::new("T-1"),
            change: change.into(),
            item_id: None,
            reference_id: "01JDV9E6Z8QW3N5T7Y2K4M6P8R".parse().unwrap(),
            at: "2026-11-28T10:00:00Z".into(),
            item: None,
            renewal: None,
            response: None,
            restricted: false,
        }
    }

    /// A feed entry's hand-written JSON is what a housing system would get from a
    /// serialiser: the same fields, in the same order, absent ones left out, the item
    /// carried as the stored text.
    #[test]
    fn feed_entries_are_written_as_ordinary_json_objects() {
        let stored = r#"{"id":"01J-0","item":{"kind":"care-contact","name":"Dana \"D\" Ruiz"},"labels":["SUD"]}"#;
        let mut added = entry(7, "added");
        added.item_id = Some("01J-0".into());
        added.item = Some(FeedItem::from_stored(stored.into(), r#"["SUD"]"#).unwrap());
        let mut restricted = entry(8, "added");
        restricted.item_id = Some("01J-1".into());
        restricted.restricted = true;
        let mut renewal = entry(9, "renewal-due");
        renewal.renewal = Some(RenewalDue {
            reason: "hospitalisation".into(),
            since: "2026-11-28".into(),
            reference_id: "01J".into(),
        });

        let written = |e: &FeedEntry| {
            let mut out = Vec::new();
            e.write_json(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let head = r#""tenant":"T-1","#;
        let tail = r#""reference_id":"01JDV9E6Z8QW3N5T7Y2K4M6P8R","at":"2026-11-28T10:00:00Z""#;
        assert_eq!(
            written(&added),
            format!(
                r#"{{"seq":7,{head}"change":"added","item_id":"01J-0",{tail},"item":{stored}}}"#
            )
        );
        assert_eq!(
            written(&restricted),
            format!(
                r#"{{"seq":8,{head}"change":"added","item_id":"01J-1",{tail},"restricted":true}}"#
            )
        );
        let v: serde_json::Value = serde_json::from_str(&written(&renewal)).unwrap();
        assert_eq!(
            v,
            json!({"seq": 9, "tenant": "T-1", "change": "renewal-due",
                   "reference_id": "01JDV9E6Z8QW3N5T7Y2K4M6P8R", "at": "2026-11-28T10:00:00Z",
                   "renewal": {"reason": "hospitalisation", "since": "2026-11-28", "reference_id": "01J"}})
        );
        assert_eq!(added.item.unwrap().labels, ["SUD"]);
    }
}
