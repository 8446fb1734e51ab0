//! The operating model's scenarios, as a housing worker, a clinic, an MCO and an auditor
//! live them ("Operational example 1" and the training scenarios of the source document).

mod common;

use common::*;
use serde_json::{Value, json};
use time::macros::datetime;

const MCO_ID: &str = "bayview-health-plan";
const CLINIC_ID: &str = "riverside-clinic";

/// At intake the worker records the tenant's choice in plain terms.
async fn record(app: &TestApp, form: Value) -> Answer {
    app.post_json("/housing/consents", HOUSING, &form).await
}

fn share_with(partners: &[&str]) -> Value {
    json!({"tenant_id": "T-1001", "share_with": partners, "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"})
}

async fn feed(app: &TestApp) -> Vec<Value> {
    let a = app.get("/housing/updates?since=0", HOUSING).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["entries"].as_array().unwrap().clone()
}

async fn housing_items(app: &TestApp) -> Vec<Value> {
    app.get("/housing/tenants/T-1001", HOUSING).await.body["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn the_tenant_refuses_consent() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let a = record(
        &app,
        json!({"tenant_id": "T-1001", "decision": "refuse", "signed_at": "2026-11-23T09:00:00Z"}),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.body["fhir"]["provision"]["type"], "deny");

    let notice = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(notice.status, 403);
    assert_eq!(
        app.audit_record(&notice.reference_id()).await["reason"],
        "consent-refused"
    );
    // Not even an emergency overrides the tenant's explicit refusal.
    let urgent = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &fixture("care-contact-update.json"),
            &[
                ("X-Purpose-Of-Use", "BTG"),
                ("X-Break-Glass-Reason", "tenant collapsed in the corridor"),
            ],
        )
        .await;
    assert_eq!(urgent.status, 403);
    assert!(housing_items(&app).await.is_empty());
}

#[tokio::test]
async fn a_partner_sends_information_outside_scope() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(record(&app, share_with(&[CLINIC_ID])).await.status, 201);

    // The clinic over-shares: only the dataset is kept, the rest reported as dropped paths.
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice-oversharing.json"),
        )
        .await;
    assert_eq!(a.status, 201);
    assert!(a.dropped().contains(&"Communication.note".to_string()));
    // The MCO is not in this consent at all.
    let mut mco_note = fixture("care-contact-update.json");
    mco_note["subject"] = json!({"identifier": {"system": MEMBER_SYSTEM, "value": "BHP-20931"}});
    let b = app.post("/fhir/Communication", MCO, &mco_note).await;
    assert_eq!(b.status, 403);
    assert_eq!(b.body["issue"][0]["diagnostics"], a_refusal_text());
    let items = housing_items(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["item"], "discharge");
}

fn a_refusal_text() -> &'static str {
    hearth::error::NO_AGREEMENT
}

#[tokio::test]
async fn a_hospitalisation_occurs_without_prior_notice() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(
        record(&app, share_with(&[CLINIC_ID, MCO_ID])).await.status,
        201
    );

    let discharge = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice.json"),
        )
        .await;
    assert_eq!(discharge.status, 201);

    // Housing is prompted to renew the consent with the tenant.
    let due = app.get("/housing/consents/due", HOUSING).await;
    assert_eq!(due.body["due"][0]["tenant_id"], "T-1001");
    assert_eq!(due.body["due"][0]["reason"], "hospitalisation");
    assert_eq!(due.body["due"][0]["reference_id"], discharge.reference_id());
    // The list named the tenant: the tenant's audit trail finds the read.
    assert_eq!(
        app.audit_record(&due.reference_id()).await["tenants_read"],
        json!(["T-1001"])
    );
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert_eq!(view.body["renewal_due"]["reason"], "hospitalisation");
    let feed = app.feed_all().await;
    assert!(
        feed.iter()
            .any(|e| e["change"] == "renewal-due" && e["renewal"]["reason"] == "hospitalisation")
    );

    // Sharing continues while renewal is due (the default) …
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
    // … and renewing the consent clears the prompt.
    let mut renewed = share_with(&[CLINIC_ID, MCO_ID]);
    renewed["signed_at"] = json!("2026-11-23T10:00:00Z");
    assert_eq!(record(&app, renewed).await.status, 201);
    assert_eq!(
        app.get("/housing/consents/due", HOUSING).await.body["due"],
        json!([])
    );
}

#[tokio::test]
async fn a_change_of_care_provider_and_a_tenant_request_prompt_renewal() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(
        record(&app, share_with(&[CLINIC_ID, MCO_ID])).await.status,
        201
    );
    assert_eq!(
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("care-contact-update.json")
        )
        .await
        .status,
        201
    );
    assert_eq!(
        app.get("/housing/consents/due", HOUSING).await.body["due"],
        json!([]),
        "a first coordinator is not a change"
    );
    let mut new_org = fixture("care-contact-update.json");
    new_org["identifier"][0]["value"] = json!("care-contact-2");
    new_org["contained"][1]["organization"] = json!({"display": "Lakeside Community Health"});
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &new_org)
            .await
            .status,
        201
    );
    let due = app.get("/housing/consents/due", HOUSING).await;
    assert_eq!(due.body["due"][0]["reason"], "change-of-provider");

    let other = spawn_app().await;
    other.register_tenant().await;
    let r = other
        .post_json(
            "/housing/tenants/T-1001/renewal-request",
            HOUSING,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["renewal_due"]["reason"], "tenant-request");
}

#[tokio::test]
async fn staff_need_urgent_clinical_advice() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(record(&app, share_with(&[CLINIC_ID])).await.status, 201);
    // The consent has lapsed: routine exchange stops.
    app.clock.set(datetime!(2027-06-02 08:00 UTC));
    let routine = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-notice.json"),
        )
        .await;
    assert_eq!(routine.status, 403);
    // Asking for an emergency without saying why is refused outright.
    let no_reason = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-notice.json"),
            &[("X-Purpose-Of-Use", "BTG")],
        )
        .await;
    assert_eq!(no_reason.status, 400);
    // A reason with a routine purpose would be dropped unread: refused, not ignored.
    let routine_with_reason = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-notice.json"),
            &[
                ("X-Purpose-Of-Use", "COC"),
                ("X-Break-Glass-Reason", "urgent"),
            ],
        )
        .await;
    assert_eq!(routine_with_reason.status, 400, "{routine_with_reason:?}");
    // With a purpose and a reason it goes ahead, flagged for review.
    let reason =
        "tenant confused and unwell; on-call nurse needs to know today's medication change";
    let urgent = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-notice.json"),
            &[
                ("X-Purpose-Of-Use", "BTG"),
                ("X-Break-Glass-Reason", reason),
            ],
        )
        .await;
    assert_eq!(urgent.status, 201, "{urgent:?}");
    let rec = app.audit_record(&urgent.reference_id()).await;
    assert_eq!(rec["break_glass"], "BTG");
    assert!(
        !rec.to_string().contains("on-call nurse"),
        "the free-text reason stays out of the audit body"
    );
    let review = app.get("/audit/break-glass", AUDITOR).await;
    assert_eq!(
        review.body["break_glass"][0]["reference_id"],
        urgent.reference_id()
    );
    assert_eq!(review.body["break_glass"][0]["reason"], reason);
    assert_eq!(review.body["break_glass"][0]["reason_matches_audit"], true);
    assert_eq!(app.get("/audit/break-glass", HOUSING).await.status, 403);
    let verify = app.get("/audit/verify", AUDITOR).await;
    assert_eq!(verify.body["ok"], true);
    assert_eq!(verify.body["verification"]["break_glass"]["emergencies"], 1);

    // An auditor reviews it: once, final, in the chain; the list then shows the finding
    // and no longer counts it as waiting.
    let waiting = app.get("/audit/break-glass?unreviewed=true", AUDITOR).await;
    assert_eq!(waiting.body["break_glass"].as_array().unwrap().len(), 1);
    let path = format!("/audit/break-glass/{}/review", urgent.reference_id());
    let justified = json!({"outcome": "justified"});
    assert_eq!(app.post_json(&path, ADMIN, &justified).await.status, 403);
    assert_eq!(
        app.post_json(&path, AUDITOR, &json!({"outcome": "fine"}))
            .await
            .status,
        400
    );
    let reviewed = app.post_json(&path, AUDITOR, &justified).await;
    assert_eq!(reviewed.status, 200, "{reviewed:?}");
    let again = app
        .post_json(&path, AUDITOR, &json!({"outcome": "not-justified"}))
        .await;
    assert_eq!(again.status, 409, "{again:?}");
    let rec = app.audit_record(&reviewed.reference_id()).await;
    assert_eq!(rec["action"], "review-break-glass");
    assert_eq!(rec["related"], urgent.reference_id());
    assert_eq!(rec["reason"], "justified");
    assert_eq!(rec["tenant"], "T-1001", "found under the tenant's trail");
    let refused = app.audit_record(&again.reference_id()).await;
    assert_eq!(refused["status"], 409, "{refused}");
    assert!(
        refused.get("reason").is_none_or(|r| r != "not-justified"),
        "{refused}"
    );
    // The reasons are free text about the tenant: not the operator's to read.
    assert_eq!(app.get("/audit/break-glass", ADMIN).await.status, 403);
    let listed = app.get("/audit/break-glass", AUDITOR).await;
    assert_eq!(
        listed.body["break_glass"][0]["review"]["outcome"],
        "justified"
    );
    assert_eq!(
        listed.body["break_glass"][0]["review"]["reviewer"],
        "auditor"
    );
    let waiting = app.get("/audit/break-glass?unreviewed=true", AUDITOR).await;
    assert_eq!(waiting.body["break_glass"], json!([]));
    let unknown = app
        .post_json(
            "/audit/break-glass/01JD5ZK9Q3XG6V7Y8N2M4P1R0S/review",
            AUDITOR,
            &justified,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");

    // The reasons are append-only, and the chain holds each one's digest: a reason
    // edited behind Hearth's back (triggers dropped first) shows as not matching.
    let db = rusqlite::Connection::open(app.data.path().join("hearth.db")).unwrap();
    let err = db
        .execute("UPDATE break_glass SET reason = 'routine check'", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    db.execute_batch(
        "DROP TRIGGER break_glass_is_append_only_update;
         UPDATE break_glass SET reason = 'routine check';",
    )
    .unwrap();
    let review = app.get("/audit/break-glass", AUDITOR).await;
    assert_eq!(review.body["break_glass"][0]["reason_matches_audit"], false);
    // The inspector's check of the whole trail says so too, naming the exchange...
    let verify = app.get("/audit/verify", AUDITOR).await;
    assert_eq!(verify.body["ok"], false, "{verify:?}");
    let problems = &verify.body["verification"]["break_glass"]["problems"];
    assert_eq!(problems[0]["reference_id"], urgent.reference_id());
    assert!(problems[0]["problem"].as_str().unwrap().contains("differs"));
    // ...and a reason deleted outright does not simply vanish from review: the chain
    // still records the emergency.
    db.execute_batch(
        "DROP TRIGGER break_glass_is_append_only_delete;
         DROP TRIGGER break_glass_reviews_are_final_delete;
         DELETE FROM break_glass_reviews;
         DELETE FROM break_glass;",
    )
    .unwrap();
    let review = app.get("/audit/break-glass", AUDITOR).await;
    assert_eq!(review.body["break_glass"], json!([]));
    let verify = app.get("/audit/verify", AUDITOR).await;
    assert_eq!(verify.body["ok"], false);
    let problems = &verify.body["verification"]["break_glass"]["problems"];
    assert_eq!(problems[0]["reference_id"], urgent.reference_id());
    assert!(problems[0]["problem"].as_str().unwrap().contains("missing"));
    let disclosures = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    assert_eq!(disclosures.body["disclosures"][0]["emergency"], true);
}

#[tokio::test]
async fn consent_expires_mid_stream() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(record(&app, share_with(&[CLINIC_ID])).await.status, 201);
    app.clock.set(datetime!(2027-05-31 23:30 UTC));
    assert_eq!(
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json")
        )
        .await
        .status,
        201
    );
    app.clock.set(datetime!(2027-06-01 00:00 UTC));
    let late = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("appointment-notice.json"),
        )
        .await;
    assert_eq!(late.status, 403);
    let rec = app.audit_record(&late.reference_id()).await;
    assert_eq!(rec["reason"], "consent-expired");
    assert_eq!(
        rec["consent"]["version"], 1,
        "the refusal cites the consent that lapsed"
    );
    assert_eq!(housing_items(&app).await.len(), 3);
}

#[tokio::test]
async fn the_tenant_narrows_consent_from_both_to_clinic_only() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let first = record(&app, share_with(&[CLINIC_ID, MCO_ID])).await;
    let consent_id = first.body["consent"]["id"].as_str().unwrap().to_string();
    let mut mco_note = fixture("care-contact-update.json");
    mco_note["subject"] = json!({"identifier": {"system": MEMBER_SYSTEM, "value": "BHP-20931"}});
    let before = app.post("/fhir/Communication", MCO, &mco_note).await;
    assert_eq!(before.status, 201);

    let mut narrower = share_with(&[CLINIC_ID]);
    narrower["signed_at"] = json!("2026-11-23T09:30:00Z");
    let second = record(&app, narrower).await;
    assert_eq!(
        second.body["consent"]["id"],
        consent_id.as_str(),
        "one consent per tenant, a new version"
    );
    assert_eq!(second.body["consent"]["version"], 2);

    mco_note["identifier"][0]["value"] = json!("after-narrowing");
    let after = app.post("/fhir/Communication", MCO, &mco_note).await;
    assert_eq!(after.status, 403);
    let clinic = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(clinic.status, 201);
    assert_eq!(
        app.audit_record(&before.reference_id()).await["consent"]["version"],
        1
    );
    assert_eq!(
        app.audit_record(&after.reference_id()).await["consent"]["version"],
        2
    );
    assert_eq!(
        app.audit_record(&clinic.reference_id()).await["consent"]["version"],
        2
    );

    // Both versions stay readable, in FHIR, for the auditor.
    let history = app
        .get(&format!("/fhir/Consent/{consent_id}/_history"), AUDITOR)
        .await;
    assert_eq!(history.body["total"], 2);
    let v1 = app
        .get(&format!("/fhir/Consent/{consent_id}/_history/1"), AUDITOR)
        .await;
    let actors = v1.body["provision"]["actor"].as_array().unwrap();
    assert!(
        actors
            .iter()
            .any(|a| a["reference"]["reference"] == format!("Organization/{MCO_ID}"))
    );
    // The MCO, no longer named, cannot read the current version.
    assert_eq!(
        app.get(&format!("/fhir/Consent/{consent_id}"), MCO)
            .await
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/fhir/Consent/{consent_id}"), CLINIC)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_restriction_on_substance_use_detail() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let mut form = share_with(&[CLINIC_ID, MCO_ID]);
    form["restrictions"] = json!(["substance-use"]);
    let a = record(&app, form).await;
    assert_eq!(a.status, 201, "{a:?}");
    let labels: Vec<&str> = a.body["fhir"]["provision"]["provision"][0]["securityLabel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["SUD", "ETH"]);

    let bup = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-buprenorphine-start.json"),
        )
        .await;
    assert_eq!(bup.status, 201);
    let appt = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("appointment-notice.json"),
        )
        .await;
    assert_eq!(appt.status, 201);
    // The buprenorphine start and the withdrawal-risk flag are withheld; the appointment is not.
    let items = housing_items(&app).await;
    let kinds: Vec<&str> = items.iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["next_appointment"]);
    assert!(!bup.body.to_string().to_lowercase().contains("withheld"));
    let rec = app.audit_record(&bup.reference_id()).await;
    assert_eq!(rec["items_withheld"].as_array().unwrap().len(), 2);
}

/// What housing already received stays in the feed's order, but once the tenant restricts
/// substance-use detail its content is no longer shown there: the entry says `restricted`
/// and carries no item, while everything else reads as before. Reading the exchange
/// itself (`GET /fhir/Communication/{id}`) shows housing the same: none of those items.
#[tokio::test]
async fn a_restriction_added_later_hides_earlier_items_from_housing() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(
        record(&app, share_with(&[CLINIC_ID, MCO_ID])).await.status,
        201
    );
    let mut posted = Vec::new();
    for f in [
        "medication-change-buprenorphine-start.json",
        "appointment-notice.json",
    ] {
        let a = app.post("/fhir/Communication", CLINIC, &fixture(f)).await;
        assert_eq!(a.status, 201, "{a:?}");
        posted.push(a.reference_id());
    }
    // The housing worker's read of one exchange: its items, as housing is shown them.
    let exchange_items = |reference: String| {
        let app = &app;
        async move {
            let a = app
                .get(&format!("/fhir/Communication/{reference}"), HOUSING)
                .await;
            assert_eq!(a.status, 200, "{a:?}");
            a.body["extension"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(
        exchange_items(posted[0].clone()).await,
        2,
        "the start and its flag"
    );
    let before = feed(&app).await;
    let sud_items: Vec<u64> = before
        .iter()
        .filter(|e| {
            e["item"]["labels"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == "SUD"))
        })
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sud_items.len(),
        2,
        "the start and the withdrawal-risk flag: {before:?}"
    );
    assert!(before.iter().all(|e| e.get("restricted").is_none()));

    let mut narrower = share_with(&[CLINIC_ID, MCO_ID]);
    narrower["restrictions"] = json!(["substance-use"]);
    narrower["signed_at"] = json!("2026-11-23T09:30:00Z");
    assert_eq!(record(&app, narrower).await.status, 201);

    // Read one at a time, the buprenorphine notice now shows housing none of its
    // items; the appointment notice, which carries no SUD label, is unchanged.
    assert_eq!(exchange_items(posted[0].clone()).await, 0);
    assert_eq!(exchange_items(posted[1].clone()).await, 1);

    let mut after = feed(&app).await;
    // The new version is on the feed, so a housing system that keeps its own copy knows
    // to read the tenant view again: entries it already took are not sent twice.
    let told = after.pop().unwrap();
    assert_eq!(told["change"], "consent", "{told}");
    assert_eq!(told["tenant"], "T-1001", "{told}");
    assert!(told.get("item").is_none(), "{told}");
    let seqs = |entries: &[Value]| {
        entries
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(&after),
        seqs(&before),
        "the same entries, in the same order"
    );
    for e in &after {
        let seq = e["seq"].as_u64().unwrap();
        if sud_items.contains(&seq) {
            assert_eq!(e["restricted"], true, "{e}");
            assert!(e.get("item").is_none(), "restricted content shown: {e}");
        } else {
            assert!(e.get("restricted").is_none(), "{e}");
            let original = before.iter().find(|b| b["seq"] == seq).unwrap();
            assert_eq!(e, original);
        }
    }
}

/// Housing declines a partner's proposal: it is rejected, not revoked. As a revocation
/// it would govern as the tenant's latest choice and stop the sharing the tenant agreed
/// to; and the partner cannot read a declined proposal back either.
#[tokio::test]
async fn a_declined_proposal_changes_nothing_the_tenant_agreed_to() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(record(&app, share_with(&[CLINIC_ID])).await.status, 201);
    let proposed = app
        .post(
            "/fhir/Consent",
            CLINIC,
            &fixture("consent-share-with-clinic.json"),
        )
        .await;
    assert_eq!(proposed.status, 202, "{proposed:?}");
    let id = app.consent_id_with_status("proposed").await;
    let declined = app
        .post_json(
            &format!("/housing/consents/{id}/revoke"),
            HOUSING,
            &json!({}),
        )
        .await;
    assert_eq!(declined.status, 200, "{declined:?}");
    assert_eq!(declined.body["consent"]["status"], "rejected");
    assert_eq!(
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json")
        )
        .await
        .status,
        201,
        "the tenant's own consent still governs"
    );
    assert_eq!(
        app.get(&format!("/fhir/Consent/{id}"), CLINIC).await.status,
        404
    );
    // Housing's next choice is a new version of the tenant's own consent, not of the
    // declined proposal.
    let own = app.consent_id_with_status("active").await;
    let next = record(&app, share_with(&[CLINIC_ID, MCO_ID])).await;
    assert_eq!(next.status, 201, "{next:?}");
    assert_eq!(next.body["consent"]["id"], own);
}

#[tokio::test]
async fn a_consent_posted_by_a_partner_waits_for_housing_to_confirm_it() {
    let app = spawn_app().await;
    app.register_tenant().await;
    // The clinic's copy carries its own narrative about the patient.
    let mut proposal = fixture("consent-share-with-clinic.json");
    proposal["text"] = json!({
        "status": "generated",
        "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Signed by Margaret Okafor on the ward</div>"
    });
    let proposed = app.post("/fhir/Consent", CLINIC, &proposal).await;
    assert_eq!(proposed.status, 202, "{proposed:?}");
    assert!(proposed.header("location").is_none());
    // Proposing for someone who is not a tenant is answered exactly the same way, so a
    // partner cannot use proposals to find out who is one.
    let mut stranger = fixture("consent-share-with-clinic.json");
    stranger["patient"]["identifier"]["value"] = json!("T-9999");
    let not_a_tenant = app.post("/fhir/Consent", CLINIC, &stranger).await;
    assert_eq!(not_a_tenant.status, 202, "{not_a_tenant:?}");
    let strip = |a: &Answer| {
        let mut issues = a.body["issue"].clone();
        issues.as_array_mut().unwrap().pop(); // the reference ID
        issues
    };
    assert_eq!(strip(&not_a_tenant), strip(&proposed));
    assert_eq!(
        app.audit_record(&not_a_tenant.reference_id()).await["outcome"],
        "refused"
    );
    let id = app.consent_id_with_status("proposed").await;
    // Nor can the partner read its proposal back, which would tell it the same thing.
    assert_eq!(
        app.get(&format!("/fhir/Consent/{id}"), CLINIC).await.status,
        404
    );
    assert_eq!(
        app.get(&format!("/fhir/Consent/{id}/_history"), CLINIC)
            .await
            .status,
        404
    );
    let search = app
        .get(
            "/fhir/Consent?patient:identifier=https://housing.example.org/tenant-id|T-1001&status=proposed",
            CLINIC,
        )
        .await;
    assert_eq!(search.body["total"], 0, "{search:?}");
    assert_eq!(
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json")
        )
        .await
        .status,
        403
    );

    let id = id.as_str();
    let confirmed = app
        .post_json(
            &format!("/housing/consents/{id}/confirm"),
            HOUSING,
            &json!({}),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{confirmed:?}");
    assert_eq!(confirmed.body["consent"]["status"], "active");
    // What the partners it names can now read is the terms, not the proposer's wrapping.
    let read = app.get(&format!("/fhir/Consent/{id}"), CLINIC).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["status"], "active");
    assert!(!read.body.to_string().contains("Okafor"), "{read:?}");
    assert!(!read.body.to_string().contains("RCC-CONSENT"), "{read:?}");
    assert_eq!(
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json")
        )
        .await
        .status,
        201
    );

    // The partner cannot confirm its own proposal, and revocation stops everything.
    assert_eq!(
        app.post_json(
            &format!("/housing/consents/{id}/revoke"),
            CLINIC,
            &json!({})
        )
        .await
        .status,
        403
    );
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
    let after = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("care-contact-update.json"),
        )
        .await;
    assert_eq!(after.status, 403);
    assert_eq!(
        after.body["issue"][0]["diagnostics"],
        hearth::error::NO_AGREEMENT
    );
    assert_eq!(
        app.audit_record(&after.reference_id()).await["reason"],
        "consent-revoked"
    );
}

#[tokio::test]
async fn the_fhir_form_and_the_housing_form_agree() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let mut form = share_with(&[CLINIC_ID]);
    form["direction"] = json!("to-housing");
    form["restrictions"] = json!(["hiv"]);
    let a = record(&app, form).await;
    let id = a.body["consent"]["id"].as_str().unwrap();
    // Search by any identifier the tenant is known by.
    let found = app
        .get(
            &format!("/fhir/Consent?patient:identifier={MRN_SYSTEM}|MRN-448812&status=active"),
            HOUSING,
        )
        .await;
    assert_eq!(found.body["total"], 1, "{found:?}");
    // R4 fullUrls are absolute, under the base the client used; the searchset links
    // itself as the search it ran.
    assert_eq!(
        found.body["entry"][0]["fullUrl"],
        format!("{}/fhir/Consent/{id}", app.base)
    );
    assert_eq!(found.body["link"][0]["relation"], "self");
    let own = found.body["link"][0]["url"].as_str().unwrap();
    assert!(
        own.starts_with(&format!("{}/fhir/Consent?patient:identifier=", app.base))
            && own.ends_with("&status=active"),
        "{own}"
    );
    // A status that is not a consent state is refused, not matched against nothing.
    let odd = app
        .get("/fhir/Consent?patient=T-1001&status=revoked", HOUSING)
        .await;
    assert_eq!(odd.status, 400, "{odd:?}");
    // The state as a token with its code system, and the format asked for as JSON, are
    // the same search; another format is not served (406).
    let token = app
        .get(
            "/fhir/Consent?patient=T-1001&status=http://hl7.org/fhir/consent-state-codes|active&_format=json&_pretty=true",
            HOUSING,
        )
        .await;
    assert_eq!(token.status, 200, "{token:?}");
    assert_eq!(token.body["total"], found.body["total"]);
    let inactive = app
        .get(
            "/fhir/Consent?patient=T-1001&status=http://hl7.org/fhir/consent-state-codes|inactive",
            HOUSING,
        )
        .await;
    assert_eq!(
        inactive.body["total"], 0,
        "the state is filtered: {inactive:?}"
    );
    let other_system = app
        .get(
            "/fhir/Consent?patient=T-1001&status=http://example.org/states|active",
            HOUSING,
        )
        .await;
    assert_eq!(other_system.status, 400, "{other_system:?}");
    let xml = app
        .get("/fhir/Consent?patient=T-1001&_format=xml", HOUSING)
        .await;
    assert_eq!(xml.status, 406, "{xml:?}");
    let fhir = &found.body["entry"][0]["resource"];
    assert_eq!(fhir["id"], id);
    assert_eq!(fhir["scope"]["coding"][0]["code"], "patient-privacy");
    assert_eq!(fhir["category"][0]["coding"][0]["code"], "IDSCL");
    assert_eq!(fhir["provision"]["purpose"][0]["code"], "COC");
    let roles: Vec<&str> = fhir["provision"]["actor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["INF"],
        "to-housing only: the clinic may send, not receive"
    );
    // Putting the FHIR form back unchanged yields the same terms, as a new version.
    let put = app
        .put_with(&format!("/fhir/Consent/{id}"), HOUSING, fhir, &[])
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    let versions = list.body["consents"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("version");
        v.as_object_mut().unwrap().remove("governing");
        v
    };
    assert_eq!(strip(&versions[0]), strip(&versions[1]));
    assert_eq!(versions[0]["restrictions"], json!(["hiv"]));

    // An edit of version 1 after version 2 was stored would undo it: with If-Match
    // naming the version the worker edited, it is refused (412) and nothing is stored.
    let path = format!("/fhir/Consent/{id}");
    let put_if = |version: &'static str| {
        let (app, path, fhir) = (&app, &path, &fhir);
        async move {
            app.put_with(path, HOUSING, fhir, &[("if-match", version)])
                .await
        }
    };
    let stale = put_if("W/\"1\"").await;
    assert_eq!(stale.status, 412, "{stale:?}");
    assert_eq!(
        stale.body["issue"][0]["code"], "conflict",
        "an edit conflict"
    );
    let garbled = put_if("yesterday").await;
    assert_eq!(garbled.status, 400, "{garbled:?}");
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    assert_eq!(list.body["consents"].as_array().unwrap().len(), 2);
    let current = put_if("W/\"2\"").await;
    assert_eq!(current.status, 200, "{current:?}");
    assert_eq!(current.header("etag"), Some("W/\"3\"".to_string()));

    // R4 update: the body names the resource the URL does; without an id, or with
    // another, it is a bad request and nothing is stored.
    for body in [
        {
            let mut b = fhir.clone();
            b.as_object_mut().unwrap().remove("id");
            b
        },
        {
            let mut b = fhir.clone();
            b["id"] = json!("another-consent");
            b
        },
    ] {
        let a = app
            .put_with(&format!("/fhir/Consent/{id}"), HOUSING, &body, &[])
            .await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.error_expressions(), ["Consent.id"]);
    }
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    assert_eq!(list.body["consents"].as_array().unwrap().len(), 3);
    // An update of a consent that does not exist creates nothing (R4: 405, Hearth does
    // not take client-chosen ids).
    let mut stray = fhir.clone();
    stray["id"] = json!("no-such-consent");
    let missing = app
        .put_with("/fhir/Consent/no-such-consent", HOUSING, &stray, &[])
        .await;
    assert_eq!(missing.status, 405, "{missing:?}");
    assert_eq!(
        missing.header("allow").as_deref(),
        Some("GET, HEAD"),
        "{missing:?}"
    );
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    assert_eq!(list.body["consents"].as_array().unwrap().len(), 3);

    // History says how each version came about: created, then updated.
    let history = app
        .get(&format!("/fhir/Consent/{id}/_history"), HOUSING)
        .await;
    let entries = history.body["entry"].as_array().unwrap();
    let how: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["request"]["method"].as_str().unwrap(),
                e["response"]["etag"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        how,
        [("PUT", "W/\"3\""), ("PUT", "W/\"2\""), ("POST", "W/\"1\"")]
    );
    assert!(
        entries
            .iter()
            .all(|e| e["fullUrl"] == format!("{}/fhir/Consent/{id}", app.base))
    );
    // A search that finds nothing has no `entry` (FHIR JSON has no empty arrays).
    let none = app.get("/fhir/Consent?patient=T-4040", HOUSING).await;
    assert_eq!(none.status, 200, "{none:?}");
    assert_eq!(none.body["total"], 0);
    assert!(none.body.get("entry").is_none(), "{none:?}");
}

/// Behind a proxy that rewrites the host, or under a path prefix, the configured public
/// base is what Bundles name.
#[tokio::test]
async fn bundles_name_the_configured_public_base() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config_with(data.path(), None);
    config.public_base_url = Some("https://hearth.housing.example/api/fhir/".into());
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
    app.register_tenant().await;
    let a = record(&app, share_with(&[CLINIC_ID])).await;
    let id = a.body["consent"]["id"].as_str().unwrap();
    let found = app.get("/fhir/Consent?patient=T-1001", HOUSING).await;
    assert_eq!(
        found.body["entry"][0]["fullUrl"],
        format!("https://hearth.housing.example/api/fhir/Consent/{id}")
    );
    assert_eq!(
        found.body["link"][0]["url"],
        "https://hearth.housing.example/api/fhir/Consent?patient=T-1001"
    );
    let history = app
        .get(&format!("/fhir/Consent/{id}/_history"), HOUSING)
        .await;
    assert_eq!(
        history.body["link"][0]["url"],
        format!("https://hearth.housing.example/api/fhir/Consent/{id}/_history")
    );
}

#[tokio::test]
async fn the_worker_can_print_an_accounting_of_disclosures_and_preview_a_share() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let mut form = share_with(&[CLINIC_ID, MCO_ID]);
    form["restrictions"] = json!(["substance-use"]);
    record(&app, form).await;
    app.post(
        "/fhir/Communication",
        CLINIC,
        &fixture("discharge-notice.json"),
    )
    .await;
    app.post(
        "/fhir/Communication",
        CLINIC,
        &fixture("risk-flag-update.json"),
    )
    .await;

    let d = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    assert_eq!(d.status, 200);
    let list = d.body["disclosures"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let s = list[0]["summary"].as_str().unwrap();
    assert!(s.contains("Riverside Community Clinic shared discharge and follow-up details with Northside Housing Association for care coordination"), "{s}");
    assert!(s.contains("version 1"), "{s}");

    let p = app
        .get(
            &format!("/housing/tenants/T-1001/preview?partner={MCO_ID}"),
            HOUSING,
        )
        .await;
    assert_eq!(p.body["decision"], "permit", "{p:?}");
    assert_eq!(p.body["would_receive"].as_array().unwrap().len(), 4);
    let nobody = app
        .get(
            "/housing/tenants/T-1001/preview?partner=eastside-clinic",
            HOUSING,
        )
        .await;
    assert_eq!(nobody.body["decision"], "deny");
    assert_eq!(nobody.body["reason"], "partner-not-covered");
    // A partner Hearth does not know, none named, or a parameter it does not take: a
    // 400 that points at the parameter.
    for (query, at) in [
        ("partner=nobody", "partner"),
        ("", "partner"),
        ("partner=riverside-clinic&format=pdf", "format"),
    ] {
        let a = app
            .get(&format!("/housing/tenants/T-1001/preview?{query}"), HOUSING)
            .await;
        assert_eq!(a.status, 400, "{query}: {a:?}");
        assert_eq!(a.error_expressions(), [at], "{query}: {a:?}");
    }
    assert_eq!(
        app.get("/housing/tenants/T-1001/disclosures", CLINIC)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn a_consent_form_with_mistakes_is_refused_with_clear_errors() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let a = record(
        &app,
        json!({"tenant_id": "T-1001", "share_with": ["nobody"], "restrictions": ["astrology"]}),
    )
    .await;
    assert_eq!(a.status, 422, "{a:?}");
    let mut at = a.error_expressions();
    at.sort();
    assert_eq!(at, ["restrictions[0]", "share_with[0]", "valid_until"]);
    let b = record(&app, json!({"tenant_id": "T-1001", "share_with": [CLINIC_ID], "valid_until": "2027-05-31", "colour": "blue"})).await;
    assert_eq!(b.status, 400);
    let c = record(
        &app,
        json!({"tenant_id": "T-4040", "share_with": [CLINIC_ID], "valid_until": "2027-05-31"}),
    )
    .await;
    assert_eq!(
        (c.status, c.error_expressions()),
        (422, vec!["tenant_id".to_string()])
    );
    assert_eq!(
        app.post_json("/housing/consents", CLINIC, &share_with(&[CLINIC_ID]))
            .await
            .status,
        403
    );
}

/// A revocation stored while a notice is between its consent decision and its commit
/// stops that notice: it is not stored under the consent the tenant just withdrew.
#[tokio::test]
async fn a_revocation_overtakes_a_notice_decided_before_it() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let id = app.consent_id_with_status("active").await;
    // A partner's proposal in between changes nothing that decides: the notice stands.
    let first = prepare_clinic_notice(&app, fixture("risk-flag-update.json"))
        .await
        .unwrap();
    let proposal = app
        .post(
            "/fhir/Consent",
            MCO,
            &fixture("consent-share-with-clinic.json"),
        )
        .await;
    assert_eq!(proposal.status, 202, "{proposal:?}");
    let stored = app.gateway.commit(vec![first]).await;
    assert!(stored.is_ok(), "{stored:?}");
    let before = housing_items(&app).await.len();

    let prepared = prepare_clinic_notice(&app, fixture("discharge-notice.json"))
        .await
        .expect("permitted under the consent as it stood");
    let resend = prepare_clinic_notice(&app, fixture("risk-flag-update.json"))
        .await
        .unwrap();
    let revoked = app
        .post_json(
            &format!("/housing/consents/{id}/revoke"),
            HOUSING,
            &json!({}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let committed = app.gateway.commit(vec![prepared]).await;
    assert!(
        matches!(&committed, Err(hearth::error::Error::Conflict(m)) if m.contains("consent changed")),
        "{committed:?}"
    );
    assert_eq!(housing_items(&app).await.len(), before);
    assert!(
        !feed(&app)
            .await
            .iter()
            .any(|e| e["item"]["item"] == "discharge"),
        "the discharge reached housing"
    );
    // A resend of the notice stored before the revocation, caught in the same race, is
    // the replay it is: nothing new stored, nothing refused.
    let replayed = app.gateway.commit(vec![resend]).await;
    assert!(
        matches!(&replayed, Ok(r) if matches!(r[0].outcome, hearth::store::ExchangeOutcome::Replayed { .. })),
        "{replayed:?}"
    );
}

/// Where sharing pauses while a renewal is due, a notice decided before another
/// clinic's discharge opened the renewal prompt, and committed after, is not stored: the
/// sender is told to send it again, and the resend is decided with sharing paused.
#[tokio::test]
async fn a_renewal_prompt_opened_after_a_notice_was_decided_stops_it_where_renewal_pauses_sharing()
{
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config_with(data.path(), None);
    config.consent.share_while_renewal_due = false;
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http")
        .await
        .with_consenting_tenant()
        .await;
    let prepared = prepare_clinic_notice(&app, fixture("medication-change-notice.json"))
        .await
        .expect("permitted: no renewal is due yet");
    let discharge = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice.json"),
        )
        .await;
    assert_eq!(discharge.status, 201, "{discharge:?}");
    assert!(
        feed(&app)
            .await
            .iter()
            .any(|e| e["change"] == "renewal-due"),
        "the discharge opened a renewal prompt"
    );
    let before = housing_items(&app).await.len();

    let committed = app.gateway.commit(vec![prepared]).await;
    assert!(
        matches!(&committed, Err(hearth::error::Error::Conflict(m)) if m.contains("consent changed")),
        "{committed:?}"
    );
    assert_eq!(housing_items(&app).await.len(), before);
    let resent = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-notice.json"),
        )
        .await;
    assert_eq!(resent.status, 403, "{resent:?}");
}

async fn due(app: &TestApp) -> Vec<Value> {
    let a = app.get("/housing/consents/due", HOUSING).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["due"].as_array().unwrap().clone()
}

/// The tenant's consent runs to 31 May 2027. A month before, housing's renewal list says
/// so, in time to ask the tenant; once it has ended (sharing has stopped), it says that;
/// the renewed consent takes the tenant off the list.
#[tokio::test]
async fn a_consent_coming_to_its_end_is_listed_for_renewal_before_and_after() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(record(&app, share_with(&[CLINIC_ID])).await.status, 201);
    assert_eq!(due(&app).await, Vec::<Value>::new());

    app.clock.set(datetime!(2027-05-10 09:00 UTC));
    let listed = due(&app).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["tenant_id"], "T-1001");
    assert_eq!(listed[0]["reason"], "expiring");
    assert_eq!(
        listed[0]["ends"], "2027-06-01T00:00:00Z",
        "sharing stops then"
    );
    assert_eq!(listed[0]["since"], "2027-05-02T00:00:00Z");

    // Discharged from hospital in the same month: one line for the tenant, both reasons,
    // due since the earlier of the two.
    app.clock.set(datetime!(2027-05-12 09:00 UTC));
    let discharge = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice.json"),
        )
        .await;
    assert_eq!(discharge.status, 201, "{discharge:?}");
    let listed = due(&app).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["reason"],
            &listed[0]["reasons"],
            &listed[0]["since"]
        ),
        (
            &json!("hospitalisation"),
            &json!(["hospitalisation", "expiring"]),
            &json!("2027-05-02T00:00:00Z")
        ),
        "{listed:?}"
    );
    assert_eq!(listed[0]["ends"], "2027-06-01T00:00:00Z");
    assert_eq!(listed[0]["reference_id"], discharge.reference_id());

    app.clock.set(datetime!(2027-06-02 09:00 UTC));
    let listed = due(&app).await;
    // Ended comes first: sharing has stopped.
    assert_eq!(listed[0]["reason"], "expired", "{listed:?}");
    assert_eq!(listed[0]["reasons"], json!(["expired", "hospitalisation"]));
    let notice = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(notice.status, 403, "sharing stopped at the end: {notice:?}");

    let mut renewed = share_with(&[CLINIC_ID]);
    renewed["valid_until"] = json!("2028-05-31");
    renewed["signed_at"] = json!("2027-06-02T08:30:00Z");
    assert_eq!(record(&app, renewed).await.status, 201);
    assert_eq!(due(&app).await, Vec::<Value>::new());
}

/// The worker ticks "treatment" rather than "care coordination": the clinic's routine
/// notices, which are care coordination, are still covered.
#[tokio::test]
async fn a_consent_for_treatment_covers_the_clinics_routine_notices() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let mut form = share_with(&[CLINIC_ID]);
    form["purpose"] = json!("treatment");
    assert_eq!(record(&app, form).await.status, 201);
    let notice = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(notice.status, 201, "{notice:?}");
    assert!(!housing_items(&app).await.is_empty());
}

/// The tenant shares with the clinic and the MCO, but wants the MCO kept out of her
/// substance-use treatment ("who / what"): the clinic's buprenorphine notice reaches
/// housing, the clinic may receive it back, the MCO would not; the consent says so in its
/// summary and in FHIR, and the FHIR form records the same terms when put back.
#[tokio::test]
async fn a_restriction_can_hold_for_one_partner_only() {
    let app = spawn_app().await;
    app.register_tenant().await;
    // A restriction for a partner the tenant does not share with could never apply.
    let mut stray = share_with(&[CLINIC_ID]);
    stray["withhold_from"] = json!({MCO_ID: ["substance-use"]});
    let refused = record(&app, stray).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(
        refused.error_expressions(),
        [format!("withhold_from.{MCO_ID}")]
    );
    let mut form = share_with(&[CLINIC_ID, MCO_ID]);
    form["withhold_from"] = json!({MCO_ID: ["substance-use"]});
    let recorded = record(&app, form).await;
    assert_eq!(recorded.status, 201, "{recorded:?}");
    let start = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-buprenorphine-start.json"),
        )
        .await;
    assert_eq!(start.status, 201, "{start:?}");
    let preview = |partner: &'static str| {
        let app = &app;
        async move {
            let p = app
                .get(
                    &format!("/housing/tenants/T-1001/preview?partner={partner}"),
                    HOUSING,
                )
                .await;
            assert_eq!(p.status, 200, "{p:?}");
            p.body
        }
    };
    let to_mco = preview(MCO_ID).await;
    let held: Vec<&str> = to_mco["withheld"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["item"].as_str().unwrap())
        .collect();
    assert!(held.contains(&"medication_change"), "{to_mco}");
    let to_clinic = preview(CLINIC_ID).await;
    assert_eq!(to_clinic["withheld"], json!([]), "{to_clinic}");

    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    let summary = &list.body["consents"][0];
    assert_eq!(
        summary["withhold_from"],
        json!({MCO_ID: ["substance-use"]}),
        "{summary}"
    );
    assert_eq!(summary["restrictions"], json!([]));
    // In FHIR: a nested deny naming the MCO as recipient; put back, the same terms.
    let id = summary["id"].as_str().unwrap();
    let fhir = app.get(&format!("/fhir/Consent/{id}"), HOUSING).await.body;
    let nested = &fhir["provision"]["provision"][0];
    assert_eq!(
        nested["actor"][0]["reference"]["reference"],
        format!("Organization/{MCO_ID}")
    );
    assert_eq!(nested["actor"][0]["role"]["coding"][0]["code"], "IRCP");
    let put = app
        .put_with(&format!("/fhir/Consent/{id}"), HOUSING, &fhir, &[])
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    assert_eq!(
        list.body["consents"][0]["withhold_from"],
        summary["withhold_from"]
    );
}

/// Later the tenant asks that nothing about her substance-use treatment that the clinic
/// sends be kept by housing (a restriction on what the clinic sends, FHIR actor role
/// INF). The buprenorphine notice the clinic sent before is hidden from housing's view
/// and the feed from then on, as a restriction for every partner would hide it.
#[tokio::test]
async fn a_restriction_on_what_a_partner_sends_hides_what_it_already_sent() {
    // Partners with an endpoint, so a note to the MCO is judged on its facts (nothing is
    // queued in this test: the endpoint is never reached).
    let data = tempfile::tempdir().unwrap();
    let config = test_config_with(data.path(), Some("http://127.0.0.1:9/fhir"));
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
    app.register_tenant().await;
    assert_eq!(
        record(&app, share_with(&[CLINIC_ID, MCO_ID])).await.status,
        201
    );
    let start = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-buprenorphine-start.json"),
        )
        .await;
    assert_eq!(start.status, 201, "{start:?}");
    let kinds = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["item"].as_str().unwrap().to_string())
            .collect()
    };
    let held = housing_items(&app).await;
    let medication = held
        .iter()
        .find(|i| i["item"] == "medication_change")
        .expect("housing holds the clinic's medication change");
    let medication_id = medication["id"].as_str().unwrap().to_string();
    let before = feed(&app).await;
    assert!(
        before.iter().all(|e| e["restricted"].is_null()),
        "{before:?}"
    );

    // The form names restrictions on what a partner receives; the FHIR form also on
    // what it sends: the same nested deny, its actor's role INF.
    let mut form = share_with(&[CLINIC_ID, MCO_ID]);
    form["withhold_from"] = json!({CLINIC_ID: ["substance-use"]});
    app.record_sending_restriction(&form).await;
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    assert_eq!(
        list.body["consents"][0]["withhold_when_sent_by"],
        json!({CLINIC_ID: ["substance-use"]}),
        "{list:?}"
    );

    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    let items = view.body["items"].as_array().unwrap();
    assert!(
        !kinds(items).contains(&"medication_change".to_string()),
        "{view:?}"
    );
    assert!(
        view.body["restricted_items"].as_u64().unwrap() >= 1,
        "{view:?}"
    );
    let after = feed(&app).await;
    let hidden: Vec<&Value> = after.iter().filter(|e| e["restricted"] == true).collect();
    assert!(!hidden.is_empty(), "{after:?}");
    assert!(hidden.iter().all(|e| e.get("item").is_none()), "{hidden:?}");
    // Nor does housing pass it on: the preview for the MCO holds it back, and a note
    // cannot attach it.
    let preview = app
        .get(
            &format!("/housing/tenants/T-1001/preview?partner={MCO_ID}"),
            HOUSING,
        )
        .await;
    assert!(
        !kinds(preview.body["would_receive"].as_array().unwrap())
            .contains(&"medication_change".to_string()),
        "{preview:?}"
    );
    let note = json!({"tenant_id": "T-1001", "to": MCO_ID, "reason": "Please check in with her this week",
        "facts": [{"item_id": medication_id}]});
    let attached = app.post_json("/housing/notes", HOUSING, &note).await;
    assert_eq!(attached.status, 422, "{attached:?}");
    assert_eq!(attached.error_expressions(), ["facts[0]"]);
}

/// The tenant has since asked that substance-use details stay private: the preview of a
/// share with the MCO leaves them out, and does not describe them either (which kind of
/// item, which label) — the tenant view only counts them, and so does the preview.
/// What it showed is on the record.
#[tokio::test]
async fn the_preview_neither_shares_nor_describes_what_the_consent_keeps_private() {
    let app = spawn_app().await;
    app.register_tenant().await;
    assert_eq!(
        record(&app, share_with(&[CLINIC_ID, MCO_ID])).await.status,
        201
    );
    let start = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("medication-change-buprenorphine-start.json"),
        )
        .await;
    assert_eq!(start.status, 201, "{start:?}");
    let appointment = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("appointment-notice.json"),
        )
        .await;
    assert_eq!(appointment.status, 201, "{appointment:?}");
    let mut narrower = share_with(&[CLINIC_ID, MCO_ID]);
    narrower["restrictions"] = json!(["substance-use"]);
    assert_eq!(record(&app, narrower).await.status, 201);

    let p = app
        .get(
            &format!("/housing/tenants/T-1001/preview?partner={MCO_ID}"),
            HOUSING,
        )
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.body["decision"], "permit", "{p:?}");
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert!(
        view.body["restricted_items"].as_u64() >= Some(1),
        "{view:?}"
    );
    assert_eq!(
        p.body["restricted_items"], view.body["restricted_items"],
        "{p:?}"
    );
    assert_eq!(p.body["withheld"], json!([]), "{p:?}");
    let shown: Vec<String> = p.body["would_receive"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown.len(), 1, "{p:?}");
    let text = p.body.to_string();
    assert!(
        !text.contains("SUD") && !text.contains("medication_change"),
        "{p:?}"
    );

    let record = app.audit_record(&p.reference_id()).await;
    assert_eq!(record["action"], "preview", "{record}");
    assert_eq!(record["items_read"], json!(shown), "{record}");
}

/// The tenant agrees that the clinic may tell housing, not that housing may tell the
/// clinic: notices come in, a care coordination note to the clinic does not go out.
#[tokio::test]
async fn a_consent_to_housing_only_lets_notices_in_but_no_note_out() {
    let clinic = common::partner::Partner::start().await;
    let app = spawn_app_with(tempfile::tempdir().unwrap(), Some(&clinic.base)).await;
    app.register_tenant().await;
    let mut form = share_with(&[CLINIC_ID]);
    form["direction"] = json!("to-housing");
    assert_eq!(record(&app, form).await.status, 201);
    let notice = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(notice.status, 201, "{notice:?}");
    let note = app
        .post_json(
            "/housing/notes",
            HOUSING,
            &json!({"tenant_id": "T-1001", "to": CLINIC_ID, "reason": "Tenant asked us to check in"}),
        )
        .await;
    assert_eq!(note.status, 403, "{note:?}");
    assert_eq!(
        app.audit_record(&note.reference_id()).await["reason"],
        "partner-not-covered"
    );
    let notes = app.get("/housing/notes?tenant=T-1001", HOUSING).await;
    assert_eq!(notes.body["notes"], json!([]));
    assert!(clinic.bundles().is_empty());
}

/// A site that stops assigning a label (its rule removed from `sensitivity.toml`) still
/// holds items that carry it. Renewing a consent that withheld them keeps the restriction;
/// only a label nothing was ever restricted by is refused.
#[tokio::test]
async fn renewing_a_consent_keeps_a_restriction_on_a_label_the_mappings_no_longer_assign() {
    let site = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(root().join("mappings")).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, site.path().join(file.file_name().unwrap())).unwrap();
    }
    let sensitivity = site.path().join("sensitivity.toml");
    let rules = std::fs::read_to_string(&sensitivity).unwrap();
    // `[restrictions]` is the file's last table: a housing form restriction for GDIS.
    std::fs::write(&sensitivity, format!("{rules}genetic = [\"GDIS\"]\n")).unwrap();
    let mappings = std::sync::Arc::new(hearth::mapping::Mappings::load(site.path()).unwrap());
    let gdis =
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS"});

    let app = spawn_with_mappings(tempfile::tempdir().unwrap(), mappings).await;
    app.register_tenant().await;
    let mut consent = fixture("consent-clinic-and-mco-no-sud.json");
    consent["provision"]["provision"][0]["securityLabel"][1] = gdis.clone();
    let created = app.post("/fhir/Consent", HOUSING, &consent).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();

    // The site drops the rule; Hearth restarts on the same store.
    let app = spawn_app_in(app.stop().await).await;
    let mut renewed = app.get(&format!("/fhir/Consent/{id}"), HOUSING).await.body;
    renewed["provision"]["period"]["end"] = json!("2028-06-30");
    let put = app
        .put_with(&format!("/fhir/Consent/{id}"), HOUSING, &renewed, &[])
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let labels = &put.body["provision"]["provision"][0]["securityLabel"];
    assert!(
        labels
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["code"] == "GDIS"),
        "{put:?}"
    );

    // A label neither assigned nor restricted before is still refused.
    renewed["provision"]["provision"][0]["securityLabel"] = json!([gdis, {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "XYZ"}]);
    let again = app
        .put_with(&format!("/fhir/Consent/{id}"), HOUSING, &renewed, &[])
        .await;
    assert_eq!(
        (again.status, again.error_expressions()),
        (
            422,
            vec!["Consent.provision.provision[0].securityLabel[1]".to_string()]
        ),
        "{again:?}"
    );
    // A create from housing adds a version to the tenant's consent: it may keep it too.
    renewed["provision"]["provision"][0]["securityLabel"] = json!([gdis]);
    renewed.as_object_mut().unwrap().remove("id");
    let posted = app.post("/fhir/Consent", HOUSING, &renewed).await;
    assert_eq!(posted.status, 201, "{posted:?}");
}

/// A consent written in Pacific time ends at 07:59 UTC on its notice day; a prompt opened
/// at 03:00 UTC that morning is the earlier reason, whatever the two times look like as
/// text. The list orders by time.
#[tokio::test]
async fn a_tenant_is_due_since_the_earlier_reason_in_time_not_in_text() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let mut consent = fixture("consent-share-with-clinic.json");
    consent["provision"]["period"] =
        json!({"start": "2026-01-01", "end": "2027-05-31T23:59:59-08:00"});
    let c = app.post("/fhir/Consent", HOUSING, &consent).await;
    assert_eq!(c.status, 201, "{c:?}");

    app.clock.set(datetime!(2027-05-02 03:00 UTC));
    let discharge = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("discharge-notice.json"),
        )
        .await;
    assert_eq!(discharge.status, 201, "{discharge:?}");
    app.clock.set(datetime!(2027-05-02 09:00 UTC));
    let listed = due(&app).await;
    assert_eq!(
        (&listed[0]["reasons"], &listed[0]["since"]),
        (
            &json!(["hospitalisation", "expiring"]),
            &json!("2027-05-02T03:00:00Z")
        ),
        "{listed:?}"
    );
}
