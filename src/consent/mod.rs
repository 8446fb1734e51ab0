//! Consent: the registry model and the one decision made at every exchange.
//!
//! A consent is kept as a FHIR R4 `Consent`, every version, with the elements Hearth
//! enforces read into [`ConsentTerms`] ([`fhir`] reads and writes the FHIR form, [`form`]
//! is the plain housing form). [`decide`] decides every exchange — inbound from a
//! partner, outbound to a partner, housing's own reads — and cites the consent and
//! version it relied on.
//!
//! # Decision table
//!
//! The governing consent is the tenant's most recent choice: among the latest version of
//! each consent whose status is `active` or `inactive`, the one with the latest
//! `dateTime`. `proposed` (a partner's submission awaiting housing), `draft`, `rejected`
//! and `entered-in-error` consents decide nothing. Rows are checked in order:
//!
//! | # | situation | decision | break-glass overrides? |
//! |---|---|---|---|
//! | 1 | no governing consent | deny `no-consent` | yes |
//! | 2 | governing consent `inactive` (revoked) | deny `consent-revoked` | **no** (explicit refusal) |
//! | 3 | governing consent's base provision is `deny` (tenant refused) | deny `consent-refused` | **no** |
//! | 4 | now before `provision.period.start` | deny `consent-not-yet-active` | yes |
//! | 5 | now at or after `provision.period.end` (a date means through that day) | deny `consent-expired` | yes |
//! | 6 | renewal due and the site blocks sharing while due | deny `renewal-due` | yes |
//! | 7 | partner not an actor with the role for this direction (`INF` to send to housing, `IRCP` to receive from it) | deny `partner-not-covered` | **no** (the tenant chose who) |
//! | 8 | purpose not among `provision.purpose` (when any are listed) | deny `purpose-not-covered` | yes (the emergency purpose replaces it) |
//! | 9 | otherwise | permit, withholding every item carrying a label a nested `deny` provision names | labels still withhold |
//!
//! A deny provision inside the consent wins over its permit (row 9); housing's own reads
//! (direction [`Flow::HousingUse`]) skip rows 1–8 — housing is the custodian of what it
//! already holds — but still withhold labelled items from view.
//!
//! Invariant: pure; no I/O, no clock (time is a parameter).

pub mod fhir;
pub mod form;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dataset::ConsentCitation;
use crate::ids::PartnerId;

pub use fhir::{parse_fhir_instant, terms_from_fhir};

/// FHIR `consent-state-codes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    Draft,
    Proposed,
    Active,
    Rejected,
    Inactive,
    EnteredInError,
}

impl ConsentStatus {
    /// Whether storing a version in this status can change which consent governs: a
    /// partner's proposal, and housing declining one, never do.
    pub fn may_govern(self) -> bool {
        !matches!(self, ConsentStatus::Proposed | ConsentStatus::Rejected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Draft => "draft",
            ConsentStatus::Proposed => "proposed",
            ConsentStatus::Active => "active",
            ConsentStatus::Rejected => "rejected",
            ConsentStatus::Inactive => "inactive",
            ConsentStatus::EnteredInError => "entered-in-error",
        }
    }
}

/// What Hearth enforces from one consent version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentTerms {
    pub status: ConsentStatus,
    /// `Consent.dateTime`: when the tenant made this choice; orders competing consents.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded: OffsetDateTime,
    /// The base provision is `deny`: the tenant refused sharing.
    #[serde(default)]
    pub refused: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    /// Exclusive: sharing stops at this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// Partners that may send to housing (`provision.actor` role `INF`).
    #[serde(default)]
    pub senders: Vec<PartnerId>,
    /// Partners that may receive from housing (`provision.actor` role `IRCP`).
    #[serde(default)]
    pub recipients: Vec<PartnerId>,
    /// `v3-ActReason` purposes; empty means any.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Security labels a nested deny provision withholds.
    #[serde(default)]
    pub denied_labels: Vec<String>,
    /// Labels withheld for one partner only (a nested deny naming it as actor): "share
    /// with the clinic and the MCO, but no substance-use details to the MCO".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partner_denials: Vec<PartnerDenial>,
}

/// A nested deny for one partner: its labels are withheld when that partner receives
/// from housing (`receiving`, actor role IRCP) or sends to it (actor role INF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerDenial {
    pub partner: PartnerId,
    pub receiving: bool,
    pub labels: Vec<String>,
}

impl ConsentTerms {
    /// Every partner the consent names, in either direction.
    pub fn partners(&self) -> BTreeSet<&PartnerId> {
        self.senders.iter().chain(&self.recipients).collect()
    }
}

/// One stored version of a consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentVersion {
    pub id: String,
    pub version: u32,
    pub terms: ConsentTerms,
}

impl ConsentVersion {
    pub fn citation(&self) -> ConsentCitation {
        ConsentCitation {
            id: self.id.clone(),
            version: self.version,
        }
    }
}

/// Which way information moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// A partner sends to housing.
    Inbound,
    /// Housing (through Hearth) sends to a partner.
    Outbound,
    /// Housing reads what it already holds.
    HousingUse,
}

/// A consent's renewal is due: something happened that the tenant should be asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalDue {
    /// `hospitalisation`, `change-of-provider` or `tenant-request`.
    pub reason: String,
    pub since: String,
    /// The exchange or request that triggered it.
    pub reference_id: String,
}

/// An emergency exchange outside consent: an emergency purpose of use and a reason.
#[derive(Clone, PartialEq, Eq)]
pub struct BreakGlass {
    /// `BTG` or `ETREAT` (v3-ActReason).
    pub purpose: String,
    pub reason: String,
}

/// The reason is free text about the tenant: a `{:?}` in a log line must not carry it.
impl std::fmt::Debug for BreakGlass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakGlass")
            .field("purpose", &self.purpose)
            .field("reason", &"<withheld>")
            .finish()
    }
}

/// Purposes of use that may break the glass.
pub const EMERGENCY_PURPOSES: &[&str] = &["BTG", "ETREAT"];

/// Whether a consent given for `consented` covers an exchange for `asked`. In
/// v3-ActReason care coordination (COC) is a kind of treatment (TREAT), so a consent to
/// share for treatment covers it. Emergency purposes are not widened this way: they stay
/// break-glass, flagged and reviewed, unless the consent names them.
pub fn purpose_covers(consented: &str, asked: &str) -> bool {
    consented == asked || (consented == "TREAT" && asked == "COC")
}

/// What an exchange asks for.
#[derive(Debug, Clone)]
pub struct ExchangeRequest<'a> {
    pub flow: Flow,
    /// The partner on the other side (ignored for housing use).
    pub partner: &'a PartnerId,
    /// `v3-ActReason` code; care coordination is `COC`.
    pub purpose: &'a str,
    /// The security labels of each dataset item involved.
    pub item_labels: &'a [BTreeSet<String>],
    /// Housing use and outbound: the partner that sent each item, where known (empty when
    /// no restriction needs it). A restriction on what that partner sends (actor INF)
    /// withholds the items it sent before the restriction was added, from housing's view
    /// and from whatever housing passes on, as it would have at intake.
    pub item_senders: &'a [Option<PartnerId>],
    pub at: OffsetDateTime,
    /// Whether the tenant's consent is marked renewal-due, and whether the site blocks
    /// sharing until it is renewed.
    pub renewal_due: bool,
    pub block_while_renewal_due: bool,
    pub break_glass: Option<&'a BreakGlass>,
    /// Narrow labels and the broader ones each belongs to (`[implies]` in
    /// sensitivity.toml): OPIOIDUD → SUD, ETH.
    pub label_hierarchy: &'a LabelHierarchy,
}

/// Which security labels imply which broader ones.
pub type LabelHierarchy = BTreeMap<String, Vec<String>>;

/// `labels` with every label they imply, transitively.
pub fn widen(labels: &mut BTreeSet<String>, hierarchy: &LabelHierarchy) {
    let mut pending: Vec<String> = labels.iter().cloned().collect();
    while let Some(label) = pending.pop() {
        for broader in hierarchy.get(&label).into_iter().flatten() {
            if labels.insert(broader.clone()) {
                pending.push(broader.clone());
            }
        }
    }
}

/// Why an exchange is refused. Kept in the audit; never shown to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum DenyReason {
    NoConsent,
    Revoked,
    Refused,
    Expired {
        #[serde(with = "time::serde::rfc3339")]
        on: OffsetDateTime,
    },
    NotYetActive {
        #[serde(with = "time::serde::rfc3339")]
        from: OffsetDateTime,
    },
    RenewalDue,
    PartnerNotCovered,
    PurposeNotCovered,
}

impl DenyReason {
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::NoConsent => "no-consent",
            DenyReason::Revoked => "consent-revoked",
            DenyReason::Refused => "consent-refused",
            DenyReason::Expired { .. } => "consent-expired",
            DenyReason::NotYetActive { .. } => "consent-not-yet-active",
            DenyReason::RenewalDue => "renewal-due",
            DenyReason::PartnerNotCovered => "partner-not-covered",
            DenyReason::PurposeNotCovered => "purpose-not-covered",
        }
    }

    /// Whether an emergency exchange may go ahead despite this refusal. A tenant's
    /// explicit choice (revoked, refused, not this partner) is never overridden.
    pub fn break_glass_may_override(&self) -> bool {
        !matches!(
            self,
            DenyReason::Revoked | DenyReason::Refused | DenyReason::PartnerNotCovered
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Go ahead; items at `withheld` (indexes into the request's items) stay behind.
    Permit {
        consent: Option<ConsentCitation>,
        withheld: Vec<usize>,
        /// Permitted only because of an emergency: flagged for review.
        break_glass: bool,
    },
    Deny {
        reason: DenyReason,
        consent: Option<ConsentCitation>,
    },
}

/// The consent that governs now: the tenant's most recent choice.
pub fn governing(consents: &[ConsentVersion]) -> Option<&ConsentVersion> {
    latest_versions(consents)
        .into_iter()
        .filter(|c| {
            matches!(
                c.terms.status,
                ConsentStatus::Active | ConsentStatus::Inactive
            )
        })
        .max_by(|a, b| {
            a.terms
                .recorded
                .cmp(&b.terms.recorded)
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// The latest version of each consent.
pub fn latest_versions(consents: &[ConsentVersion]) -> Vec<&ConsentVersion> {
    latest_by(consents, |c| (c.id.as_str(), c.version))
}

/// The latest version of each consent among `items`, whatever wraps the version.
pub fn latest_by<T>(items: &[T], key: impl Fn(&T) -> (&str, u32)) -> Vec<&T> {
    let mut latest: Vec<&T> = Vec::new();
    for c in items {
        let (id, version) = key(c);
        match latest.iter_mut().find(|l| key(l).0 == id) {
            Some(l) if key(l).1 < version => *l = c,
            Some(_) => {}
            None => latest.push(c),
        }
    }
    latest
}

/// The items a consent's denied labels withhold. Both sides are widened along the label
/// hierarchy, whenever they were recorded: an item labelled OPIOIDUD is substance-use
/// information to a denial of SUD, and a denial of OPIOIDUD withholds what codes can only
/// call substance use.
#[cfg(test)]
fn withheld(
    terms: Option<&ConsentTerms>,
    item_labels: &[BTreeSet<String>],
    hierarchy: &LabelHierarchy,
) -> Vec<usize> {
    let Some(t) = terms else { return Vec::new() };
    withheld_labels(&t.denied_labels, item_labels, hierarchy)
}

/// The labels withheld from this exchange: the consent's own, and those it denies the
/// partner in this direction (none on housing's own reads).
/// Borrowed unless the partner has restrictions of its own: this runs on every exchange.
fn denied_for<'t>(t: &'t ConsentTerms, req: &ExchangeRequest) -> std::borrow::Cow<'t, [String]> {
    let receiving = match req.flow {
        Flow::Outbound => true,
        Flow::Inbound => false,
        Flow::HousingUse => return (&t.denied_labels[..]).into(),
    };
    let mut own = t
        .partner_denials
        .iter()
        .filter(|d| &d.partner == req.partner && d.receiving == receiving)
        .peekable();
    if own.peek().is_none() {
        return (&t.denied_labels[..]).into();
    }
    let mut denied = t.denied_labels.clone();
    denied.extend(own.flat_map(|d| d.labels.iter().cloned()));
    denied.into()
}

fn withheld_labels(
    denied: &[String],
    item_labels: &[BTreeSet<String>],
    hierarchy: &LabelHierarchy,
) -> Vec<usize> {
    if denied.is_empty() {
        return Vec::new();
    }
    let mut denied: BTreeSet<String> = denied.iter().cloned().collect();
    widen(&mut denied, hierarchy);
    item_labels
        .iter()
        .enumerate()
        .filter(|(_, labels)| labels.iter().any(|l| reaches(l, &denied, hierarchy, 0)))
        .map(|(i, _)| i)
        .collect()
}

/// Whether `label`, or a label it implies, is in `set`. Hierarchies are a level or two
/// deep; the bound only stops a cyclic one.
fn reaches(label: &str, set: &BTreeSet<String>, hierarchy: &LabelHierarchy, depth: u8) -> bool {
    set.contains(label)
        || (depth < 8
            && hierarchy
                .get(label)
                .into_iter()
                .flatten()
                .any(|broader| reaches(broader, set, hierarchy, depth + 1)))
}

/// Decides one exchange for one tenant, given all versions of the tenant's consents.
pub fn decide(consents: &[ConsentVersion], req: &ExchangeRequest) -> Decision {
    let governing = governing(consents);
    let citation = governing.map(ConsentVersion::citation);
    // Restrictions the tenant stated hold on every permit, an emergency's included.
    let permit = |break_glass| {
        let mut withheld = withheld_labels(
            &governing.map_or_else(Default::default, |c| denied_for(&c.terms, req)),
            req.item_labels,
            req.label_hierarchy,
        );
        // What a partner may not send housing is not housing's to read or pass on.
        if req.flow != Flow::Inbound
            && let Some(c) = governing
        {
            withheld.extend(withheld_from_senders(&c.terms, req));
            withheld.sort_unstable();
            withheld.dedup();
        }
        Decision::Permit {
            withheld,
            consent: citation.clone(),
            break_glass,
        }
    };
    if req.flow == Flow::HousingUse {
        return permit(false);
    }
    let refusal = match governing {
        None => Some(DenyReason::NoConsent),
        Some(c) => check(&c.terms, req),
    };
    match refusal {
        None => permit(false),
        // The first refusal found may be one an emergency overrides (expired, say) while
        // a later row would not be: the partner the tenant never named stays refused.
        Some(reason) if req.break_glass.is_some() && reason.break_glass_may_override() => {
            if governing.is_some_and(|c| !partner_covered(&c.terms, req)) {
                Decision::Deny {
                    reason: DenyReason::PartnerNotCovered,
                    consent: citation,
                }
            } else {
                permit(true)
            }
        }
        Some(reason) => Decision::Deny {
            reason,
            consent: citation,
        },
    }
}

/// Housing use: the items each partner's sending-side restriction withholds, among the
/// items that partner sent.
fn withheld_from_senders(t: &ConsentTerms, req: &ExchangeRequest) -> Vec<usize> {
    let sent_by = |i: usize, partner: &PartnerId| {
        req.item_senders.get(i).and_then(Option::as_ref) == Some(partner)
    };
    t.partner_denials
        .iter()
        .filter(|d| !d.receiving)
        .flat_map(|d| {
            withheld_labels(&d.labels, req.item_labels, req.label_hierarchy)
                .into_iter()
                .filter(|&i| sent_by(i, &d.partner))
        })
        .collect()
}

/// Row 7: the consent names this partner in the role the exchange's direction needs.
fn partner_covered(t: &ConsentTerms, req: &ExchangeRequest) -> bool {
    let covered = match req.flow {
        Flow::Inbound => &t.senders,
        Flow::Outbound | Flow::HousingUse => &t.recipients,
    };
    covered.contains(req.partner)
}

/// Rows 2–8 of the decision table for the governing consent.
fn check(t: &ConsentTerms, req: &ExchangeRequest) -> Option<DenyReason> {
    if t.status == ConsentStatus::Inactive {
        return Some(DenyReason::Revoked);
    }
    if t.refused {
        return Some(DenyReason::Refused);
    }
    if let Some(start) = t.start
        && req.at < start
    {
        return Some(DenyReason::NotYetActive { from: start });
    }
    if let Some(end) = t.end
        && req.at >= end
    {
        return Some(DenyReason::Expired { on: end });
    }
    if req.renewal_due && req.block_while_renewal_due {
        return Some(DenyReason::RenewalDue);
    }
    if !partner_covered(t, req) {
        return Some(DenyReason::PartnerNotCovered);
    }
    // An emergency purpose the consent does not list is refused here and then, with a
    // stated reason, permitted as break-glass.
    if !t.purposes.is_empty() && !t.purposes.iter().any(|p| purpose_covers(p, req.purpose)) {
        return Some(DenyReason::PurposeNotCovered);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant who agreed to sharing for treatment agreed to the care coordination every
    /// routine exchange is; not to emergency access, which stays break-glass.
    #[test]
    fn a_consent_for_treatment_covers_care_coordination_but_not_emergencies() {
        assert!(purpose_covers("TREAT", "COC"));
        assert!(purpose_covers("COC", "COC"));
        assert!(!purpose_covers("COC", "TREAT"));
        for emergency in EMERGENCY_PURPOSES {
            assert!(!purpose_covers("TREAT", emergency));
        }
    }

    /// Labels recorded before the hierarchy was applied at write time (an old consent
    /// denying OPIOIDUD, an old item labelled OPIOIDUD) are still matched along it.
    #[test]
    fn denied_and_item_labels_match_along_the_label_hierarchy() {
        let hierarchy: LabelHierarchy = [("OPIOIDUD", vec!["SUD", "ETH"]), ("STD", vec!["SEX"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect();
        let denying = |labels: &[&str]| ConsentTerms {
            status: ConsentStatus::Active,
            recorded: OffsetDateTime::UNIX_EPOCH,
            refused: false,
            start: None,
            end: None,
            senders: Vec::new(),
            recipients: Vec::new(),
            purposes: Vec::new(),
            denied_labels: labels.iter().map(|l| l.to_string()).collect(),
            partner_denials: Vec::new(),
        };
        let items = |sets: &[&[&str]]| -> Vec<BTreeSet<String>> {
            sets.iter()
                .map(|s| s.iter().map(|l| l.to_string()).collect())
                .collect()
        };
        let labelled = items(&[&["SUD"], &["OPIOIDUD"], &["STD"], &[]]);
        assert_eq!(
            withheld(Some(&denying(&["OPIOIDUD"])), &labelled, &hierarchy),
            [0, 1]
        );
        assert_eq!(
            withheld(Some(&denying(&["SUD"])), &labelled, &hierarchy),
            [0, 1]
        );
        assert_eq!(
            withheld(Some(&denying(&["SEX"])), &labelled, &hierarchy),
            [2]
        );
        // Without a hierarchy, labels match exactly, as before.
        assert_eq!(
            withheld(Some(&denying(&["SUD"])), &labelled, &LabelHierarchy::new()),
            [0]
        );
    }
    use time::macros::datetime;

    fn terms(
        status: ConsentStatus,
        recorded: OffsetDateTime,
        partners: &[&str],
        deny: &[&str],
    ) -> ConsentTerms {
        let p: Vec<PartnerId> = partners.iter().map(|p| PartnerId::new(*p)).collect();
        ConsentTerms {
            status,
            recorded,
            refused: false,
            start: Some(datetime!(2026-01-01 00:00 UTC)),
            end: Some(datetime!(2027-01-01 00:00 UTC)),
            senders: p.clone(),
            recipients: p,
            purposes: vec!["COC".into()],
            denied_labels: deny.iter().map(|d| d.to_string()).collect(),
            partner_denials: Vec::new(),
        }
    }

    fn version(id: &str, version: u32, t: ConsentTerms) -> ConsentVersion {
        ConsentVersion {
            id: id.into(),
            version,
            terms: t,
        }
    }

    struct Ask<'a> {
        flow: Flow,
        partner: &'a str,
        purpose: &'a str,
        at: OffsetDateTime,
        labels: Vec<BTreeSet<String>>,
        senders: Vec<Option<PartnerId>>,
        renewal_due: bool,
        block: bool,
        glass: Option<BreakGlass>,
    }

    impl Default for Ask<'_> {
        fn default() -> Self {
            Self {
                flow: Flow::Inbound,
                partner: "clinic",
                purpose: "COC",
                at: datetime!(2026-11-23 10:00 UTC),
                labels: vec![],
                senders: vec![],
                renewal_due: false,
                block: false,
                glass: None,
            }
        }
    }

    fn ask(consents: &[ConsentVersion], a: Ask) -> Decision {
        let p = PartnerId::new(a.partner);
        decide(
            consents,
            &ExchangeRequest {
                flow: a.flow,
                partner: &p,
                purpose: a.purpose,
                item_labels: &a.labels,
                item_senders: &a.senders,
                at: a.at,
                renewal_due: a.renewal_due,
                block_while_renewal_due: a.block,
                break_glass: a.glass.as_ref(),
                label_hierarchy: &LabelHierarchy::new(),
            },
        )
    }

    /// Consent to share with the clinic and the MCO, but no substance use for the MCO
    /// when it receives from housing (`receiving`) or sends to it.
    fn mco_denied_sud(receiving: bool) -> ConsentTerms {
        let mut t = terms(
            ConsentStatus::Active,
            datetime!(2026-11-01 00:00 UTC),
            &["clinic", "mco"],
            &[],
        );
        t.partner_denials = vec![PartnerDenial {
            partner: PartnerId::new("mco"),
            receiving,
            labels: vec!["SUD".into()],
        }];
        t
    }

    /// A restriction for one partner holds for that partner, in that direction, only:
    /// "no substance-use details to the MCO" withholds them from the MCO receiving, not
    /// from the clinic receiving, nor from the MCO sending, nor from housing's own reads.
    #[test]
    fn a_restriction_for_one_partner_holds_for_it_in_its_direction_only() {
        let t = mco_denied_sud(true);
        let consents = [version("c", 1, t)];
        // What of an SUD-labelled item and an unlabelled one is withheld.
        fn withheld_of(consents: &[ConsentVersion], flow: Flow, partner: &str) -> Vec<usize> {
            let labels = vec![BTreeSet::from(["SUD".to_string()]), BTreeSet::new()];
            let ask_for = Ask {
                flow,
                partner,
                labels,
                ..Ask::default()
            };
            match ask(consents, ask_for) {
                Decision::Permit { withheld, .. } => withheld,
                Decision::Deny { reason, .. } => panic!("denied: {reason:?}"),
            }
        }
        assert_eq!(withheld_of(&consents, Flow::Outbound, "mco"), [0]);
        assert_eq!(
            withheld_of(&consents, Flow::Outbound, "clinic"),
            Vec::<usize>::new()
        );
        assert_eq!(
            withheld_of(&consents, Flow::Inbound, "mco"),
            Vec::<usize>::new()
        );
        assert_eq!(
            withheld_of(&consents, Flow::HousingUse, "mco"),
            Vec::<usize>::new()
        );
        // The other direction: what the MCO may not send to housing.
        let mut t = consents[0].terms.clone();
        t.partner_denials[0].receiving = false;
        let sending = [version("c", 2, t)];
        assert_eq!(withheld_of(&sending, Flow::Inbound, "mco"), [0]);
        assert_eq!(
            withheld_of(&sending, Flow::Outbound, "mco"),
            Vec::<usize>::new()
        );
    }

    /// A restriction on what one partner sends, added after it sent, hides what it sent
    /// from housing's own reads; the same labels from another partner stay in view.
    #[test]
    fn a_sending_restriction_hides_what_that_partner_already_sent() {
        let mut t = mco_denied_sud(false);
        let sud = || BTreeSet::from(["SUD".to_string()]);
        let read = |t: &ConsentTerms, senders: Vec<Option<PartnerId>>| {
            let a = Ask {
                flow: Flow::HousingUse,
                partner: "housing",
                labels: vec![sud(), BTreeSet::new(), sud(), sud()],
                senders,
                ..Ask::default()
            };
            match ask(&[version("c", 1, t.clone())], a) {
                Decision::Permit { withheld, .. } => withheld,
                Decision::Deny { reason, .. } => panic!("denied: {reason:?}"),
            }
        };
        let mco = Some(PartnerId::new("mco"));
        let clinic = Some(PartnerId::new("clinic"));
        // The MCO's SUD item is withheld; its unlabelled one, the clinic's SUD item and
        // an item whose sender is unknown are not.
        assert_eq!(read(&t, vec![mco.clone(), mco, clinic, None]), [0]);
        // Nor does housing pass it on to another partner.
        let a = Ask {
            flow: Flow::Outbound,
            partner: "clinic",
            labels: vec![sud()],
            senders: vec![Some(PartnerId::new("mco"))],
            ..Ask::default()
        };
        assert!(matches!(
            ask(&[version("c", 1, t.clone())], a),
            Decision::Permit { withheld, .. } if withheld == [0]
        ));
        // A restriction on what the MCO receives does not touch housing's reads.
        t.partner_denials[0].receiving = true;
        assert_eq!(
            read(&t, vec![Some(PartnerId::new("mco")); 4]),
            Vec::<usize>::new()
        );
    }

    fn reason(d: Decision) -> Option<&'static str> {
        match d {
            Decision::Deny { reason, .. } => Some(reason.code()),
            Decision::Permit { .. } => None,
        }
    }

    fn glass() -> Option<BreakGlass> {
        Some(BreakGlass {
            purpose: "BTG".into(),
            reason: "tenant found unresponsive; staff need medication list".into(),
        })
    }

    const JAN: OffsetDateTime = datetime!(2026-01-05 00:00 UTC);
    const MAR: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);

    #[test]
    fn row_1_no_consent_denies_unless_break_glass() {
        assert_eq!(reason(ask(&[], Ask::default())), Some("no-consent"));
        assert!(matches!(
            ask(
                &[],
                Ask {
                    glass: glass(),
                    ..Default::default()
                }
            ),
            Decision::Permit {
                break_glass: true,
                consent: None,
                ..
            }
        ));
    }

    #[test]
    fn row_2_revoked_denies_even_with_break_glass() {
        let c = [
            version("c", 1, terms(ConsentStatus::Active, JAN, &["clinic"], &[])),
            version(
                "c",
                2,
                terms(ConsentStatus::Inactive, JAN, &["clinic"], &[]),
            ),
        ];
        assert_eq!(reason(ask(&c, Ask::default())), Some("consent-revoked"));
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    glass: glass(),
                    ..Default::default()
                }
            )),
            Some("consent-revoked")
        );
    }

    #[test]
    fn row_3_a_refusal_denies_even_with_break_glass() {
        let mut t = terms(ConsentStatus::Active, JAN, &[], &[]);
        t.refused = true;
        let c = [version("c", 1, t)];
        assert_eq!(reason(ask(&c, Ask::default())), Some("consent-refused"));
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    glass: glass(),
                    ..Default::default()
                }
            )),
            Some("consent-refused")
        );
    }

    #[test]
    fn rows_4_and_5_period_bounds_and_break_glass() {
        let c = [version(
            "c",
            1,
            terms(ConsentStatus::Active, JAN, &["clinic"], &[]),
        )];
        let before = Ask {
            at: datetime!(2025-12-31 23:59 UTC),
            ..Default::default()
        };
        assert_eq!(reason(ask(&c, before)), Some("consent-not-yet-active"));
        let last_moment = Ask {
            at: datetime!(2026-12-31 23:59 UTC),
            ..Default::default()
        };
        assert_eq!(reason(ask(&c, last_moment)), None);
        let expired = Ask {
            at: datetime!(2027-01-01 00:00 UTC),
            ..Default::default()
        };
        assert_eq!(reason(ask(&c, expired)), Some("consent-expired"));
        let emergency = Ask {
            at: datetime!(2027-01-01 00:00 UTC),
            glass: glass(),
            ..Default::default()
        };
        assert!(matches!(
            ask(&c, emergency),
            Decision::Permit {
                break_glass: true,
                ..
            }
        ));
        // An emergency overrides the expiry, never the tenant's choice of partners: the
        // expired consent names only the clinic.
        for at in [
            datetime!(2027-01-01 00:00 UTC),
            datetime!(2025-12-31 23:59 UTC),
        ] {
            let elsewhere = Ask {
                at,
                partner: "mco",
                glass: glass(),
                ..Default::default()
            };
            assert_eq!(reason(ask(&c, elsewhere)), Some("partner-not-covered"));
        }
    }

    #[test]
    fn row_6_renewal_due_blocks_only_when_the_site_says_so() {
        let c = [version(
            "c",
            1,
            terms(ConsentStatus::Active, JAN, &["clinic"], &[]),
        )];
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    renewal_due: true,
                    ..Default::default()
                }
            )),
            None
        );
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    renewal_due: true,
                    block: true,
                    ..Default::default()
                }
            )),
            Some("renewal-due")
        );
        let emergency = Ask {
            renewal_due: true,
            block: true,
            glass: glass(),
            ..Default::default()
        };
        assert!(matches!(
            ask(&c, emergency),
            Decision::Permit {
                break_glass: true,
                ..
            }
        ));
    }

    #[test]
    fn row_7_partner_and_direction() {
        let mut t = terms(ConsentStatus::Active, JAN, &["clinic"], &[]);
        t.recipients.clear(); // the clinic may send to housing but not receive from it
        let c = [version("c", 1, t)];
        assert_eq!(reason(ask(&c, Ask::default())), None);
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    flow: Flow::Outbound,
                    ..Default::default()
                }
            )),
            Some("partner-not-covered")
        );
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    partner: "mco",
                    ..Default::default()
                }
            )),
            Some("partner-not-covered")
        );
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    partner: "mco",
                    glass: glass(),
                    ..Default::default()
                }
            )),
            Some("partner-not-covered")
        );
    }

    #[test]
    fn row_8_purpose() {
        let c = [version(
            "c",
            1,
            terms(ConsentStatus::Active, JAN, &["clinic"], &[]),
        )];
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    purpose: "HPAYMT",
                    ..Default::default()
                }
            )),
            Some("purpose-not-covered")
        );
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    purpose: "BTG",
                    ..Default::default()
                }
            )),
            Some("purpose-not-covered")
        );
        let emergency = Ask {
            purpose: "BTG",
            glass: glass(),
            ..Default::default()
        };
        assert!(matches!(
            ask(&c, emergency),
            Decision::Permit {
                break_glass: true,
                ..
            }
        ));
    }

    #[test]
    fn row_9_the_latest_choice_governs_and_its_deny_provision_withholds_labelled_items() {
        let both = version(
            "c",
            1,
            terms(ConsentStatus::Active, JAN, &["clinic", "mco"], &["SUD"]),
        );
        let clinic_only = version(
            "d",
            1,
            terms(ConsentStatus::Active, MAR, &["clinic"], &["SUD"]),
        );
        let sud: BTreeSet<String> = ["SUD".to_string()].into();
        let plain = BTreeSet::new();
        let d = ask(
            std::slice::from_ref(&both),
            Ask {
                partner: "mco",
                labels: vec![plain.clone(), sud.clone()],
                ..Default::default()
            },
        );
        assert_eq!(
            d,
            Decision::Permit {
                consent: Some(ConsentCitation {
                    id: "c".into(),
                    version: 1
                }),
                withheld: vec![1],
                break_glass: false
            }
        );
        // The tenant narrows to the clinic only: the MCO is refused from then on.
        let c = [both, clinic_only];
        assert_eq!(
            reason(ask(
                &c,
                Ask {
                    partner: "mco",
                    ..Default::default()
                }
            )),
            Some("partner-not-covered")
        );
        assert_eq!(reason(ask(&c, Ask::default())), None);
        // Restrictions still hold under break-glass.
        let emergency = Ask {
            labels: vec![sud],
            glass: glass(),
            at: datetime!(2027-02-01 00:00 UTC),
            ..Default::default()
        };
        assert!(
            matches!(ask(&c, emergency), Decision::Permit { withheld, break_glass: true, .. } if withheld == vec![0])
        );
    }

    #[test]
    fn proposals_and_drafts_decide_nothing() {
        let c = [version(
            "p",
            1,
            terms(ConsentStatus::Proposed, MAR, &["clinic"], &[]),
        )];
        assert_eq!(reason(ask(&c, Ask::default())), Some("no-consent"));
    }

    #[test]
    fn housing_use_keeps_its_record_but_honours_restrictions() {
        let c = [version(
            "c",
            2,
            terms(ConsentStatus::Inactive, JAN, &["clinic"], &["SUD"]),
        )];
        let sud: BTreeSet<String> = ["SUD".to_string()].into();
        let d = ask(
            &c,
            Ask {
                flow: Flow::HousingUse,
                labels: vec![BTreeSet::new(), sud],
                ..Default::default()
            },
        );
        assert!(matches!(d, Decision::Permit { withheld, .. } if withheld == vec![1]));
    }
}
