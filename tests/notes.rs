//! Care coordination notes: structured, consented, built from dataset items, delivered
//! durably to a real partner server that fails, stalls and comes back.

mod common;

use std::time::Duration;

use common::partner::{Mode, Partner};
use common::*;
use serde_json::{Value, json};

const CLINIC_ID: &str = "riverside-clinic";

async fn ready(partner: &Partner) -> TestApp {
    ready_with(partner, |_| {}).await
}

/// As [`ready`], with the test's own changes to the config before Hearth starts.
async fn ready_with(partner: &Partner, shape: impl FnOnce(&mut hearth::config::Config)) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config_with(data.path(), Some(&partner.base));
    shape(&mut config);
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
    app.register_tenant().await;
    let consent = json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID, "bayview-health-plan"], "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &consent)
            .await
            .status,
        201
    );
    app
}

fn note(facts: Value) -> Value {
    json!({
        "tenant_id": "T-1001",
        "to": CLINIC_ID,
        "reason": "Tenant missed two pharmacy collections since discharge",
        "facts": facts,
        "requested_action": "Please confirm whether the new dose has started and if a blister pack can be arranged",
        "deadline": "2026-11-27",
        "priority": "urgent"
    })
}

/// The audit records of one action, oldest first.
async fn records_of(app: &TestApp, action: &str) -> Vec<Value> {
    let audit = app.get("/audit/records?limit=1000", AUDITOR).await;
    audit.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["action"] == action)
        .collect()
}

/// The audit records of forwards (notes a routing rule queued, or refused, for another
/// partner), oldest first.
async fn forward_records(app: &TestApp) -> Vec<Value> {
    records_of(app, "forward").await
}

/// A note to the clinic with a deadline after the consent's end (2027-05-31).
fn urgent_note() -> Value {
    let mut body = note(json!([]));
    body["deadline"] = json!("2027-06-03");
    body
}

/// Sends `body` as a note under break-glass, accepted; returns its reference ID.
async fn send_under_break_glass(app: &TestApp, body: &Value) -> String {
    let sent = app
        .post_json_with(
            "/housing/notes",
            HOUSING,
            body,
            &[
                ("X-Purpose-Of-Use", "BTG"),
                (
                    "X-Break-Glass-Reason",
                    "tenant found unwell at home, clinic must know today",
                ),
            ],
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    sent.body["reference_id"].as_str().unwrap().to_string()
}

/// Waits for the relay (which runs in the background) to bring the note to `state`.
async fn wait_for_state(app: &TestApp, reference: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = app
            .get(&format!("/housing/notes/{reference}"), HOUSING)
            .await;
        if t.body["delivery"]["state"] == state {
            return t.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "note never reached {state}: {:?}",
            t.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a note while the partner behaves as `mode`, and waits for the first attempt;
/// returns the note's reference ID.
async fn send_note_while(app: &TestApp, partner: &Partner, mode: Mode) -> String {
    partner.set(mode);
    let sent = app
        .post_json("/housing/notes", HOUSING, &note(json!([])))
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let reference = sent.body["reference_id"].as_str().unwrap().to_string();
    wait_for_attempts(partner, 1).await;
    reference
}

/// Brings the partner back, moves the clock past the next attempt (`minutes`), and waits
/// for the relay to stop the note rather than deliver it; returns the thread.
async fn resume_until_stopped(
    app: &TestApp,
    partner: &Partner,
    reference: &str,
    minutes: i64,
) -> Value {
    partner.set(Mode::Up);
    app.clock.advance(time::Duration::minutes(minutes));
    wait_for_state(app, reference, "stopped").await
}

/// The note thread's last delivery error.
fn last_error(thread: &Value) -> &str {
    thread["delivery"]["last_error"].as_str().unwrap()
}

async fn wait_for_attempts(partner: &Partner, n: usize) {
    wait_until("the relay never tried the partner", || {
        partner.attempts() >= n
    })
    .await;
}

/// Waits (up to 10 s) for the relay, running in the background, to make `done` true.
async fn wait_until(failure: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_note_is_delivered_as_valid_fhir_and_the_reply_is_threaded() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    assert_eq!(
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("appointment-notice.json")
        )
        .await
        .status,
        201
    );
    let items = app.get("/housing/tenants/T-1001", HOUSING).await.body["items"].clone();
    let appointment_id = items[0]["id"].as_str().unwrap().to_string();

    let sent = app
        .post_json(
            "/housing/notes",
            HOUSING,
            &note(json!([{"item_id": appointment_id}, {"item": "risk_flag", "flag": "falls", "status": "active"}])),
        )
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let reference = sent.body["reference_id"].as_str().unwrap().to_string();
    assert_eq!(
        sent.header("location").unwrap(),
        format!("/housing/notes/{reference}")
    );
    wait_for_state(&app, &reference, "delivered").await;

    // What the partner received: a transaction Bundle, valid against Hearth's profiles,
    // addressed by the clinic's own MRN, carrying the reference ID, with a Task for the deadline.
    let bundles = partner.bundles();
    assert_eq!(bundles.len(), 1);
    let bundle = &bundles[0];
    let (_, profiles) = shared();
    assert!(
        profiles.validate(bundle).is_empty(),
        "{:?}",
        profiles.validate(bundle)
    );
    for entry in bundle["entry"].as_array().unwrap() {
        let issues = profiles.validate(&entry["resource"]);
        assert!(issues.is_empty(), "{issues:?}");
        assert!(
            entry["request"]["ifNoneExist"]
                .as_str()
                .unwrap()
                .ends_with(&reference)
                || entry["request"]["ifNoneExist"]
                    .as_str()
                    .unwrap()
                    .ends_with("-task")
        );
    }
    let comm = &bundle["entry"][0]["resource"];
    assert_eq!(comm["identifier"][0]["value"], reference.as_str());
    assert_eq!(comm["subject"]["identifier"]["value"], "MRN-448812");
    assert_eq!(
        comm["recipient"][0]["reference"],
        "Organization/riverside-clinic"
    );
    assert_eq!(comm["priority"], "urgent");
    let task = &bundle["entry"][1]["resource"];
    assert_eq!(task["resourceType"], "Task");
    assert_eq!(task["code"]["coding"][0]["code"], "fulfill");
    assert_eq!(task["restriction"]["period"]["end"], "2026-11-27");
    assert_eq!(task["owner"]["reference"], "Organization/riverside-clinic");
    // Built from dataset items only: the practitioner named in the inbound appointment is not there.
    let text = bundle.to_string();
    let inbound = fixture("appointment-notice.json");
    let practitioner = inbound["contained"][2]["participant"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["actor"]["display"].as_str())
        .next()
        .unwrap()
        .to_string();
    assert!(!text.contains(&practitioner), "{practitioner} leaked");
    assert_eq!(
        partner.last_headers()["authorization"],
        "Bearer partner-secret"
    );
    assert_eq!(partner.last_headers()["x-request-id"], reference);

    // The clinic replies, with its next step (a booked appointment) in dataset form.
    let mut reply = fixture("appointment-notice.json");
    reply["identifier"][0]["value"] = json!("reply-to-note");
    reply["inResponseTo"] = json!([{"reference": format!("Communication/{reference}")}]);
    let r = app.post("/fhir/Communication", CLINIC, &reply).await;
    assert_eq!(r.status, 201, "{r:?}");
    let thread = app
        .get(&format!("/housing/notes/{reference}"), HOUSING)
        .await
        .body;
    assert_eq!(thread["responses"][0]["partner"], CLINIC_ID);
    assert_eq!(thread["responses"][0]["reference_id"], r.reference_id());
    assert_eq!(thread["responses"][0]["items"].as_array().unwrap().len(), 1);
    assert_eq!(thread["open"], false);
    assert!(
        app.feed_all()
            .await
            .iter()
            .any(|e| e["change"] == "response" && e["response"]["note"] == reference.as_str())
    );
    // Another partner cannot attach a reply to a note that was not sent to it.
    let mut stray = reply.clone();
    stray["identifier"][0]["value"] = json!("stray");
    stray["subject"] = json!({"identifier": {"system": MEMBER_SYSTEM, "value": "BHP-20931"}});
    let s = app.post("/fhir/Communication", MCO, &stray).await;
    assert_eq!(
        (s.status, s.error_expressions()),
        (422, vec!["Communication.inResponseTo[0]".to_string()])
    );

    // Every attempt is audited.
    let deliveries = records_of(&app, "deliver").await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["related"], reference.as_str());
}

/// A partner (or a proxy before it) that redirects has not received the note: it stays
/// pending with the redirect as its last error, never "delivered" by a follow-up GET.
#[tokio::test]
async fn a_redirect_is_not_a_delivery() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let reference = send_note_while(&app, &partner, Mode::Redirect).await;
    let t = wait_for_state(&app, &reference, "pending").await;
    assert!(last_error(&t).contains("302"), "{t}");
    assert!(partner.bundles().is_empty());
}

#[tokio::test]
async fn nothing_is_lost_or_duplicated_across_a_partner_outage_and_a_hearth_restart() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let reference = send_note_while(&app, &partner, Mode::Down).await;
    let t = wait_for_state(&app, &reference, "pending").await;
    assert!(last_error(&t).contains("503"), "{t}");

    // Hearth restarts while the partner is still down.
    let data = app.stop().await;
    let mut config = test_config_with(data.path(), Some(&partner.base));
    // The partner stalls next: a short deadline ends each stalled attempt.
    config.relay.attempt_timeout_ms = 300;
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
    // The partner stalls, then stores the note but its answer is lost.
    partner.set(Mode::Stall);
    app.clock.advance(time::Duration::minutes(2));
    wait_for_attempts(&partner, 2).await;
    partner.set(Mode::LoseAnswer);
    app.clock.advance(time::Duration::minutes(10));
    wait_for_attempts(&partner, 3).await;
    // It comes back; the retry finds the note already there and creates nothing twice.
    app.clock.advance(time::Duration::minutes(20));
    let t = wait_for_state(&app, &reference, "delivered").await;
    assert!(t["delivery"]["attempts"].as_u64().unwrap() >= 4, "{t}");
    let created = partner.created();
    assert_eq!(
        created.len(),
        2,
        "one Communication and one Task: {:?}",
        created.keys()
    );
    assert!(partner.bundles().len() >= 2, "the lost answer was retried");
}

#[tokio::test]
async fn a_revocation_during_an_outage_stops_queued_notes() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let reference = send_note_while(&app, &partner, Mode::Down).await;
    let consents = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    let id = consents.body["consents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.post_json(
            &format!("/housing/consents/{id}/revoke"),
            HOUSING,
            &json!({})
        )
        .await
        .status,
        200
    );
    let t = resume_until_stopped(&app, &partner, &reference, 5).await;
    assert!(last_error(&t).contains("consent-revoked"), "{t}");
    assert!(partner.created().is_empty());
    assert_eq!(t["open"], false);
}

#[tokio::test]
async fn a_refused_or_expired_note_is_dead_lettered_and_can_be_replayed() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    // A permanent refusal dead-letters at once; the queue carries on.
    partner.set(Mode::Refuse(400));
    let first = app
        .post_json("/housing/notes", HOUSING, &note(json!([])))
        .await;
    let first_ref = first.body["reference_id"].as_str().unwrap().to_string();
    let t = wait_for_state(&app, &first_ref, "dead").await;
    assert!(last_error(&t).contains("400"));

    // An outage longer than the deadline (an hour in tests) dead-letters too.
    partner.set(Mode::Down);
    let second = app
        .post_json("/housing/notes", HOUSING, &note(json!([])))
        .await;
    let second_ref = second.body["reference_id"].as_str().unwrap().to_string();
    wait_for_attempts(&partner, 2).await;
    // Past the deadline, the next failed attempt is the last.
    app.clock.advance(time::Duration::hours(2));
    let t = wait_for_state(&app, &second_ref, "dead").await;
    assert!(
        last_error(&t).contains("not delivered before the deadline"),
        "{t}"
    );
    let dead = app.get("/housing/notes/dead-letters", HOUSING).await;
    assert_eq!(dead.body["notes"].as_array().unwrap().len(), 2);
    // The operator sees where and why each failed, not what the notes say, and nothing
    // else of the tenant's.
    let operator = app.get("/housing/notes/dead-letters", ADMIN).await;
    assert_eq!(operator.status, 200, "{operator:?}");
    let failed = operator.body["notes"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert!(
        failed.iter().all(|n| n.get("note").is_none()
            && n.get("tenant").is_none()
            && !n.to_string().contains("pharmacy")
            && n["delivery"]["state"] == "dead"
            && n["delivery"]["last_error"].is_string()),
        "{failed:?}"
    );
    for path in [
        format!("/housing/notes/{first_ref}"),
        "/housing/notes?tenant=T-1001".to_string(),
        "/housing/tenants/T-1001".to_string(),
        "/housing/updates?since=0".to_string(),
        "/housing/consents?tenant=T-1001".to_string(),
    ] {
        let a = app.get(&path, ADMIN).await;
        assert_eq!(a.status, 403, "{path}: {a:?}");
    }

    // The operator replays one once the partner is back.
    partner.set(Mode::Up);
    let r = app
        .post_json(
            &format!("/housing/notes/{first_ref}/replay"),
            ADMIN,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_for_state(&app, &first_ref, "delivered").await;
    assert_eq!(
        app.post_json(
            &format!("/housing/notes/{first_ref}/replay"),
            HOUSING,
            &json!({})
        )
        .await
        .status,
        409
    );
    // A reference ID that names no note is a 404, not "not dead-lettered".
    let unknown = hearth::ids::ReferenceId::new().to_string();
    let r = app
        .post_json(
            &format!("/housing/notes/{unknown}/replay"),
            ADMIN,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
}

/// A failure close to the deadline does not dead-letter the note early: its last attempt
/// is made at the deadline, so a partner back within the configured window gets it. Here
/// the first backoff (200 s) is longer than the whole window (60 s).
#[tokio::test]
async fn the_last_attempt_is_made_at_the_deadline_not_a_backoff_before_it() {
    let partner = Partner::start().await;
    let app = ready_with(&partner, |config| {
        config.relay.initial_backoff_secs = 200;
        config.relay.dead_letter_after_secs = 60;
    })
    .await;
    let reference = send_note_while(&app, &partner, Mode::Down).await;
    let thread = wait_for_recorded_attempts(&app, &reference, 1).await;
    assert_eq!(thread["delivery"]["state"], "pending", "{thread}");

    // Not yet due: the retry waits for the deadline, not the 200 s backoff.
    partner.set(Mode::Up);
    app.clock.advance(time::Duration::seconds(59));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(partner.attempts(), 1);
    app.clock.advance(time::Duration::seconds(1));
    wait_for_state(&app, &reference, "delivered").await;
    assert_eq!(partner.attempts(), 2);
}

/// A partner that rotated its credentials (401) or is mid-deploy (404) has not refused
/// the note: it is retried until the deadline, and delivered once the partner is back.
#[tokio::test]
async fn an_unauthorised_or_missing_endpoint_is_retried_not_dead_lettered() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let reference = send_note_while(&app, &partner, Mode::Refuse(401)).await;
    let thread = wait_for_recorded_attempts(&app, &reference, 1).await;
    assert_eq!(thread["delivery"]["state"], "pending", "{thread}");

    partner.set(Mode::Refuse(404));
    // The test backoff starts at 30 s (±25%).
    app.clock.advance(time::Duration::seconds(40));
    let thread = wait_for_recorded_attempts(&app, &reference, 2).await;
    assert_eq!(thread["delivery"]["state"], "pending", "{thread}");
    assert!(last_error(&thread).contains("404"), "{thread}");

    partner.set(Mode::Up);
    app.clock.advance(time::Duration::seconds(80));
    wait_for_state(&app, &reference, "delivered").await;
    assert_eq!(partner.attempts(), 3);
}

/// A note the worker's system got wrong is a 400 that points at the field, so the
/// integration can show the worker which one.
#[tokio::test]
async fn a_badly_shaped_note_is_refused_at_the_field() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let mut no_reason = note(json!([]));
    no_reason.as_object_mut().unwrap().remove("reason");
    let mut loud = note(json!([]));
    loud["priority"] = json!("high");
    let mut extra = note(json!([]));
    extra["colour"] = json!("red");
    for (body, at) in [(no_reason, "reason"), (loud, "priority"), (extra, "colour")] {
        let a = app.post_json("/housing/notes", HOUSING, &body).await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.error_expressions(), [at], "{a:?}");
    }
    assert_eq!(partner.attempts(), 0);
}

/// The Communication went through and the Task never got an answer: the attempt is
/// retried, and its record already lists what the partner holds.
#[tokio::test]
async fn a_task_that_times_out_after_its_communication_still_records_the_disclosure() {
    let partner = Partner::start().await;
    let app = ready_with(&partner, |config| {
        config.relay.attempt_timeout_ms = 300;
        for p in &mut config.partners {
            if p.id.as_str() == CLINIC_ID {
                p.supports_transactions = false;
            }
        }
    })
    .await;
    partner.set(Mode::StallTask);
    let sent = app
        .post_json("/housing/notes", HOUSING, &note(json!([])))
        .await;
    let reference = sent.body["reference_id"].as_str().unwrap().to_string();
    let thread = wait_for_recorded_attempts(&app, &reference, 1).await;
    assert_eq!(thread["delivery"]["state"], "pending", "{thread}");
    assert!(
        last_error(&thread).contains("accepted the Communication"),
        "{thread}"
    );
    let delivery = records_of(&app, "deliver").await.remove(0);
    assert_eq!(delivery["outcome"], "failed", "{delivery}");
    assert_eq!(
        delivery["items_written"][0]["kind"],
        hearth::gateway::notes::NOTE_TEXT,
        "{delivery}"
    );
}

/// A note decided under one consent and stored after the tenant recorded another (one
/// that no longer names its partner, say) is refused, as a notice or a review would be: nothing is queued.
#[tokio::test]
async fn a_note_decided_before_a_consent_change_is_not_queued_after_it() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let tenant = hearth::ids::TenantId::new("T-1001");
    let context = app.gateway.store.consent_context(&tenant).await.unwrap();
    let seen = hearth::store::ConsentsSeen::of(&context, false);
    // The tenant now shares with the MCO only.
    let narrower = json!({"tenant_id": "T-1001", "share_with": ["bayview-health-plan"], "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:30:00Z"});
    let recorded = app.post_json("/housing/consents", HOUSING, &narrower).await;
    assert_eq!(recorded.status, 201, "{recorded:?}");

    let reference = hearth::ids::ReferenceId::new();
    let mut audit = hearth::audit::AuditEntry::new(
        reference,
        "2026-11-23T10:00:00Z".into(),
        "POST /housing/notes".into(),
        "queue-note",
        hearth::audit::Direction::Outbound,
    );
    audit.outcome = hearth::audit::Outcome::Accepted;
    let queued = app
        .gateway
        .store
        .queue_note(
            hearth::store::NewNote {
                reference_id: reference,
                tenant,
                partner: hearth::ids::PartnerId::new(CLINIC_ID),
                note: note(json!([])),
                payload: json!({"resourceType": "Bundle", "type": "transaction", "entry": []}),
                created_at: "2026-11-23T10:00:00Z".into(),
                created_ms: 0,
                give_up_ms: i64::MAX,
                audit,
            },
            Some(seen),
        )
        .await;
    assert!(
        matches!(queued, Err(hearth::store::StoreError::Conflict(_))),
        "{queued:?}"
    );
    let threads = app.get("/housing/notes?tenant=T-1001", HOUSING).await;
    assert_eq!(threads.body["notes"], json!([]), "{threads:?}");
}

/// Waits for the relay to record `n` attempts of a note; returns the thread.
async fn wait_for_recorded_attempts(app: &TestApp, reference: &str, n: u64) -> Value {
    let path = format!("/housing/notes/{reference}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = app.get(&path, HOUSING).await;
        if t.body["delivery"]["attempts"].as_u64() >= Some(n) {
            return t.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", t.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_note_carries_only_dataset_facts_and_needs_consent_for_its_partner() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let mut bad = note(json!([]));
    bad["diagnosis"] = json!("COPD");
    let a = app.post_json("/housing/notes", HOUSING, &bad).await;
    assert_eq!(a.status, 400);
    assert!(a.body.to_string().contains("diagnosis"));

    let outside = note(
        json!([{"item": "medication_change", "medication": "x", "change": "started", "indication": "pain"}, {"item_id": "no-such-item"}, {"free": "text"}]),
    );
    let b = app.post_json("/housing/notes", HOUSING, &outside).await;
    assert_eq!(b.status, 422, "{b:?}");
    assert_eq!(b.error_expressions(), ["facts[0]", "facts[1]", "facts[2]"]);

    let mut to_stranger = note(json!([]));
    to_stranger["to"] = json!("eastside-clinic");
    let c = app.post_json("/housing/notes", HOUSING, &to_stranger).await;
    assert_eq!(
        (c.status, c.error_expressions()),
        (422, vec!["to".to_string()]),
        "no endpoint configured"
    );

    assert_eq!(
        app.post_json("/housing/notes", CLINIC, &note(json!([])))
            .await
            .status,
        403
    );
    let listed = app
        .get("/housing/notes?tenant=T-1001&open=true", HOUSING)
        .await;
    assert_eq!(listed.body["notes"], json!([]));
    assert_eq!(partner.attempts(), 0);

    // Past its deadline without a reply, a note shows as overdue.
    // (Within the one-hour dead-letter window, so it is still open.)
    partner.set(Mode::Down);
    let mut soon = note(json!([]));
    soon["deadline"] = json!("2026-11-23T10:30:00Z");
    let d = app.post_json("/housing/notes", HOUSING, &soon).await;
    let reference = d.body["reference_id"].as_str().unwrap().to_string();
    app.clock.set(time::macros::datetime!(2026-11-23 10:31 UTC));
    let t = app
        .get(&format!("/housing/notes/{reference}"), HOUSING)
        .await;
    assert_eq!(t.body["overdue"], true);
    assert_eq!(
        app.get("/housing/notes?tenant=T-1001&open=true", HOUSING)
            .await
            .body["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A fact a housing worker types in is held to the same sensitivity rules as one read
/// from a notice: a withdrawal-risk flag is substance-use information however it was
/// written, and a medication (sensitive by its code, which typed text lacks) goes only
/// as the stored item, labels and all.
#[tokio::test]
async fn a_typed_fact_cannot_carry_restricted_detail_past_the_consent() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let narrower = json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID], "restrictions": ["substance-use"],
        "valid_until": "2027-05-31", "signed_at": "2026-11-23T10:00:00Z"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &narrower)
            .await
            .status,
        201
    );
    let withdrawal = json!({"item": "risk_flag", "flag": "withdrawal-risk", "status": "active"});
    let a = app
        .post_json("/housing/notes", HOUSING, &note(json!([withdrawal])))
        .await;
    assert_eq!(a.status, 422, "{a:?}");
    assert_eq!(a.error_expressions(), ["facts[0]"]);

    let typed_medication =
        json!({"item": "medication_change", "medication": "Methadone 60 mg", "change": "started"});
    let b = app
        .post_json("/housing/notes", HOUSING, &note(json!([typed_medication])))
        .await;
    assert_eq!(b.status, 422, "{b:?}");
    assert_eq!(b.error_expressions(), ["facts[0]"]);

    // A fact the restriction does not touch still goes.
    let falls = json!({"item": "risk_flag", "flag": "falls", "status": "active"});
    let c = app
        .post_json("/housing/notes", HOUSING, &note(json!([falls])))
        .await;
    assert_eq!(c.status, 201, "{c:?}");
}

/// The worker's own words are held to the consent too. Under a consent that keeps
/// substance use from the clinic, a note whose reason says "methadone" is refused at that
/// field (the words are not quoted back) and nothing is queued; said without it, the note
/// goes. A note already queued when such a restriction is recorded stops at delivery,
/// as one carrying a now-restricted fact does.
#[tokio::test]
async fn a_notes_own_words_are_held_to_the_consent() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let mut about_methadone = note(json!([]));
    about_methadone["reason"] =
        json!("Her Methadone dose changed at discharge; she is unsure of the new amount");
    // Queued while the consent allows it, the partner down: its words' labels are kept.
    partner.set(Mode::Down);
    let queued = app
        .post_json("/housing/notes", HOUSING, &about_methadone)
        .await;
    assert_eq!(queued.status, 201, "{queued:?}");
    assert_eq!(
        queued.body["note"]["text_labels"],
        json!(["ETH", "SUD"]),
        "{queued:?}"
    );
    let reference = queued.body["reference_id"].as_str().unwrap().to_string();
    wait_for_attempts(&partner, 1).await;

    let narrower = json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID], "restrictions": ["substance-use"],
        "valid_until": "2027-05-31", "signed_at": "2026-11-23T10:00:00Z"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &narrower)
            .await
            .status,
        201
    );
    let t = resume_until_stopped(&app, &partner, &reference, 5).await;
    assert!(last_error(&t).contains("restricted"), "{t}");
    assert!(partner.created().is_empty());

    let refused = app
        .post_json("/housing/notes", HOUSING, &about_methadone)
        .await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(refused.error_expressions(), ["reason"]);
    assert!(!refused.mentions("methadone"), "{refused:?}");
    let mut in_the_action = note(json!([]));
    in_the_action["requested_action"] = json!("Can her buprenorphine be delivered?");
    let refused = app
        .post_json("/housing/notes", HOUSING, &in_the_action)
        .await;
    assert_eq!(refused.error_expressions(), ["requested_action"]);
    // Whole words only, and the plain note goes.
    let mut plain = note(json!([]));
    plain["reason"] =
        json!("Her medication dose changed at discharge; she is unsure of the new amount");
    let sent = app.post_json("/housing/notes", HOUSING, &plain).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert!(sent.body["note"].get("text_labels").is_none(), "{sent:?}");
    // Delivered, it is in the tenant's accounting of disclosures though it carries no
    // fact: the worker's words about her were shared.
    let reference = sent.body["reference_id"].as_str().unwrap();
    wait_for_state(&app, reference, "delivered").await;
    let listed = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    let to_clinic: Vec<&Value> = listed.body["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reference_id"] == reference)
        .collect();
    assert_eq!(to_clinic.len(), 1, "{listed:?}");
    assert_eq!(
        to_clinic[0]["what"],
        json!(["a note in the sender's own words"])
    );
}

/// A note delivered before deliveries listed what they carried, and before a note's own
/// words counted, is still in the tenant's accounting: the queued note's record says
/// what it carried, and the words went with it.
#[tokio::test]
async fn a_note_delivered_before_its_words_counted_is_still_a_disclosure() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    use hearth::audit::{AuditEntry, Direction, Outcome};
    let note = hearth::ids::ReferenceId::new();
    let record = |action: &str, direction| {
        let mut e = AuditEntry::new(
            hearth::ids::ReferenceId::new(),
            "2026-11-20T10:00:00Z".into(),
            "POST /housing/notes".into(),
            action,
            direction,
        );
        e.outcome = Outcome::Accepted;
        e.status = 201;
        e.partner = Some(hearth::ids::PartnerId::new(CLINIC_ID));
        e.tenant = Some(hearth::ids::TenantId::new("T-1001"));
        e
    };
    let mut queued = record("queue-note", Direction::Outbound);
    queued.reference_id = note;
    let mut delivered = record("deliver", Direction::Outbound);
    delivered.related = Some(note);
    delivered.status = 200;
    app.gateway.store.append(queued).await.unwrap();
    app.gateway.store.append(delivered).await.unwrap();
    let listed = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    let old: Vec<&Value> = listed.body["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["what"] == json!(["a note in the sender's own words"]))
        .collect();
    assert_eq!(old.len(), 1, "{listed:?}");
}

/// The clinic's medication change notice arrives; housing answers it ("she has no
/// blister pack yet"). The clinic receives the note threaded to its own notice, by the
/// identifier it gave it. A note cannot claim to answer what that partner never sent
/// about this tenant.
#[tokio::test]
async fn housing_answers_a_partners_notice_in_its_thread() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let notice = fixture("medication-change-notice.json");
    let received = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(received.status, 201, "{received:?}");
    let mut answer = note(json!([]));
    answer["in_response_to"] = json!(received.reference_id());
    let sent = app.post_json("/housing/notes", HOUSING, &answer).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert_eq!(sent.body["note"]["in_response_to"], received.reference_id());
    wait_for_state(
        &app,
        sent.body["reference_id"].as_str().unwrap(),
        "delivered",
    )
    .await;
    let bundle = &partner.bundles()[0];
    let communication = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Communication")
        .unwrap();
    assert_eq!(
        communication["inResponseTo"][0]["identifier"], notice["identifier"][0],
        "{communication}"
    );

    // Not a notice the clinic sent about this tenant: refused at the field, nothing queued.
    let mut to_the_mco = answer.clone();
    to_the_mco["to"] = json!("bayview-health-plan");
    for (body, why) in [
        (to_the_mco, "the MCO never sent it"),
        (
            {
                let mut a = answer.clone();
                a["in_response_to"] = json!("01KAQZ3D0000000000000000N1");
                a
            },
            "no such notice",
        ),
        (
            {
                let mut a = answer.clone();
                a["in_response_to"] = json!("not a reference ID");
                a
            },
            "not a reference ID",
        ),
    ] {
        let refused = app.post_json("/housing/notes", HOUSING, &body).await;
        assert_eq!(refused.status, 422, "{why}: {refused:?}");
        assert_eq!(refused.error_expressions(), ["in_response_to"], "{why}");
    }
    // Nor a follow-up plan (a CarePlan: inResponseTo names Communications), nor a notice
    // the clinic has since retracted.
    let plan = app
        .post("/fhir/CarePlan", CLINIC, &fixture("follow-up-plan.json"))
        .await;
    assert_eq!(plan.status, 201, "{plan:?}");
    let mut retraction = notice.clone();
    retraction["status"] = json!("entered-in-error");
    let retracted = app.post("/fhir/Communication", CLINIC, &retraction).await;
    assert!(
        retracted.status == 200 || retracted.status == 201,
        "{retracted:?}"
    );
    for (reference, why) in [
        (plan.reference_id(), "a CarePlan"),
        (received.reference_id(), "a retracted notice"),
    ] {
        let mut a = answer.clone();
        a["in_response_to"] = json!(reference);
        let refused = app.post_json("/housing/notes", HOUSING, &a).await;
        assert_eq!(refused.status, 422, "{why}: {refused:?}");
        assert_eq!(refused.error_expressions(), ["in_response_to"], "{why}");
    }
}

/// Housing answers the clinic's notice while the clinic is down; the clinic then
/// retracts the notice (it was about the wrong patient). The queued answer is stopped,
/// not delivered into a thread that no longer exists.
#[tokio::test]
async fn an_answer_to_a_notice_retracted_before_delivery_is_stopped() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let notice = fixture("medication-change-notice.json");
    let received = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(received.status, 201, "{received:?}");
    partner.set(Mode::Down);
    let mut answer = note(json!([]));
    answer["in_response_to"] = json!(received.reference_id());
    let sent = app.post_json("/housing/notes", HOUSING, &answer).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let reference = sent.body["reference_id"].as_str().unwrap().to_string();
    wait_for_attempts(&partner, 1).await;
    let mut retraction = notice.clone();
    retraction["status"] = json!("entered-in-error");
    let retracted = app.post("/fhir/Communication", CLINIC, &retraction).await;
    assert!(
        retracted.status == 200 || retracted.status == 201,
        "{retracted:?}"
    );
    let t = resume_until_stopped(&app, &partner, &reference, 5).await;
    assert!(last_error(&t).contains("retracted"), "{t}");
    assert!(partner.created().is_empty());
}

/// A forward queued before forwards were marked as such: its covering line names the
/// partner it came from ("… Mental Health Team"), which is Hearth's text, not a
/// worker's words about the tenant. A consent that keeps mental health from the MCO
/// does not stop it for that line; its author, the sending partner's principal, says it
/// is a forward.
#[tokio::test]
async fn an_old_forwards_covering_line_is_not_held_to_the_word_list() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let narrower = json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID, "bayview-health-plan"],
        "restrictions": ["mental-health"], "valid_until": "2027-05-31", "signed_at": "2026-11-23T10:00:00Z"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &narrower)
            .await
            .status,
        201
    );
    let reference = hearth::ids::ReferenceId::new();
    let mut audit = hearth::audit::AuditEntry::new(
        reference,
        "2026-11-23T10:00:00Z".into(),
        "FORWARD".into(),
        "forward",
        hearth::audit::Direction::Outbound,
    );
    audit.outcome = hearth::audit::Outcome::Accepted;
    audit.status = 201;
    app.gateway
        .store
        .queue_note(hearth::store::NewNote {
            reference_id: reference,
            tenant: hearth::ids::TenantId::new("T-1001"),
            partner: hearth::ids::PartnerId::new("bayview-health-plan"),
            note: json!({"reason": "Forwarded from Eastside Community Mental Health Team for care coordination",
                "facts": [], "author": "riverside-ehr"}),
            payload: json!({"resourceType": "Bundle", "type": "transaction", "entry": []}),
            created_at: "2026-11-23T10:00:00Z".into(),
            created_ms: 0,
            give_up_ms: i64::MAX,
            audit,
            },
            None,
        )
        .await
        .unwrap();
    // The relay polls every 20 ms in the test configuration.
    let t = wait_for_state(&app, &reference.to_string(), "delivered").await;
    assert_eq!(t["delivery"]["state"], "delivered", "{t}");
}

/// An emergency lets the clinic's own notice in past an expired consent; it does not
/// carry on to the MCO the notice would be routed to, whose sharing the consent decides.
#[tokio::test]
async fn a_break_glass_notice_is_not_forwarded_under_the_same_emergency() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    app.clock.set(time::macros::datetime!(2027-06-02 09:00 UTC));
    let a = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice.json"),
            &[
                ("X-Purpose-Of-Use", "BTG"),
                (
                    "X-Break-Glass-Reason",
                    "readmitted overnight, housing team must know",
                ),
            ],
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let threads = app.get("/housing/notes?tenant=T-1001", HOUSING).await;
    assert_eq!(
        threads.body["notes"].as_array().unwrap().len(),
        0,
        "forwarded under the clinic's emergency: {threads:?}"
    );
    // The notice itself is in, flagged; the forward the routing rule asked for is on the
    // record as refused, and the MCO was never called.
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert!(
        view.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["item"] == "discharge"),
        "{view:?}"
    );
    assert_eq!(
        app.audit_record(&a.reference_id()).await["break_glass"],
        "BTG"
    );
    let forward = forward_records(&app)
        .await
        .into_iter()
        .next()
        .expect("the refused forward is audited");
    assert_eq!(forward["outcome"], "refused", "{forward}");
    assert_eq!(forward["partner"], "bayview-health-plan", "{forward}");
    assert_eq!(partner.attempts(), 0);
}

/// A housing worker's urgent note after the tenant's consent has ended goes out under
/// the stated emergency: the worker was told it was accepted, so the relay honours the
/// same emergency at delivery instead of stopping the note as outside consent. The
/// emergency is on the review list once, under the note.
#[tokio::test]
async fn a_break_glass_note_is_delivered_under_its_emergency() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    // The consent ran to 2027-05-31.
    app.clock.set(time::macros::datetime!(2027-06-02 09:00 UTC));
    let urgent = urgent_note();
    let refused = app.post_json("/housing/notes", HOUSING, &urgent).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let reference = send_under_break_glass(&app, &urgent).await;
    wait_for_state(&app, &reference, "delivered").await;
    assert_eq!(partner.attempts(), 1);

    let delivery = records_of(&app, "deliver")
        .await
        .into_iter()
        .next()
        .expect("the delivery is audited");
    assert_eq!(delivery["outcome"], "accepted", "{delivery}");
    assert_eq!(delivery["break_glass"], "BTG", "{delivery}");
    assert_eq!(delivery["related"], reference.as_str(), "{delivery}");
    let review = app.get("/audit/break-glass", AUDITOR).await;
    let listed = review.body["break_glass"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{review:?}");
    assert_eq!(listed[0]["reference_id"], reference.as_str(), "{review:?}");
}

/// An auditor who finds the emergency unjustified withdraws it: a note still waiting
/// for its partner then goes out only if the consent alone allows it — here it does
/// not, and the note stops.
#[tokio::test]
async fn an_emergency_found_unjustified_no_longer_carries_its_note() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    app.clock.set(time::macros::datetime!(2027-06-02 09:00 UTC));
    partner.set(Mode::Down);
    let urgent = urgent_note();
    let reference = send_under_break_glass(&app, &urgent).await;
    wait_for_recorded_attempts(&app, &reference, 1).await;
    let review = app
        .post_json(
            &format!("/audit/break-glass/{reference}/review"),
            AUDITOR,
            &json!({"outcome": "not-justified"}),
        )
        .await;
    assert_eq!(review.status, 200, "{review:?}");
    let thread = resume_until_stopped(&app, &partner, &reference, 1).await;
    assert!(last_error(&thread).contains("consent"), "{thread}");
    assert_eq!(partner.attempts(), 1);
}

/// A note queued under an emergency, whose consent has been renewed before it could be
/// delivered, goes out under the consent: nothing about it is an emergency any more.
#[tokio::test]
async fn an_emergency_note_the_renewed_consent_covers_goes_out_as_routine() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    app.clock.set(time::macros::datetime!(2027-06-02 09:00 UTC));
    partner.set(Mode::Down);
    let urgent = urgent_note();
    let reference = send_under_break_glass(&app, &urgent).await;
    wait_for_recorded_attempts(&app, &reference, 1).await;
    let renewed = json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID, "bayview-health-plan"], "valid_until": "2028-05-31", "signed_at": "2027-06-02T09:00:00Z"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &renewed)
            .await
            .status,
        201
    );
    partner.set(Mode::Up);
    app.clock.advance(time::Duration::minutes(1));
    wait_for_state(&app, &reference, "delivered").await;
    let delivered = records_of(&app, "deliver")
        .await
        .into_iter()
        .find(|r| r["outcome"] == "accepted")
        .unwrap();
    assert!(delivered.get("break_glass").is_none(), "{delivered}");
    assert_eq!(delivered["consent"]["version"], 2, "{delivered}");
}

/// A partner that is slow to answer holds up only its own notes: while an attempt to the
/// clinic hangs, a note to the MCO is delivered at once.
#[tokio::test]
async fn a_stalled_partner_does_not_hold_up_another() {
    let clinic = Partner::start().await;
    let mco = Partner::start().await;
    let app = ready_with(&clinic, |config| {
        config.relay.attempt_timeout_ms = 20_000;
        for p in &mut config.partners {
            if p.id.as_str() == "bayview-health-plan" {
                p.fhir_base_url = Some(mco.base.clone());
            }
        }
    })
    .await;
    send_note_while(&app, &clinic, Mode::Stall).await;
    let mut to_mco = note(json!([]));
    to_mco["to"] = json!("bayview-health-plan");
    let sent = app.post_json("/housing/notes", HOUSING, &to_mco).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    // The clinic's attempt hangs for up to 20 s; the MCO's note must not wait for it.
    wait_until("the MCO's note waited behind the stalled clinic", || {
        !mco.bundles().is_empty()
    })
    .await;
}

/// A partner without transaction support gets the note's Communication and Task as two
/// conditional creates; the Task names the Communication by its identifier, because a
/// Bundle-local `urn:uuid:` means nothing outside the Bundle (a strict server refuses it).
#[tokio::test]
async fn a_partner_without_transactions_gets_a_task_that_names_its_communication() {
    let partner = Partner::start().await;
    let app = ready_with(&partner, |config| {
        for p in &mut config.partners {
            if p.id.as_str() == CLINIC_ID {
                p.supports_transactions = false;
            }
        }
    })
    .await;
    let sent = app
        .post_json("/housing/notes", HOUSING, &note(json!([])))
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let reference = sent.body["reference_id"].as_str().unwrap().to_string();
    wait_for_state(&app, &reference, "delivered").await;
    let created = partner.created();
    let task = created
        .values()
        .find(|r| r["resourceType"] == "Task")
        .expect("the Task was created");
    let communication = created
        .values()
        .find(|r| r["resourceType"] == "Communication")
        .expect("the Communication was created");
    assert_eq!(
        task["focus"]["identifier"], communication["identifier"][0],
        "{task}"
    );
}

/// A partner taking plain creates accepts the Communication and then refuses its Task:
/// the note is dead-lettered, but the partner holds the facts and the worker's words, so
/// the delivery is on the record as a disclosure — once, however many attempts it took.
#[tokio::test]
async fn a_communication_accepted_before_its_task_was_refused_is_still_a_disclosure() {
    let partner = Partner::start().await;
    let app = ready_with(&partner, |config| {
        for p in &mut config.partners {
            if p.id.as_str() == CLINIC_ID {
                p.supports_transactions = false;
            }
        }
    })
    .await;
    // A Task refused with 503 first (retried), then with 404: a partner with no Task
    // endpoint, which no retry will change (dead).
    partner.set(Mode::RefuseTask(503));
    let sent = app
        .post_json("/housing/notes", HOUSING, &note(json!([])))
        .await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let reference = sent.body["reference_id"].as_str().unwrap().to_string();
    let thread = wait_for_recorded_attempts(&app, &reference, 1).await;
    assert_eq!(thread["delivery"]["state"], "pending", "{thread}");
    partner.set(Mode::RefuseTask(404));
    app.clock.advance(time::Duration::seconds(40));
    let thread = wait_for_state(&app, &reference, "dead").await;
    assert!(
        last_error(&thread).contains("accepted the Communication"),
        "{thread}"
    );
    assert!(
        partner
            .created()
            .values()
            .any(|r| r["resourceType"] == "Communication")
    );

    let deliveries = records_of(&app, "deliver").await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(
        deliveries.iter().all(|d| d["outcome"] == "failed"
            && d["items_written"][0]["kind"] == hearth::gateway::notes::NOTE_TEXT),
        "{deliveries:?}"
    );
    let disclosures = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    let to_clinic: Vec<&Value> = disclosures.body["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["to"].as_str().is_some_and(|t| t.contains("Riverside")))
        .collect();
    assert_eq!(to_clinic.len(), 1, "{disclosures:?}");
}

/// Where sharing pauses while a consent awaits renewal, a discharge (which opens the
/// renewal prompt) is not forwarded: the forward is refused up front and audited, rather
/// than queued, "accepted", and then stopped for good at delivery.
#[tokio::test]
async fn a_discharge_that_opens_a_renewal_is_not_forwarded_where_renewal_pauses_sharing() {
    let partner = Partner::start().await;
    let app = ready_with(&partner, |config| {
        config.consent.share_while_renewal_due = false
    })
    .await;
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice.json"),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let forward = forward_records(&app)
        .await
        .into_iter()
        .next()
        .expect("the routing rule's forward is in the trail");
    assert_eq!(forward["outcome"], "refused", "{forward}");
    let listed = app.get("/housing/notes?tenant=T-1001", HOUSING).await;
    assert_eq!(listed.body["notes"], json!([]), "{listed:?}");
    assert_eq!(partner.attempts(), 0);
}

/// The same holds inside a transaction Bundle: a later entry's forward is refused once an
/// earlier entry (the discharge) has opened the renewal prompt, although each entry was
/// prepared against the consent as committed.
#[tokio::test]
async fn in_a_transaction_a_renewal_opened_by_one_entry_holds_the_next_entries_forwards() {
    let partner = Partner::start().await;
    let app = ready_with(&partner, |config| {
        config.consent.share_while_renewal_due = false;
        config.forward[0].items.clear(); // every kind, not only discharges
    })
    .await;
    let entry = |name: &str| json!({"resource": fixture(name), "request": {"method": "POST", "url": "Communication"}});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry("discharge-notice.json"), entry("medication-change-notice.json")]});
    let t = app.post("/fhir", CLINIC, &bundle).await;
    assert_eq!(t.status, 200, "{t:?}");
    let forwards = forward_records(&app).await;
    assert_eq!(forwards.len(), 2, "{forwards:?}");
    assert!(
        forwards.iter().all(|f| f["outcome"] == "refused"),
        "{forwards:?}"
    );
    let listed = app.get("/housing/notes?tenant=T-1001", HOUSING).await;
    assert_eq!(listed.body["notes"], json!([]), "{listed:?}");
}

/// A discharge notice sent about the wrong patient and retracted while its forward
/// waits out a partner outage is not delivered once the partner is back.
#[tokio::test]
async fn a_notice_retracted_before_its_forward_is_delivered_is_not_forwarded() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    partner.set(Mode::Down);
    let notice = fixture("discharge-notice.json");
    let a = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(a.status, 201, "{a:?}");
    wait_for_attempts(&partner, 1).await;
    let forward = forward_records(&app)
        .await
        .into_iter()
        .next()
        .expect("a forward was queued")["reference_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut retraction = notice.clone();
    retraction["status"] = json!("entered-in-error");
    let r = app.post("/fhir/Communication", CLINIC, &retraction).await;
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let t = resume_until_stopped(&app, &partner, &forward, 30).await;
    assert!(last_error(&t).contains("retracted"), "{t}");
    // Queued with its facts but never delivered: the tenant's accounting does not say it
    // was shared with the MCO.
    let listed = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    let to_mco: Vec<_> = listed.body["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["to"] == "Bayview Health Plan")
        .collect();
    assert!(to_mco.is_empty(), "{to_mco:?}");
    assert!(
        partner.bundles().is_empty(),
        "the retracted notice went out"
    );
    // Housing reading the stopped forward sees which facts it carried, not their content.
    let note = app.get(&format!("/housing/notes/{forward}"), HOUSING).await;
    let facts = note.body["note"]["facts"].as_array().unwrap();
    assert!(!facts.is_empty(), "{note:?}");
    assert!(
        facts
            .iter()
            .all(|f| f["retired"] == true && f.as_object().unwrap().len() == 2),
        "{note:?}"
    );
}

#[tokio::test]
async fn a_clinic_discharge_notice_is_forwarded_minimised_to_the_mco_when_consent_covers_both() {
    let partner = Partner::start().await;
    let app = ready(&partner).await;
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice-oversharing.json"),
        )
        .await;
    assert_eq!(a.status, 201);
    wait_until("nothing was forwarded", || !partner.bundles().is_empty()).await;
    let bundle = &partner.bundles()[0];
    let comm = &bundle["entry"][0]["resource"];
    assert_eq!(
        comm["recipient"][0]["reference"],
        "Organization/bayview-health-plan"
    );
    assert_eq!(
        comm["subject"]["identifier"]["value"], "BHP-20931",
        "the MCO's own member ID"
    );
    let text = bundle.to_string().to_lowercase();
    assert!(text.contains("discharge"));
    let inbound = fixture("discharge-notice-oversharing.json");
    let note_text = inbound["note"][0]["text"].as_str().unwrap().to_lowercase();
    for leak in ["methadone", "diagnos", note_text.as_str()] {
        assert!(!text.contains(leak), "{leak} was forwarded");
    }
    // The forward is audited, linked to the notice that caused it.
    let forward = forward_records(&app).await.into_iter().next().unwrap();
    assert_eq!(forward["related"], a.reference_id());
    // The tenant's accounting of disclosures: the clinic's notice to housing, and its
    // discharge passed on to the MCO, once delivered, naming whose notice it was.
    wait_for_state(&app, forward["reference_id"].as_str().unwrap(), "delivered").await;
    let listed = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    let summaries: Vec<&str> = listed.body["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries[0].contains("Riverside Community Clinic shared"),
        "{summaries:?}"
    );
    assert!(
        summaries[1].contains("passed on discharge and follow-up details from Riverside Community Clinic with Bayview Health Plan"),
        "{summaries:?}"
    );
    // It names the note housing can look up, not the delivery attempt.
    assert_eq!(
        listed.body["disclosures"][1]["reference_id"],
        forward["reference_id"]
    );

    // Once the tenant narrows consent to the clinic only, nothing more is forwarded.
    let narrow = json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID], "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:30:00Z"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &narrow)
            .await
            .status,
        201
    );
    let mut again = fixture("discharge-notice.json");
    again["identifier"][0]["value"] = json!("second-discharge");
    let second = app.post("/fhir/Communication", CLINIC, &again).await;
    assert_eq!(second.status, 201);
    let threads = app.get("/housing/notes?tenant=T-1001", HOUSING).await;
    assert_eq!(threads.body["notes"].as_array().unwrap().len(), 1);
    // The forward the routing rule asked for is in the trail as refused, with why.
    let forwards = forward_records(&app).await;
    let refused: Vec<&Value> = forwards
        .iter()
        .filter(|r| r["related"] == second.reference_id().as_str())
        .collect();
    assert_eq!(refused.len(), 1, "{forwards:?}");
    assert_eq!(refused[0]["outcome"], "refused");
    assert_eq!(refused[0]["reason"], "partner-not-covered");
    assert_eq!(refused[0]["partner"], "bayview-health-plan");
}
