//! Outbound delivery: the relay drains the durable outbox to partners' FHIR endpoints.
//!
//! At-least-once: a note stays `pending` until a partner answers 2xx, survives restarts
//! (it is a row in the store), and is retried with exponential backoff and jitter. Each
//! delivery is a conditional create (`ifNoneExist` on Hearth's reference identifier), so
//! a retry after a lost answer creates nothing twice. Consent is decided again before
//! every attempt: a revocation during an outage stops the note. A refusal of the note
//! itself (400, 422 and the other 4xx not in [`RETRIED_4XX`]) or the configured deadline
//! dead-letters it; the rest of the queue carries on. Every attempt is audited.
//!
//! Invariant: the relay reads the note's prepared payload; it never builds FHIR from
//! anything inbound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::Notify;

use crate::audit::{AuditEntry, Direction, Outcome};
use crate::auth::{Principal, Role};
use crate::clock::rfc3339;
use crate::consent::Flow;
use crate::gateway::notes::{fact_refs, unix_ms};
use crate::gateway::{Call, Gateway};
use crate::ids::{PartnerId, ReferenceId};
use crate::store::{AttemptResult, Delivery};

/// Client errors that say nothing against the note, retried until the deadline like a
/// 5xx: a rotated token or certificate (401, 403), an endpoint missing while the
/// partner redeploys (404), a timeout or rate limit (408, 425, 429). A partner outage of
/// that kind must not dead-letter every note sent during it.
pub const RETRIED_4XX: &[u16] = &[401, 403, 404, 408, 425, 429];

/// Whether a partner's `status` refuses the note for good. After the Communication was
/// accepted, a client error is the Task's own (a partner with no Task endpoint answers
/// 404): retrying would not change it, short of a timeout or rate limit.
fn refuses_for_good(status: u16, after_communication: bool) -> bool {
    (400..500).contains(&status)
        && match after_communication {
            true => !matches!(status, 408 | 425 | 429),
            false => !RETRIED_4XX.contains(&status),
        }
}

/// The relay: cheap to clone, shares its wake-up signal.
#[derive(Clone)]
pub struct Relay {
    gateway: Arc<Gateway>,
    clients: Arc<HashMap<PartnerId, reqwest::Client>>,
    wake: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Notes being attempted now, and to whom. A pass does not wait for them, so a
    /// partner that is slow to answer holds up only its own notes.
    in_flight: Arc<std::sync::Mutex<HashMap<ReferenceId, PartnerId>>>,
}

impl Relay {
    pub fn new(
        gateway: Arc<Gateway>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let timeout = Duration::from_millis(gateway.config.relay.attempt_timeout_ms);
        let mut clients = HashMap::new();
        for p in gateway
            .config
            .partners
            .iter()
            .filter(|p| p.fhir_base_url.is_some())
        {
            // No redirects: reqwest would repeat a POST as a bodiless GET after a 301-303,
            // and that GET's 2xx would record a note as delivered that never arrived. A
            // 3xx is retried like any other failure, and shows in the note's last error.
            let mut builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none());
            if let Some(ca) = &p.ca_file {
                // Only the configured roots vouch for this partner.
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
            }
            if let Some(identity) = &p.client_identity {
                let pem = std::fs::read(identity)
                    .with_context(|| format!("reading {}", identity.display()))?;
                builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
            }
            let client = builder.build()?;
            clients.insert(p.id.clone(), client);
        }
        Ok(Self {
            gateway,
            clients: Arc::new(clients),
            wake: Arc::new(Notify::new()),
            metrics,
            in_flight: Arc::default(),
        })
    }

    /// Something was queued: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown` resolves; attempts in flight finish first.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let poll = Duration::from_millis(self.gateway.config.relay.poll_interval_ms);
        let mut attempts = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            self.tick(&mut attempts).await;
            while attempts.try_join_next().is_some() {}
            tokio::select! {
                _ = &mut shutdown => {
                    while attempts.join_next().await.is_some() {}
                    return;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One pass: starts every delivery due now that is not already being attempted (at
    /// most `max_in_flight` per partner, counting those in flight), without waiting for
    /// them. Returns how many were started.
    pub async fn tick(&self, attempts: &mut tokio::task::JoinSet<()>) -> usize {
        let g = &self.gateway;
        let now = unix_ms(g.now());
        let per_partner = g
            .config
            .partners
            .iter()
            .map(|p| p.max_in_flight)
            .max()
            .unwrap_or(1);
        let due = match g.store.due_deliveries(now, per_partner).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "relay could not read the outbox");
                return 0;
            }
        };
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts: HashMap<PartnerId, usize> = HashMap::new();
        for partner in in_flight.values() {
            *counts.entry(partner.clone()).or_default() += 1;
        }
        let mut started = 0;
        for d in due {
            if in_flight.contains_key(&d.reference_id) {
                continue;
            }
            let limit = g.config.partner(&d.partner).map_or(1, |p| p.max_in_flight);
            let n = counts.entry(d.partner.clone()).or_default();
            if *n >= limit {
                continue;
            }
            *n += 1;
            started += 1;
            in_flight.insert(d.reference_id, d.partner.clone());
            let relay = self.clone();
            attempts.spawn(async move {
                let _done = Attempting {
                    relay: relay.clone(),
                    note: d.reference_id,
                };
                relay.attempt(d).await;
            });
        }
        started
    }

    async fn attempt(&self, d: Delivery) {
        let g = &self.gateway;
        // A pass that read the outbox just before another attempt of this note finished
        // (and left the in-flight set) would send it a second time: go ahead only while
        // the note is as that pass read it.
        match g.store.still_due(&d.reference_id, d.attempts).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(note = %d.reference_id, error = %e, "relay could not check a note is still due; a later pass tries it");
                return;
            }
        }
        let at = g.now();
        let call = Call {
            reference_id: ReferenceId::new(),
            principal: Principal {
                id: "hearth-relay".into(),
                org: PartnerId::new("hearth"),
                role: Role::Admin,
            },
            at,
            request: format!("DELIVER note {}", d.reference_id),
            parent: Some(d.reference_id),
            break_glass: None,
        };
        let mut audit = call.audit("deliver", Direction::Outbound);
        audit.partner = Some(d.partner.clone());
        audit.tenant = Some(d.tenant.clone());
        audit.resource_type = Some("Bundle".into());
        audit.related = Some(d.reference_id);

        // A fact its sender has since retracted or corrected (a notice about the wrong
        // patient) must not go out through a forward queued before.
        let facts = fact_refs(&d.note);
        let ids = facts.iter().filter_map(|f| f.id.clone()).collect();
        let retired = g.store.retired_items(ids).await;
        let mut labels: Vec<std::collections::BTreeSet<String>> = facts
            .iter()
            .map(|f| f.labels.iter().cloned().collect())
            .collect();
        // The worker's own words, read again with the current word list (a note queued
        // before a word was listed is held to it too); a forward's covering line is
        // Hearth's text, not words about the tenant.
        let forward = g.is_forward(&d.note);
        let text_labels: std::collections::BTreeSet<String> = if forward {
            Default::default()
        } else {
            g.words_labels(
                d.note["reason"].as_str(),
                d.note["requested_action"].as_str(),
            )
            .into_iter()
            .flatten()
            .collect()
        };
        labels.push(text_labels.clone());
        let ids: Vec<&str> = facts
            .iter()
            .map(|f| f.id.as_deref().unwrap_or_default())
            .chain([""])
            .collect();
        let held = crate::gateway::Held {
            ids: &ids,
            labels: &labels,
        };
        let draft = audit.clone();
        let mut decision = g
            .decide_held(
                &call,
                &d.tenant,
                Flow::Outbound,
                &d.partner,
                held,
                &mut audit,
            )
            .await;
        // A note queued under an emergency goes out under it (the worker was told it was
        // accepted), but only where the consent alone refuses it, and not once an auditor
        // has found the emergency unjustified. (An emergency never releases restricted
        // items, so a permit that withholds some is final either way.)
        let refused = matches!(decision, Err(crate::error::Error::Forbidden(_)));
        if refused && let Some(emergency) = &d.emergency {
            let under = Call {
                break_glass: Some(emergency.clone()),
                ..call.clone()
            };
            audit = draft;
            decision = g
                .decide_held(
                    &under,
                    &d.tenant,
                    Flow::Outbound,
                    &d.partner,
                    held,
                    &mut audit,
                )
                .await;
            // The delivery says so; the stated reason is already on the review list, once,
            // under the note's reference ID.
            audit.break_glass_reason = None;
            audit.break_glass_reason_digest = None;
        }
        let restricted = decision.as_ref().is_ok_and(|p| !p.withheld.is_empty());
        if restricted {
            audit.reason =
                Some("a fact or the note's text is now restricted by the tenant's consent".into());
        }
        // Only a refusal stops a note; failing to read the consent (the store busy or
        // failing) is retried like a failed send.
        let retry = |error: String, audit: &mut AuditEntry| {
            audit.outcome = Outcome::Failed;
            audit.reason = Some(error.clone());
            // The last attempt is made at the deadline, not a backoff short of it: a
            // partner back within the window the operator configured gets the note.
            if unix_ms(at) >= d.give_up_ms {
                AttemptResult::Dead {
                    error: format!("not delivered before the deadline; last error: {error}"),
                }
            } else {
                let next_ms = (unix_ms(at) + self.backoff_ms(d.attempts)).min(d.give_up_ms);
                AttemptResult::Retry { next_ms, error }
            }
        };
        // Nor may an answer to a partner's notice the partner has since retracted.
        let answer_withdrawn = match d.note["in_response_to"].as_str() {
            None => Ok(false),
            Some(r) => g
                .notice_answered(r, &d.partner, &d.tenant)
                .await
                .map(|notice| notice.is_none()),
        };
        let result = if let Err(e) = &retired {
            retry(
                format!("could not check the facts are current: {e}"),
                &mut audit,
            )
        } else if let Err(e) = &answer_withdrawn {
            retry(
                format!("could not check the notice it answers is current: {e}"),
                &mut audit,
            )
        } else if let Ok(true) = answer_withdrawn {
            audit.outcome = Outcome::Refused;
            audit.status = 409;
            audit.reason = Some("the notice it answers was retracted by its sender".into());
            AttemptResult::Stopped {
                reason: "the notice it answers was retracted by its sender before delivery".into(),
            }
        } else if let Ok(ids) = &retired
            && !ids.is_empty()
        {
            audit.outcome = Outcome::Refused;
            audit.status = 409;
            audit.reason = Some("a fact was retracted or corrected by its sender".into());
            AttemptResult::Stopped {
                reason: format!(
                    "{} was retracted or corrected by its sender before delivery",
                    ids.join(", ")
                ),
            }
        } else if let Err(e) = &decision
            && !matches!(e, crate::error::Error::Forbidden(_))
        {
            retry(format!("could not decide consent: {e}"), &mut audit)
        } else if decision.is_err() || restricted {
            audit.outcome = Outcome::Refused;
            audit.status = 403;
            AttemptResult::Stopped {
                reason: format!(
                    "consent no longer covers this partner ({})",
                    audit.reason.clone().unwrap_or_default()
                ),
            }
        } else {
            let sent = self.send(&d).await.unwrap_or_else(|e| Sent {
                answer: Err(e),
                communication_accepted: false,
            });
            audit.status = *sent.answer.as_ref().unwrap_or(&0);
            // What the partner now holds, once it has accepted the Communication (which
            // carries the facts and the words), whatever became of a Task after it: the
            // accounting of disclosures counts deliveries, not notes queued.
            if sent.communication_accepted {
                audit.items_written = facts;
                // A worker's note shares its own words too, with what they carry (a
                // forward's covering line says nothing about the tenant).
                if !forward {
                    audit.items_written.push(crate::audit::ItemRef {
                        kind: crate::gateway::notes::NOTE_TEXT.into(),
                        id: None,
                        labels: text_labels.iter().cloned().collect(),
                    });
                }
            }
            let partly = |what: String| match sent.communication_accepted {
                true => {
                    format!("the partner accepted the Communication, then for its Task: {what}")
                }
                false => what,
            };
            match &sent.answer {
                Ok(s) if (200..300).contains(s) => {
                    audit.outcome = Outcome::Accepted;
                    AttemptResult::Delivered
                }
                Ok(s) if refuses_for_good(*s, sent.communication_accepted) => {
                    let error = partly(format!("the partner refused with HTTP {s}"));
                    audit.outcome = Outcome::Failed;
                    audit.reason = Some(error.clone());
                    AttemptResult::Dead {
                        error: format!("{error}; it will not be retried"),
                    }
                }
                Ok(s) => retry(partly(format!("the partner answered HTTP {s}")), &mut audit),
                Err(e) => retry(partly(e.clone()), &mut audit),
            }
        };
        self.metrics
            .delivery(d.partner.as_str(), result_kind(&result));
        tracing::info!(note = %d.reference_id, partner = %d.partner, result = ?result_kind(&result), "delivery attempt");
        if let Err(e) = g
            .store
            .record_attempt(d.reference_id, result, rfc3339(at), audit)
            .await
        {
            tracing::error!(error = %e, note = %d.reference_id, "could not record a delivery attempt; it will be retried");
        }
    }

    /// Exponential backoff with ±25% jitter; no delay exceeds `max_backoff_secs`.
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let r = &self.gateway.config.relay;
        let base = r
            .initial_backoff_secs
            .saturating_mul(1u64 << attempts.min(20))
            .min(r.max_backoff_secs)
            * 1000;
        let max = r.max_backoff_secs as f64 * 1000.0;
        let delay = base as f64 * rand::random_range(0.75..=1.25);
        // Jittered within the cap too, so notes held back together do not all come due
        // at exactly the maximum.
        (if delay > max {
            max * rand::random_range(0.75..=1.0)
        } else {
            delay
        }) as i64
    }

    /// Sends the note; the partner's HTTP status, or a transport error.
    async fn send(&self, d: &Delivery) -> Result<Sent, String> {
        let partner = self
            .gateway
            .config
            .partner(&d.partner)
            .ok_or_else(|| format!("partner {} is no longer configured", d.partner))?;
        let base = partner
            .fhir_base_url
            .as_deref()
            .ok_or_else(|| format!("partner {} has no fhir_base_url", d.partner))?
            .trim_end_matches('/');
        let client = self
            .clients
            .get(&d.partner)
            .ok_or("no client for this partner")?;
        let request = |url: String, body: &Value, if_none_exist: Option<&str>| {
            let mut r = client
                .post(url)
                .header("content-type", crate::fhir::FHIR_JSON)
                .header("x-request-id", d.reference_id.to_string())
                .body(body.to_string());
            if let Some(t) = &partner.bearer_token {
                r = r.bearer_auth(t.expose());
            }
            if let Some(c) = if_none_exist {
                r = r.header("if-none-exist", c);
            }
            r
        };
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                "the partner did not answer in time".to_string()
            } else if e.is_connect() {
                "could not connect to the partner".to_string()
            } else {
                format!("transport error: {e}")
            }
        };
        if partner.supports_transactions {
            let response = request(base.to_string(), &d.payload, None)
                .send()
                .await
                .map_err(describe)?;
            let status = response.status().as_u16();
            return Ok(Sent {
                answer: Ok(status),
                communication_accepted: (200..300).contains(&status),
            });
        }
        // Plain POSTs, each conditional on the identifier, so duplicates are detectable.
        // The Communication comes first; a Task, if any, names it.
        let mut last = 200;
        let mut communication_accepted = false;
        for entry in d.payload["entry"].as_array().into_iter().flatten() {
            let ty = entry
                .pointer("/request/url")
                .and_then(Value::as_str)
                .unwrap_or("Communication");
            let cond = entry
                .pointer("/request/ifNoneExist")
                .and_then(Value::as_str);
            let resource = without_bundle_references(&entry["resource"]);
            let response = match request(format!("{base}/{ty}"), &resource, cond)
                .send()
                .await
            {
                Ok(r) => r,
                // The Communication may already be with the partner: say so.
                Err(e) => {
                    return Ok(Sent {
                        answer: Err(describe(e)),
                        communication_accepted,
                    });
                }
            };
            last = response.status().as_u16();
            if !(200..300).contains(&last) {
                break;
            }
            communication_accepted = true;
        }
        Ok(Sent {
            answer: Ok(last),
            communication_accepted,
        })
    }
}

/// What a partner answered one attempt.
struct Sent {
    /// The last status (the Bundle's, or the first plain POST's that was not a 2xx), or
    /// the transport error that ended the attempt.
    answer: Result<u16, String>,
    /// The partner holds the Communication (with the note's facts and words), even if
    /// the Task after it was refused.
    communication_accepted: bool,
}

fn result_kind(r: &AttemptResult) -> &'static str {
    match r {
        AttemptResult::Delivered => "delivered",
        AttemptResult::Retry { .. } => "retry",
        AttemptResult::Dead { .. } => "dead-letter",
        AttemptResult::Stopped { .. } => "stopped",
    }
}

/// A note being attempted. However the attempt ends (a panic included), the note leaves
/// the in-flight set, so it is tried again at a later pass rather than stuck. It does not
/// wake the relay: an attempt whose result could not be recorded is still due, and an
/// immediate pass would send it again at once, over and over while the store fails.
struct Attempting {
    relay: Relay,
    note: ReferenceId,
}

impl Drop for Attempting {
    fn drop(&mut self) {
        self.relay
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.note);
    }
}

/// A Bundle entry's resource for a plain create: references to other entries
/// (`urn:uuid:`) mean nothing outside the Bundle and are dropped where the reference
/// also names its target by identifier (the Task's `focus`).
fn without_bundle_references(resource: &Value) -> Value {
    let mut resource = resource.clone();
    if let Some(focus) = resource.get_mut("focus").and_then(Value::as_object_mut)
        && focus.contains_key("identifier")
        && focus
            .get("reference")
            .and_then(Value::as_str)
            .is_some_and(|r| r.starts_with("urn:uuid:"))
    {
        focus.remove("reference");
    }
    resource
}

/// Audit entry helper for operators replaying a dead letter.
pub fn replay_audit(call: &Call, note: ReferenceId) -> AuditEntry {
    let mut a = call.audit("replay-dead-letter", Direction::Internal);
    a.related = Some(note);
    a.outcome = Outcome::Accepted;
    a.status = 200;
    a
}
