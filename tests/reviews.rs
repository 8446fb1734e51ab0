//! Joint case reviews for high-risk tenants ("Operational example 3"): decisions with
//! owners and due dates, kept as a CarePlan only the review team and auditors can read.

mod common;

use common::*;
use serde_json::{Value, json};

fn review() -> Value {
    json!({
        "tenant_id": "T-1001",
        "date": "2026-11-23",
        "attendees": ["northside-housing", "riverside-clinic", "bayview-health-plan"],
        "decisions": [
            {"kind": "outreach", "action": "Weekly welfare visit by the MCO care manager", "owner": "bayview-health-plan", "due": "2026-11-30"},
            {"kind": "clinical-action", "action": "Falls clinic referral and medication review", "owner": "riverside-clinic", "due": "2026-12-07"},
            {"kind": "housing-accommodation", "action": "Fit grab rails and move the tenant's bed downstairs", "owner": "northside-housing", "due": "2026-12-04"}
        ],
        "next_review": "2026-12-21"
    })
}

/// [`review`], with the clinic's action naming the tenant's methadone: substance-use
/// information, by its words.
fn review_naming_methadone() -> Value {
    let mut r = review();
    r["decisions"][1]["action"] = json!("Falls clinic referral and a review of her methadone dose");
    r
}

/// Tenant T-1001 under consent form `consent`, and housing's first review of the team
/// (after which the partners on it may record reviews too).
async fn team_under(app: &TestApp, consent: &Value) {
    app.register_tenant().await;
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, consent)
            .await
            .status,
        201
    );
    let first = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &review())
        .await;
    assert_eq!(first.status, 201, "{first:?}");
}

/// Tenant T-1001, consenting to share with both partners on the review team.
async fn team_consents(app: &TestApp) {
    app.register_tenant().await;
    app.consent("consent-clinic-and-mco-no-sud.json").await;
}

#[tokio::test]
async fn a_review_is_recorded_as_a_careplan_only_its_team_and_auditors_can_read() {
    let app = spawn_app().await;
    team_consents(&app).await;
    let a = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &review())
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.body["id"].as_str().unwrap().to_string();
    let careplan = &a.body["fhir"];
    let (_, profiles) = shared();
    assert!(
        profiles.validate(careplan).is_empty(),
        "{:?}",
        profiles.validate(careplan)
    );
    assert_eq!(careplan["activity"].as_array().unwrap().len(), 4);
    assert_eq!(
        careplan["activity"][0]["detail"]["performer"][0]["reference"],
        "Organization/bayview-health-plan"
    );
    assert_eq!(careplan["activity"][3]["detail"]["kind"], "Appointment");

    for (token, status) in [
        (HOUSING_REVIEW, 200),
        (CLINIC_REVIEW, 200),
        (AUDITOR, 200),
        (HOUSING, 403),
        (CLINIC, 403),
        (OTHER_REVIEW, 403),
    ] {
        let r = app.get(&format!("/fhir/CarePlan/{id}"), token).await;
        assert_eq!(r.status, status, "{token}: {r:?}");
        assert_eq!(
            app.get(&format!("/housing/reviews/{id}"), token)
                .await
                .status,
            status
        );
    }
    // Refusals are audited.
    let refused = app.get(&format!("/housing/reviews/{id}"), HOUSING).await;
    let rec = app
        .get(
            &format!("/audit/records?reference_id={}", refused.reference_id()),
            AUDITOR,
        )
        .await;
    assert_eq!(rec.body["records"][0]["record"]["outcome"], "refused");
    // Review notes never enter the housing dataset.
    assert!(
        app.get("/housing/tenants/T-1001", HOUSING).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        !app.feed_all()
            .await
            .iter()
            .any(|e| e.to_string().contains("grab rails"))
    );
}

/// A review's actions go to every partner that attended: under a consent that keeps
/// substance use from them, an action that names the tenant's methadone is refused at
/// that action (not quoted back); said without it, the review is recorded. A partner
/// recording it learns nothing of the restriction.
#[tokio::test]
async fn a_review_action_cannot_say_what_the_consent_withholds() {
    let app = spawn_app().await;
    team_consents(&app).await;
    let slip = review_naming_methadone();
    let refused = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &slip)
        .await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(refused.error_expressions(), ["decisions[1].action"]);
    assert!(!refused.mentions("methadone"), "{refused:?}");
    let plain = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &review())
        .await;
    assert_eq!(plain.status, 201, "{plain:?}");
    // As a CarePlan, housing is told at the activity's description.
    let mut careplan = plain.body["fhir"].clone();
    careplan.as_object_mut().unwrap().remove("id");
    careplan.as_object_mut().unwrap().remove("meta");
    careplan["activity"][1]["detail"]["description"] = slip["decisions"][1]["action"].clone();
    let as_fhir = app.post("/fhir/CarePlan", HOUSING_REVIEW, &careplan).await;
    assert_eq!(as_fhir.status, 422, "{as_fhir:?}");
    assert_eq!(
        as_fhir.error_expressions(),
        ["CarePlan.activity[1].detail.description"]
    );
    // A partner on the team recording the same slip is told what it is told for any
    // refusal: not which category the tenant withholds, nor from whom. The audit keeps why.
    let mut clinic_slip = slip.clone();
    clinic_slip["attendees"] = json!(["northside-housing", "riverside-clinic"]);
    clinic_slip["decisions"] = json!([slip["decisions"][1], slip["decisions"][2]]);
    let by_clinic = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &clinic_slip)
        .await;
    assert_eq!(by_clinic.status, 403, "{by_clinic:?}");
    assert_eq!(
        by_clinic.body["issue"][0]["diagnostics"],
        hearth::error::NO_AGREEMENT
    );
    let record = app.audit_record(&by_clinic.reference_id()).await;
    assert_eq!(record["reason"], "text-withheld-by-consent", "{record}");
}

/// A restriction recorded after a review holds when a partner reads it: the action
/// that names the tenant's methadone is withheld from the clinic, in the review and its
/// CarePlan; the auditor still reads what was recorded.
#[tokio::test]
async fn a_restriction_recorded_later_withholds_a_review_action_from_partners() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let consent = |restrictions: Value| {
        json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic", "bayview-health-plan"],
            "restrictions": restrictions, "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"})
    };
    let recorded = app
        .post_json("/housing/consents", HOUSING, &consent(json!([])))
        .await;
    assert_eq!(recorded.status, 201, "{recorded:?}");
    let r = review_naming_methadone();
    let a = app.post_json("/housing/reviews", HOUSING_REVIEW, &r).await;
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.body["id"].as_str().unwrap().to_string();
    let narrower = app
        .post_json(
            "/housing/consents",
            HOUSING,
            &consent(json!(["substance-use"])),
        )
        .await;
    assert_eq!(narrower.status, 201, "{narrower:?}");

    let read = app
        .get(&format!("/housing/reviews/{id}"), CLINIC_REVIEW)
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert!(!read.mentions("methadone"), "{read:?}");
    assert_eq!(
        read.body["review"]["decisions"][0]["action"], r["decisions"][0]["action"],
        "other actions are read as recorded"
    );
    let fhir = app
        .get(&format!("/fhir/CarePlan/{id}"), CLINIC_REVIEW)
        .await;
    assert_eq!(fhir.status, 200, "{fhir:?}");
    assert!(!fhir.mentions("methadone"), "{fhir:?}");
    // Housing recorded it: its own words are not held back from its own team.
    let by_housing = app
        .get(&format!("/housing/reviews/{id}"), HOUSING_REVIEW)
        .await;
    assert!(
        by_housing.body.to_string().contains("methadone"),
        "{by_housing:?}"
    );
    // The partner's read records which action was held back (its position and labels).
    let record = app.audit_record(&read.reference_id()).await;
    assert_eq!(
        record["items_withheld"][0]["id"], "decisions[1]",
        "{record}"
    );
    let audited = app.get(&format!("/housing/reviews/{id}"), AUDITOR).await;
    assert!(
        audited.body.to_string().contains("methadone"),
        "{audited:?}"
    );
}

/// The clinic records a review whose action names the tenant's methadone. Later the
/// tenant asks that what the clinic tells housing about substance use not be kept (a
/// restriction on what the clinic sends, FHIR actor role INF): housing's review member
/// now reads that action as withheld; the clinic still reads what it wrote.
#[tokio::test]
async fn a_restriction_on_what_the_recorder_sends_holds_back_its_review_actions() {
    let app = spawn_app().await;
    let share = json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic", "bayview-health-plan"],
        "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"});
    team_under(&app, &share).await;
    let by_clinic = review_naming_methadone();
    let recorded = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &by_clinic)
        .await;
    assert_eq!(recorded.status, 201, "{recorded:?}");
    let id = recorded.body["id"].as_str().unwrap().to_string();

    // The sending-side restriction, through the FHIR form (the housing form names only
    // what a partner receives): the same nested deny with the actor's role INF.
    let mut narrower = share.clone();
    narrower["withhold_from"] = json!({"riverside-clinic": ["substance-use"]});
    app.record_sending_restriction(&narrower).await;

    let action_read_by = |token: &'static str| {
        let (app, id) = (&app, &id);
        async move {
            let read = app.get(&format!("/housing/reviews/{id}"), token).await;
            assert_eq!(read.status, 200, "{read:?}");
            read.body["review"]["decisions"][1]["action"].clone()
        }
    };
    assert_eq!(
        action_read_by(HOUSING_REVIEW).await,
        "(withheld under the tenant's consent)"
    );
    assert_eq!(
        action_read_by(CLINIC_REVIEW).await,
        by_clinic["decisions"][1]["action"]
    );
}

/// A review the clinic recorded before reviews named their recorder: its audit record
/// says who did, so the clinic's sending-side restriction holds its actions back as for a
/// review recorded today.
#[tokio::test]
async fn a_review_stored_before_it_named_its_recorder_is_read_under_the_recorders_restriction() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let share = json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic", "bayview-health-plan"],
        "withhold_from": {"riverside-clinic": ["substance-use"]},
        "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"});
    app.record_sending_restriction(&share).await;

    // The old shape: no recorded_by; the recording's audit record names the clinic.
    let id = hearth::ids::ReferenceId::new();
    let r = review_naming_methadone();
    let old = hearth::gateway::reviews::StoredReview {
        id: id.to_string(),
        review: serde_json::from_value(r).unwrap(),
        recorded_at: "2026-11-20T10:00:00Z".into(),
        careplan: json!({"resourceType": "CarePlan", "activity": [{}, {"detail": {"description": "methadone"}}, {}, {}]}),
        recorded_by: None,
    };
    let mut audit = hearth::audit::AuditEntry::new(
        id,
        "2026-11-20T10:00:00Z".into(),
        "POST /housing/reviews".into(),
        "record-review",
        hearth::audit::Direction::Internal,
    );
    audit.actor = Some(hearth::audit::Actor {
        principal: "riverside-review".into(),
        org: hearth::ids::PartnerId::new("riverside-clinic"),
        role: "review-member".into(),
    });
    audit.outcome = hearth::audit::Outcome::Accepted;
    audit.status = 201;
    let context = app
        .gateway
        .store
        .consent_context(&hearth::ids::TenantId::new("T-1001"))
        .await
        .unwrap();
    app.gateway
        .store
        .save_review(old, hearth::store::ConsentsSeen::of(&context, false), audit)
        .await
        .unwrap();

    let read = app
        .get(&format!("/housing/reviews/{id}"), HOUSING_REVIEW)
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(
        read.body["review"]["decisions"][1]["action"], "(withheld under the tenant's consent)",
        "{read:?}"
    );
    assert!(!read.body.to_string().contains("methadone"), "{read:?}");
}

/// The tenant keeps substance use from the MCO only. The clinic, on the team, records a
/// review the MCO attended with an action naming her methadone: refused as any refusal is
/// (403, nothing about why), and the audit says for whom and why.
#[tokio::test]
async fn a_partner_recording_a_review_is_not_told_what_is_withheld_from_another() {
    let app = spawn_app().await;
    let consent = json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic", "bayview-health-plan"],
        "withhold_from": {"bayview-health-plan": ["substance-use"]},
        "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"});
    team_under(&app, &consent).await;
    let slip = review_naming_methadone();
    let by_clinic = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &slip)
        .await;
    assert_eq!(by_clinic.status, 403, "{by_clinic:?}");
    assert_eq!(
        by_clinic.body["issue"][0]["diagnostics"],
        hearth::error::NO_AGREEMENT
    );
    let record = app.audit_record(&by_clinic.reference_id()).await;
    assert_eq!(record["reason"], "text-withheld-by-consent", "{record}");
    assert_eq!(record["partner"], "bayview-health-plan", "{record}");
    // Without the MCO attending, the same words may go to the clinic's own team.
    let mut without_mco = slip.clone();
    without_mco["attendees"] = json!(["northside-housing", "riverside-clinic"]);
    without_mco["decisions"] = json!([slip["decisions"][1], slip["decisions"][2]]);
    let ok = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &without_mco)
        .await;
    assert_eq!(ok.status, 201, "{ok:?}");
}

#[tokio::test]
async fn the_high_risk_register_lists_reviews_falling_due() {
    let app = spawn_app().await;
    team_consents(&app).await;
    assert_eq!(
        app.post_json("/housing/reviews", HOUSING_REVIEW, &review())
            .await
            .status,
        201
    );
    assert_eq!(
        app.get("/housing/reviews/due", HOUSING_REVIEW).await.body["due"],
        json!([])
    );
    app.clock.set(time::macros::datetime!(2026-12-16 09:00 UTC));
    let due = app.get("/housing/reviews/due", CLINIC_REVIEW).await;
    assert_eq!(due.body["due"][0]["tenant_id"], "T-1001");
    assert_eq!(due.body["due"][0]["overdue"], false);
    // The register named the tenant: the tenant's audit trail finds the read.
    assert_eq!(
        app.audit_record(&due.reference_id()).await["tenants_read"],
        json!(["T-1001"])
    );
    app.clock.set(time::macros::datetime!(2026-12-22 09:00 UTC));
    assert_eq!(
        app.get("/housing/reviews/due", CLINIC_REVIEW).await.body["due"][0]["overdue"],
        true
    );
    assert_eq!(
        app.get("/housing/reviews/due", OTHER_REVIEW).await.body["due"],
        json!([]),
        "not on this tenant's team"
    );
    assert_eq!(app.get("/housing/reviews/due", HOUSING).await.status, 403);
}

#[tokio::test]
async fn a_review_can_arrive_as_fhir_and_bad_reviews_are_refused() {
    let app = spawn_app().await;
    team_consents(&app).await;
    // Housing runs the reviews: before its first one, a clinic cannot start a tenant's
    // review, and is refused the same way for someone who is not a tenant at all.
    let first_by_clinic = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &review())
        .await;
    assert_eq!(first_by_clinic.status, 403, "{first_by_clinic:?}");
    let mut stranger = review();
    stranger["tenant_id"] = json!("T-9999");
    let not_a_tenant = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &stranger)
        .await;
    assert_eq!(not_a_tenant.status, 403, "{not_a_tenant:?}");
    assert_eq!(
        not_a_tenant.body["issue"][0],
        first_by_clinic.body["issue"][0]
    );
    let a = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &review())
        .await;
    let mut careplan = a.body["fhir"].clone();
    careplan.as_object_mut().unwrap().remove("id");
    careplan.as_object_mut().unwrap().remove("meta");
    // Conditional create is for notices: asked of a review it is refused, not ignored
    // (ignored, a retry would store the review twice).
    let conditional = app
        .post_with(
            "/fhir/CarePlan",
            CLINIC_REVIEW,
            &careplan,
            &[("If-None-Exist", "identifier=review-1")],
        )
        .await;
    assert_eq!(conditional.status, 400, "{conditional:?}");
    // A transaction holds notices: a review in one is refused where it stands, rather
    // than taken for a follow-up plan from a clinic.
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": careplan.clone(), "request": {"method": "POST", "url": "CarePlan"}}]});
    let t = app.post("/fhir", CLINIC_REVIEW, &transaction).await;
    assert_eq!(t.status, 422, "{t:?}");
    assert_eq!(t.error_expressions(), ["Bundle.entry[0].request.url"]);
    let b = app.post("/fhir/CarePlan", CLINIC_REVIEW, &careplan).await;
    assert_eq!(b.status, 201, "{b:?}");
    assert_eq!(b.body["activity"], careplan["activity"]);
    // The clinic cannot widen the team: whoever it adds could read the tenant's reviews.
    let mut widened = review();
    widened["attendees"]
        .as_array_mut()
        .unwrap()
        .push(json!("eastside-clinic"));
    let w = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &widened)
        .await;
    assert_eq!(w.status, 403, "{w:?}");
    assert_eq!(w.body["issue"][0], first_by_clinic.body["issue"][0]);
    // As FHIR, a subject no tenant has is the same refusal for the clinic.
    let mut unknown = careplan.clone();
    unknown["subject"] = json!({"identifier": {"system": MRN_SYSTEM, "value": "MRN-000000"}});
    let c = app.post("/fhir/CarePlan", CLINIC_REVIEW, &unknown).await;
    assert_eq!(c.status, 403, "{c:?}");
    assert_eq!(c.body["issue"][0], first_by_clinic.body["issue"][0]);

    // A bad review sent as FHIR is refused at its CarePlan elements, counted as sent
    // (here the next review comes first and a practitioner heads the contributors).
    let mut bad_plan = careplan.clone();
    let activity = bad_plan["activity"].as_array_mut().unwrap();
    let next = activity.pop().unwrap();
    activity.insert(0, next);
    bad_plan["activity"][1]["detail"]["performer"] =
        json!([{"reference": "Organization/eastside-clinic"}]);
    let contributors = bad_plan["contributor"].as_array_mut().unwrap();
    contributors.insert(0, json!({"reference": "Practitioner/care-manager"}));
    contributors.push(json!({"reference": "Organization/nowhere"}));
    let d = app.post("/fhir/CarePlan", CLINIC_REVIEW, &bad_plan).await;
    assert_eq!(d.status, 422, "{d:?}");
    let mut at = d.error_expressions();
    at.sort();
    assert_eq!(
        at,
        [
            "CarePlan.activity[1].detail.performer",
            "CarePlan.contributor[4]"
        ]
    );

    let mut bad = review();
    bad["decisions"][0]["owner"] = json!("eastside-clinic");
    bad["next_review"] = json!("soon");
    let c = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &bad)
        .await;
    assert_eq!(c.status, 422);
    let mut at = c.error_expressions();
    at.sort();
    assert_eq!(at, ["decisions[0].owner", "next_review"]);
    // Only a review member whose organisation attended may record it.
    assert_eq!(
        app.post_json("/housing/reviews", OTHER_REVIEW, &review())
            .await
            .status,
        403
    );
    assert_eq!(
        app.post_json("/housing/reviews", HOUSING, &review())
            .await
            .status,
        403
    );
}

/// A review's notes go to the partners on the team, so the tenant's consent decides who
/// may be on it: the tenant shares with the clinic only, and the MCO cannot be sent the
/// review; once the tenant withdraws consent, the clinic no longer reads it or sees the
/// tenant on its register, while the auditor still can.
#[tokio::test]
async fn the_tenants_consent_decides_which_partners_a_review_is_shared_with() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let with_mco = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &review())
        .await;
    assert_eq!(with_mco.status, 422, "{with_mco:?}");
    assert_eq!(with_mco.error_expressions(), ["attendees[2]"]);

    let mut clinic_only = review();
    clinic_only["attendees"] = json!(["northside-housing", "riverside-clinic"]);
    clinic_only["decisions"] = json!([clinic_only["decisions"][1], clinic_only["decisions"][2]]);
    let a = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &clinic_only)
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.get(&format!("/housing/reviews/{id}"), CLINIC_REVIEW)
            .await
            .status,
        200
    );
    app.clock.set(time::macros::datetime!(2026-12-16 09:00 UTC));
    let due = app.get("/housing/reviews/due", CLINIC_REVIEW).await;
    assert_eq!(due.body["due"][0]["tenant_id"], "T-1001", "{due:?}");

    let consent = app.consent_id_with_status("active").await;
    let revoked = app
        .post_json(
            &format!("/housing/consents/{consent}/revoke"),
            HOUSING,
            &json!({}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    for path in [
        format!("/housing/reviews/{id}"),
        format!("/fhir/CarePlan/{id}"),
    ] {
        let read = app.get(&path, CLINIC_REVIEW).await;
        assert_eq!(read.status, 403, "{path}: {read:?}");
    }
    assert_eq!(
        app.get("/housing/reviews/due", CLINIC_REVIEW).await.body["due"],
        json!([])
    );
    let refused = app
        .audit_record(
            &app.get(&format!("/housing/reviews/{id}"), CLINIC_REVIEW)
                .await
                .reference_id(),
        )
        .await;
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert_eq!(
        app.get(&format!("/housing/reviews/{id}"), AUDITOR)
            .await
            .status,
        200
    );
}

/// The clinic records the review it attended: what it decided goes to housing, which
/// needs the tenant's consent for the clinic to send, as a notice would. With consent
/// only for housing to send to the clinic, the clinic's review is refused.
#[tokio::test]
async fn a_partner_records_a_review_only_where_the_tenant_lets_it_send_to_housing() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let one_way = json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic"],
        "valid_until": "2027-05-31", "direction": "from-housing"});
    assert_eq!(
        app.post_json("/housing/consents", HOUSING, &one_way)
            .await
            .status,
        201
    );
    let mut clinic_only = review();
    clinic_only["attendees"] = json!(["northside-housing", "riverside-clinic"]);
    clinic_only["decisions"] = json!([clinic_only["decisions"][1], clinic_only["decisions"][2]]);
    let by_housing = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &clinic_only)
        .await;
    assert_eq!(by_housing.status, 201, "{by_housing:?}");
    let by_clinic = app
        .post_json("/housing/reviews", CLINIC_REVIEW, &clinic_only)
        .await;
    assert_eq!(by_clinic.status, 403, "{by_clinic:?}");
    // The operator cannot use a consent search to learn whose MRN is whose.
    let probe = app
        .get(
            &format!("/fhir/Consent?patient:identifier={MRN_SYSTEM}|MRN-448812"),
            ADMIN,
        )
        .await;
    assert_eq!(probe.status, 403, "{probe:?}");
    let record = app.audit_record(&probe.reference_id()).await;
    assert_eq!(record["outcome"], "refused", "{record}");
    assert!(
        record.get("tenant").is_none(),
        "the trail of the refused search names no tenant"
    );
}
