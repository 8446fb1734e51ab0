//! Inbound exchange end to end: a partner POSTs FHIR, housing sees only dataset items.

mod common;

use common::*;
use serde_json::{Value, json};

/// Items in the feed, without provenance and ids (the parts a fixture decides).
async fn feed_items(app: &TestApp) -> Vec<Value> {
    app.feed_all()
        .await
        .into_iter()
        .filter(|e| e["change"] == "added")
        .map(|e| {
            let mut item = e["item"].clone();
            let obj = item.as_object_mut().unwrap();
            obj.remove("id");
            obj.remove("provenance");
            item
        })
        .collect()
}

async fn post_notice(app: &TestApp, name: &str) -> Answer {
    let body = fixture(name);
    let path = format!("/fhir/{}", body["resourceType"].as_str().unwrap());
    app.post(&path, CLINIC, &body).await
}

#[tokio::test]
async fn a_discharge_notice_becomes_one_discharge_item_with_its_follow_ups() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = post_notice(&app, "discharge-notice.json").await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(
        a.header("location").unwrap(),
        format!("/fhir/Communication/{}", a.reference_id())
    );
    assert_eq!(a.body["resourceType"], "OperationOutcome");
    assert_eq!(a.body["id"], a.reference_id());
    let items = feed_items(&app).await;
    assert_eq!(items.len(), 1);
    let d = &items[0];
    assert_eq!(d["item"], "discharge");
    assert_eq!(d["status"], "discharged");
    assert_eq!(d["date"], "2026-11-20T11:30:00-08:00");
    assert_eq!(d["facility"], "Riverside General Hospital");
    assert_eq!(d["follow_up"].as_array().unwrap().len(), 2);
    assert_eq!(d["follow_up"][0]["due"], "2026-11-27");
}

#[tokio::test]
async fn an_over_sharing_discharge_notice_is_stripped_and_the_paths_reported() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let body = fixture("discharge-notice-oversharing.json");
    let a = app.post("/fhir/Communication", CLINIC, &body).await;
    assert_eq!(a.status, 201, "{a:?}");
    let dropped = a.dropped();
    for path in [
        "Communication.note",
        "Communication.payload",
        "Communication.text",
        "Communication.extension",
        "Communication._status",
    ] {
        assert!(
            dropped.contains(&path.to_string()),
            "{path} not in {dropped:?}"
        );
    }
    // Values never come back, only paths.
    let answer_text = a.body.to_string();
    for issue in a.issues("information") {
        assert!(!issue.to_string().contains("methadone"), "{issue}");
    }
    assert!(!answer_text.to_lowercase().contains("methadone"));
    let items = feed_items(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["item"], "discharge");
    let stored = app
        .get("/housing/tenants/T-1001", HOUSING)
        .await
        .body
        .to_string()
        .to_lowercase();
    for leaked in ["methadone", "diagnos", "relatedperson"] {
        assert!(
            !stored.contains(leaked),
            "{leaked} reached the housing view"
        );
    }
}

#[tokio::test]
async fn every_notice_kind_yields_its_dataset_items() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let cases: &[(&str, &[&str])] = &[
        ("medication-change-notice.json", &["medication_change"]),
        (
            "medication-change-dose-changed.json",
            &["medication_change"],
        ),
        ("appointment-notice.json", &["next_appointment"]),
        (
            "risk-flag-update.json",
            &["risk_flag", "risk_flag", "risk_flag"],
        ),
        ("care-contact-update.json", &["care_contact"]),
        (
            "accommodation-needs.json",
            &[
                "accommodation_need",
                "accommodation_need",
                "accommodation_need",
            ],
        ),
        (
            "follow-up-plan.json",
            &["care_contact", "discharge", "next_appointment"],
        ),
    ];
    let mut expected = Vec::new();
    for (name, kinds) in cases {
        let a = post_notice(&app, name).await;
        assert_eq!(a.status, 201, "{name}: {a:?}");
        expected.extend(kinds.iter().map(|k| k.to_string()));
    }
    let items = feed_items(&app).await;
    let kinds: Vec<String> = items
        .iter()
        .map(|i| i["item"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, expected);

    let find = |kind: &str| items.iter().find(|i| i["item"] == kind).unwrap().clone();
    let med = find("medication_change");
    assert_eq!(med["change"], "started");
    assert_eq!(med["instruction"], "Take with food in the morning");
    assert!(med.get("reason").is_none() && med.get("note").is_none());
    let dose = &items[1];
    assert_eq!(dose["change"], "dose-changed");
    let appt = find("next_appointment");
    assert_eq!(appt["transport_needed"], true);
    assert_eq!(appt["place"], "Riverside Community Clinic, Suite 4");
    let contact = find("care_contact");
    assert_eq!(contact["routes"][0]["preferred"], true);
    assert_eq!(contact["routes"][1]["preferred"], false);
    let flags: Vec<&str> = items
        .iter()
        .filter(|i| i["item"] == "risk_flag")
        .map(|i| i["flag"].as_str().unwrap())
        .collect();
    assert_eq!(flags, ["falls", "confusion", "unmanaged-pain"]);
    let language = find("accommodation_need");
    assert_eq!(
        (
            language["need"].as_str(),
            language["language"].as_str(),
            language["interpreter"].as_bool()
        ),
        (Some("language"), Some("pl"), Some(true))
    );
}

#[tokio::test]
async fn the_tenant_view_shows_current_items_with_provenance() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = post_notice(&app, "risk-flag-update.json").await;
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert_eq!(view.status, 200);
    let items = view.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let p = &items[0]["provenance"];
    assert_eq!(p["partner"], "riverside-clinic");
    assert_eq!(p["reference_id"], a.reference_id());
    assert_eq!(p["received_at"], "2026-11-23T10:00:00Z");
    assert_eq!(p["consent"]["version"], 1);
    assert!(
        view.body["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["value"] == "MRN-448812")
    );
    assert_eq!(
        app.get("/housing/tenants/T-9999", HOUSING).await.status,
        404
    );
    assert_eq!(app.get("/housing/tenants/T-1001", CLINIC).await.status, 403);
}

#[tokio::test]
async fn the_same_notice_twice_is_a_replay_with_the_original_reference_id() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let first = post_notice(&app, "risk-flag-update.json").await;
    assert_eq!(first.status, 201);
    let again = post_notice(&app, "risk-flag-update.json").await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_ne!(
        again.reference_id(),
        first.reference_id(),
        "the replay is its own transaction"
    );
    assert_eq!(again.header("location"), first.header("location"));
    assert!(again.body.to_string().contains(&first.reference_id()));
    assert_eq!(feed_items(&app).await.len(), 3, "no duplicate items");
}

#[tokio::test]
async fn a_changed_notice_with_the_same_identifier_supersedes_and_entered_in_error_retracts() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let mut notice = fixture("risk-flag-update.json");
    let first = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(first.status, 201);
    // The clinic corrects the notice: the falls flag is now inactive.
    notice["contained"][0]["status"] = json!("inactive");
    let corrected = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(corrected.status, 201, "{corrected:?}");
    let feed = app.feed_all().await;
    let superseded = feed.iter().filter(|e| e["change"] == "superseded").count();
    assert_eq!(superseded, 3);
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    let items = view.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| i["provenance"]["reference_id"] == corrected.reference_id())
    );
    assert_eq!(items[0]["status"], "inactive");

    notice["status"] = json!("entered-in-error");
    let retracted = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(retracted.status, 200, "{retracted:?}");
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert!(view.body["items"].as_array().unwrap().is_empty());
    let feed = app.feed_all().await;
    assert_eq!(
        feed.iter().filter(|e| e["change"] == "retracted").count(),
        3
    );
    // A reader starting from the beginning gets the entries (its cursor stays whole) but
    // none of the content its sender withdrew: only current items carry their content.
    let added: Vec<&Value> = feed.iter().filter(|e| e["change"] == "added").collect();
    assert_eq!(added.len(), 6, "{feed:?}");
    assert!(added.iter().all(|e| e.get("item").is_none()), "{added:?}");
    // Nor does reading the exchange itself: housing gets the entered-in-error copy with
    // none of its items; the sender still sees what it sent.
    for reference in [first.reference_id(), corrected.reference_id()] {
        let path = format!("/fhir/Communication/{reference}");
        let copy = app.get(&path, HOUSING).await;
        assert_eq!(copy.status, 200, "{copy:?}");
        assert!(!copy.body.to_string().contains("dataset-item"), "{copy:?}");
        let own = app.get(&path, CLINIC).await;
        assert!(own.body.to_string().contains("dataset-item"), "{own:?}");
    }
}

/// Requests finish out of order: a notice that arrived first but is stored after the
/// partner's later correction or retraction of it must not undo them.
#[tokio::test]
async fn an_older_version_stored_after_a_newer_one_changes_nothing() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let notice = fixture("risk-flag-update.json");
    for later in ["correction", "retraction"] {
        let mut first = notice.clone();
        first["identifier"][0]["value"] = json!(format!("out-of-order-{later}"));
        let slow = prepare_clinic_notice(&app, first.clone()).await.unwrap();
        let mut newer = first.clone();
        match later {
            "correction" => newer["contained"][0]["status"] = json!("inactive"),
            _ => newer["status"] = json!("entered-in-error"),
        }
        let fast = app.post("/fhir/Communication", CLINIC, &newer).await;
        assert!(fast.status == 200 || fast.status == 201, "{fast:?}");
        let receipts = app.gateway.commit(vec![slow]).await.unwrap();
        assert_eq!(
            receipts[0].outcome,
            hearth::store::ExchangeOutcome::Overtaken {
                by: fast.reference_id().parse().unwrap()
            }
        );
        let items = app.get("/housing/tenants/T-1001", HOUSING).await.body["items"].clone();
        let from_slow = items
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["provenance"]["reference_id"] == receipts[0].location.to_string())
            .count();
        assert_eq!(from_slow, 0, "{later}: {items}");
        if later == "correction" {
            assert!(
                items
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["status"] == "inactive"),
                "{items}"
            );
        }
        let slow_ref = json!(receipts[0].location.to_string());
        let feed = app.feed_all().await;
        assert!(
            feed.iter().all(|e| e["reference_id"] != slow_ref),
            "{feed:?}"
        );
        // Its sender, never told, sends it again: a replay of what was overtaken, not a
        // correction that would bring it back.
        let again = app.post("/fhir/Communication", CLINIC, &first).await;
        assert_eq!(again.status, 200, "{later}: {again:?}");
        assert_eq!(
            again.header("location"),
            Some(format!("/fhir/Communication/{}", receipts[0].location)),
            "{later}: {again:?}"
        );
        assert_eq!(app.feed_all().await.len(), feed.len(), "{later}");
    }
}

/// The clinic revokes the follow-up plan it sent (the tenant was readmitted): the
/// appointments and follow-ups it gave housing are withdrawn, as by entered-in-error.
#[tokio::test]
async fn a_revoked_care_plan_withdraws_what_it_told_housing() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let mut plan = fixture("follow-up-plan.json");
    let sent = app.post("/fhir/CarePlan", CLINIC, &plan).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert!(!feed_items(&app).await.is_empty());
    // A plan still being drawn up, or only proposed, is not shared at all.
    for (element, value) in [("status", "draft"), ("intent", "proposal")] {
        let mut unfinished = fixture("follow-up-plan.json");
        unfinished["identifier"][0]["value"] = json!(format!("unfinished-{value}"));
        unfinished[element] = json!(value);
        let a = app.post("/fhir/CarePlan", CLINIC, &unfinished).await;
        assert_eq!(
            (a.status, a.error_expressions()),
            (422, vec![format!("CarePlan.{element}")]),
            "{a:?}"
        );
    }
    plan["status"] = json!("revoked");
    let revoked = app.post("/fhir/CarePlan", CLINIC, &plan).await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert_eq!(view.body["items"], json!([]), "{view:?}");
}

#[tokio::test]
async fn if_none_exist_matching_one_is_a_replay_and_matching_several_is_412() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let notice = fixture("appointment-notice.json");
    let system = notice["identifier"][0]["system"]
        .as_str()
        .unwrap()
        .to_string();
    let value = notice["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let first = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(first.status, 201);
    let mut changed = notice.clone();
    changed["contained"][2]["status"] = json!("cancelled");
    let cond = format!("identifier={system}|{value}");
    let replay = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &changed,
            &[("If-None-Exist", &cond)],
        )
        .await;
    assert_eq!(replay.status, 200, "{replay:?}");
    assert_eq!(replay.header("location"), first.header("location"));
    // The trail records what the partner was answered.
    let record = app.audit_record(&replay.reference_id()).await;
    assert_eq!(record["outcome"], "replayed", "{record}");
    assert_eq!(record["status"], 200, "{record}");

    // Same value under a second system: `identifier=value` now matches two.
    let mut other = notice.clone();
    other["identifier"][0]["system"] =
        json!("https://riverside-clinic.example/fhir/other-message-id");
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &other).await.status,
        201
    );
    let ambiguous = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &changed,
            &[("If-None-Exist", &format!("identifier={value}"))],
        )
        .await;
    assert_eq!(ambiguous.status, 412, "{ambiguous:?}");
    assert_eq!(ambiguous.body["issue"][0]["code"], "multiple-matches");

    // The same refusal inside a batch is audited as a refusal too, like a whole request.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [{
        "resource": changed,
        "request": {"method": "POST", "url": "Communication", "ifNoneExist": format!("identifier={value}")}
    }]});
    let b = app.post("/fhir", CLINIC, &batch).await;
    assert_eq!(b.status, 200, "{b:?}");
    let entry = &b.body["entry"][0]["response"];
    assert_eq!(entry["status"], "412 Precondition Failed", "{b:?}");
    assert_eq!(
        app.audit_record(&ambiguous.reference_id()).await["outcome"],
        "refused"
    );
    assert_eq!(
        app.audit_record(entry["outcome"]["id"].as_str().unwrap())
            .await["outcome"],
        "refused"
    );
}

/// A condition Hearth cannot match is refused where it was sent, never ignored: an
/// ignored condition would store a partner's retry a second time.
#[tokio::test]
async fn a_malformed_if_none_exist_is_refused_at_its_place_and_nothing_is_stored() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let notice = fixture("appointment-notice.json");
    let url = format!("{}/fhir/Communication", app.base);
    let header = |value: &[u8]| {
        app.client
            .post(&url)
            .bearer_auth(CLINIC)
            .header("content-type", "application/fhir+json")
            .header(
                "if-none-exist",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(notice.to_string())
            .send()
    };
    for value in [&b"name=smith"[..], b"identifier=", b"identifier=\xff\xfe"] {
        let a = answer(header(value).await.unwrap()).await;
        assert_eq!(a.status, 400, "{value:?}: {a:?}");
        assert!(
            a.body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("If-None-Exist"),
            "{a:?}"
        );
    }

    let entry = |condition: Value| json!({"resource": notice, "request": {"method": "POST", "url": "Communication", "ifNoneExist": condition}});
    let batch = json!({"resourceType": "Bundle", "type": "batch",
        "entry": [entry(json!("identifier=a|")), entry(json!("identifier=a%7C"))]});
    let b = app.post("/fhir", CLINIC, &batch).await;
    assert_eq!(b.status, 200, "{b:?}");
    for i in 0..2 {
        let response = &b.body["entry"][i]["response"];
        assert_eq!(response["status"], "400 Bad Request", "{b:?}");
        assert_eq!(
            response["outcome"]["issue"][0]["expression"][0],
            format!("Bundle.entry[{i}].request.ifNoneExist"),
            "{b:?}"
        );
    }
    let mut second = notice.clone();
    second["identifier"][0]["value"] = json!("another-message");
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": second, "request": {"method": "POST", "url": "Communication"}},
        entry(json!("identifier=1&name=x")),
    ]});
    let t = app.post("/fhir", CLINIC, &transaction).await;
    assert_eq!(t.status, 400, "{t:?}");
    assert_eq!(
        t.body["issue"][0]["expression"][0], "Bundle.entry[1].request.ifNoneExist",
        "{t:?}"
    );

    // Not one of those requests stored anything: housing's feed holds only the consent.
    let feed = app.get("/housing/updates", HOUSING).await;
    assert_eq!(feed.status, 200, "{feed:?}");
    assert!(
        feed.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["change"] == "consent"),
        "{feed:?}"
    );
}

#[tokio::test]
async fn error_statuses_are_operation_outcomes() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let url = format!("{}/fhir/Communication", app.base);
    let notice = fixture("risk-flag-update.json");

    // 400: not JSON, and JSON that is not a Communication.
    let a = answer(
        app.client
            .post(&url)
            .bearer_auth(CLINIC)
            .header("content-type", "application/fhir+json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["resourceType"], "OperationOutcome");
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("invalid-not-a-communication.json"),
        )
        .await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (400, vec!["resourceType".to_string()])
    );

    // 401: no token, wrong token.
    let a = answer(
        app.client
            .post(&url)
            .header("content-type", "application/fhir+json")
            .body(notice.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(
        app.post("/fhir/Communication", "not-a-token", &notice)
            .await
            .status,
        401
    );

    // 403: a housing worker cannot push clinical notices.
    let a = app.post("/fhir/Communication", HOUSING, &notice).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["issue"][0]["code"], "forbidden");

    // 404: a resource type Hearth does not serve; 405: a method it does not support.
    let a = app
        .post(
            "/fhir/Observation",
            CLINIC,
            &json!({"resourceType": "Observation"}),
        )
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["resourceType"], "OperationOutcome");
    let a = answer(
        app.client
            .delete(&url)
            .bearer_auth(CLINIC)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 405);
    assert_eq!(a.body["resourceType"], "OperationOutcome");
    // RFC 9110: a 405 names what the resource does take.
    assert_eq!(a.header("allow").as_deref(), Some("POST"), "{a:?}");
    // 400: a path segment that is not UTF-8, refused before any handler runs, and still
    // audited with a reason.
    let a = app.get("/fhir/Communication/%FF", CLINIC).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.body["resourceType"], "OperationOutcome", "{a:?}");
    assert_eq!(
        app.audit_record(&a.reference_id()).await["reason"],
        "malformed"
    );

    // 413: over the configured body limit (64 KiB in tests).
    let mut huge = notice.clone();
    huge["note"] = json!([{"text": "x".repeat(70_000)}]);
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &huge).await.status,
        413
    );

    // 415: not JSON at all.
    let a = answer(
        app.client
            .post(&url)
            .bearer_auth(CLINIC)
            .header("content-type", "text/plain")
            .body(notice.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 415);
    // application/json is accepted as well as application/fhir+json.
    let a = answer(
        app.client
            .post(&url)
            .bearer_auth(CLINIC)
            .header("content-type", "application/json")
            .body(notice.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");

    // 422: profile failures, one issue each, pointing at the element.
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("invalid-communication-missing-status.json"),
        )
        .await;
    assert_eq!(a.status, 422);
    assert_eq!(a.error_expressions(), vec!["Communication.status"]);
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("invalid-communication-bad-date.json"),
        )
        .await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (422, vec!["Communication.sent".to_string()])
    );
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("invalid-contained-flag-bad-status.json"),
        )
        .await;
    assert_eq!(a.status, 422);
    let expressions = a.error_expressions();
    assert!(
        !expressions.is_empty()
            && expressions
                .iter()
                .all(|e| e.starts_with("Communication.contained[") && e.ends_with(".status")),
        "{a:?}"
    );
    let a = app
        .post(
            "/fhir/CarePlan",
            CLINIC,
            &fixture("invalid-careplan-missing-intent.json"),
        )
        .await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (422, vec!["CarePlan.intent".to_string()])
    );
    // A value the profile refuses is pointed at, never quoted back: it may be a date of
    // birth or a note's text.
    let mut bad_birth_date = fixture("discharge-notice-oversharing.json");
    bad_birth_date["contained"][0]["birthDate"] = json!("1955-13-08");
    let a = app
        .post("/fhir/Communication", CLINIC, &bad_birth_date)
        .await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (
            422,
            vec!["Communication.contained[0].birthDate".to_string()]
        )
    );
    assert!(!a.body.to_string().contains("1955-13-08"), "{a:?}");
    // A subject Hearth cannot link by identifier.
    let mut anonymous = notice.clone();
    anonymous["subject"] = json!({"display": "Room 4"});
    let a = app.post("/fhir/Communication", CLINIC, &anonymous).await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (422, vec!["Communication.subject".to_string()])
    );

    // Every answer carries a reference ID, and nothing invalid was stored.
    assert_eq!(
        feed_items(&app).await.len(),
        3,
        "only the application/json notice was stored"
    );
}

#[tokio::test]
async fn an_unknown_tenant_and_a_tenant_without_consent_look_the_same_to_a_partner() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let notice = fixture("risk-flag-update.json");
    // The Eastside clinic is not covered by T-1001's consent.
    let no_consent = app.post("/fhir/Communication", OTHER_CLINIC, &notice).await;
    let mut stranger = notice.clone();
    stranger["subject"] = json!({"identifier": {"system": MRN_SYSTEM, "value": "MRN-000000"}});
    let unknown = app.post("/fhir/Communication", CLINIC, &stranger).await;
    assert_eq!(no_consent.status, 403);
    assert_eq!(unknown.status, 403);
    assert_eq!(no_consent.body["issue"][0], unknown.body["issue"][0]);
    // The same when the notice claims to answer a note: whether that note exists is
    // checked only once the partner may share about the subject at all.
    let mut reply = notice.clone();
    reply["identifier"][0]["value"] = json!("claimed-reply");
    reply["inResponseTo"] = json!([{"reference": "Communication/01KAQZ3D0000000000000000N1"}]);
    let claimed = app.post("/fhir/Communication", OTHER_CLINIC, &reply).await;
    assert_eq!(claimed.status, 403, "{claimed:?}");
    assert_eq!(claimed.body["issue"][0], unknown.body["issue"][0]);
    // And when it "retracts" a notice it never sent: only a retraction of the partner's
    // own exchange goes ahead without consent.
    let mut probe = notice.clone();
    probe["identifier"][0]["value"] = json!("probe-1");
    probe["status"] = json!("entered-in-error");
    let retract_nothing = app.post("/fhir/Communication", OTHER_CLINIC, &probe).await;
    assert_eq!(retract_nothing.status, 403, "{retract_nothing:?}");
    assert_eq!(retract_nothing.body["issue"][0], unknown.body["issue"][0]);
    assert!(feed_items(&app).await.is_empty());

    // The audit keeps the real reasons.
    let audit = app.get("/audit/records?limit=1000", AUDITOR).await;
    let reason = |r: &str| {
        audit.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["record"]["reference_id"] == r)
            .unwrap()["record"]["reason"]
            .clone()
    };
    assert_eq!(reason(&no_consent.reference_id()), "partner-not-covered");
    assert_eq!(reason(&unknown.reference_id()), "unknown-tenant");
}

#[tokio::test]
async fn consent_is_decided_at_the_time_of_each_exchange() {
    let app = spawn_app().await.with_consenting_tenant().await;
    assert_eq!(post_notice(&app, "risk-flag-update.json").await.status, 201);
    // The consent's period ends 2027-01-01; the same clinic a day later is refused.
    app.clock.set(time::macros::datetime!(2027-01-02 09:00 UTC));
    let late = post_notice(&app, "care-contact-update.json").await;
    assert_eq!(late.status, 403, "{late:?}");
    // Told no more than any refusal: not that a consent exists, nor that it ended.
    assert_eq!(
        late.body["issue"][0]["diagnostics"],
        hearth::error::NO_AGREEMENT
    );
    // Withdrawing what it sent needs no consent: the clinic can still retract its notice.
    let mut retraction = fixture("risk-flag-update.json");
    retraction["status"] = json!("entered-in-error");
    let retracted = app.post("/fhir/Communication", CLINIC, &retraction).await;
    assert_eq!(retracted.status, 200, "{retracted:?}");
    assert!(
        app.get("/housing/tenants/T-1001", HOUSING).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let audit = app
        .get(
            &format!("/audit/records?reference_id={}", late.reference_id()),
            AUDITOR,
        )
        .await;
    assert_eq!(
        audit.body["records"][0]["record"]["reason"],
        "consent-expired"
    );
    assert_eq!(audit.body["records"][0]["record"]["outcome"], "refused");
}

#[tokio::test]
async fn a_consent_restriction_withholds_sensitive_items_without_telling_the_sender() {
    let app = spawn_app().await;
    app.register_tenant().await;
    app.consent("consent-clinic-and-mco-no-sud.json").await;
    let a = post_notice(&app, "medication-change-buprenorphine-start.json").await;
    assert_eq!(a.status, 201, "{a:?}");
    let text = a.body.to_string().to_lowercase();
    for hint in ["withheld", "restrict", "sud", "substance"] {
        assert!(
            !text.contains(hint),
            "the answer hints at a restriction: {hint}"
        );
    }
    // Both the buprenorphine start and the withdrawal-risk flag carry the SUD label.
    assert!(feed_items(&app).await.is_empty());
    let audit = app
        .get(
            &format!("/audit/records?reference_id={}", a.reference_id()),
            AUDITOR,
        )
        .await;
    let withheld = audit.body["records"][0]["record"]["items_withheld"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<&str> = withheld
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["medication_change", "risk_flag"]);
}

/// A restriction that could never withhold anything is refused, not stored as if it held:
/// a label Hearth never assigns (nothing is labelled genetic here), or one from a local
/// code system whose code merely looks like Hearth's.
#[tokio::test]
async fn a_consent_restricting_a_label_hearth_never_assigns_is_refused_at_that_label() {
    let app = spawn_app().await;
    app.register_tenant().await;
    for label in [
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS"}),
        json!({"system": "https://riverside-clinic.example/fhir/labels", "code": "SUD"}),
    ] {
        let mut consent = fixture("consent-clinic-and-mco-no-sud.json");
        consent["provision"]["provision"][0]["securityLabel"][1] = label;
        let c = app.post("/fhir/Consent", HOUSING, &consent).await;
        assert_eq!(
            (c.status, c.error_expressions()),
            (
                422,
                vec!["Consent.provision.provision[0].securityLabel[1]".to_string()]
            ),
            "{c:?}"
        );
    }
    let list = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    assert_eq!(list.body["consents"], json!([]), "{list:?}");
}

/// Labels have a hierarchy (HL7 v3 ActCode): a consent that denies only opioid use
/// disorder information withholds what codes can only call substance use, and an item
/// a sender labelled OPIOIDUD is withheld by a denial written as SUD/ETH.
#[tokio::test]
async fn a_narrow_sensitivity_label_is_enforced_as_the_broad_one_it_belongs_to() {
    let app = spawn_app().await;
    app.register_tenant().await;
    let mut narrow = fixture("consent-clinic-and-mco-no-sud.json");
    narrow["provision"]["provision"][0]["securityLabel"] = json!([
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPIOIDUD"}
    ]);
    let c = app.post("/fhir/Consent", HOUSING, &narrow).await;
    assert_eq!(c.status, 201, "{c:?}");
    // R4 create: Location names the version created, which can be read back.
    let location = c.header("location").expect("Location");
    assert_eq!(
        location,
        format!(
            "/fhir/Consent/{}/_history/1",
            c.body["id"].as_str().unwrap()
        )
    );
    assert_eq!(app.get(&location, HOUSING).await.status, 200);
    // Conditional create is not offered for Consent: refused, not ignored.
    let conditional = app
        .post_with(
            "/fhir/Consent",
            HOUSING,
            &narrow,
            &[("If-None-Exist", "identifier=consent-1")],
        )
        .await;
    assert_eq!(conditional.status, 400, "{conditional:?}");
    let a = post_notice(&app, "medication-change-buprenorphine-start.json").await;
    assert_eq!(a.status, 201, "{a:?}");
    assert!(
        feed_items(&app).await.is_empty(),
        "{:?}",
        feed_items(&app).await
    );

    // The other way round: SUD/ETH denied, an item labelled only OPIOIDUD by its sender.
    let app = spawn_app().await;
    app.register_tenant().await;
    app.consent("consent-clinic-and-mco-no-sud.json").await;
    let mut notice = fixture("medication-change-notice.json");
    notice["meta"] = json!({"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPIOIDUD"}
    ]});
    let b = app.post("/fhir/Communication", CLINIC, &notice).await;
    assert_eq!(b.status, 201, "{b:?}");
    assert!(
        feed_items(&app).await.is_empty(),
        "{:?}",
        feed_items(&app).await
    );
    // Without the label the same notice is shared.
    let mut plain = fixture("medication-change-notice.json");
    plain["identifier"][0]["value"] = json!("another-message");
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &plain).await.status,
        201
    );
    assert_eq!(feed_items(&app).await.len(), 1);
}

#[tokio::test]
async fn the_location_names_hearths_minimised_copy() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = post_notice(&app, "discharge-notice-oversharing.json").await;
    let location = a.header("location").unwrap();
    let copy = app.get(&location, CLINIC).await;
    assert_eq!(copy.status, 200, "{copy:?}");
    assert_eq!(copy.body["resourceType"], "Communication");
    assert_eq!(copy.body["id"], a.reference_id());
    assert_eq!(copy.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(copy.body["extension"].as_array().unwrap().len(), 1);
    assert!(copy.body.get("note").is_none() && copy.body.get("payload").is_none());
    assert_eq!(copy.body["subject"]["identifier"]["value"], "T-1001");
    // Another clinic cannot even tell it exists.
    assert_eq!(app.get(&location, OTHER_CLINIC).await.status, 404);
    assert_eq!(app.get(&location, HOUSING).await.status, 200);
}

#[tokio::test]
async fn a_transaction_whose_third_entry_fails_leaves_the_store_unchanged() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let mut bundle = fixture("bundle-transaction.json");
    bundle["entry"][2]["resource"]["status"] = json!("not-a-status");
    let a = app.post("/fhir", CLINIC, &bundle).await;
    assert_eq!(a.status, 422, "{a:?}");
    let expressions = a.error_expressions();
    assert!(
        !expressions.is_empty()
            && expressions
                .iter()
                .all(|e| e.starts_with("Bundle.entry[2].resource")),
        "{a:?}"
    );
    assert!(feed_items(&app).await.is_empty());

    let ok = app
        .post("/fhir", CLINIC, &fixture("bundle-transaction.json"))
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body["type"], "transaction-response");
    let statuses: Vec<&str> = ok.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created"; 3]);
    assert!(!feed_items(&app).await.is_empty());
}

/// The transaction an EHR builds around a patient: the Patient as one entry (name, date of
/// birth, address — none of it housing's business) and the notices pointing at it by
/// `fullUrl`.
fn transaction_with_patient_entry(patient_url: &str) -> Value {
    let mut bundle = fixture("bundle-transaction.json");
    let entries = bundle["entry"].as_array_mut().unwrap();
    entries.truncate(2);
    for e in entries.iter_mut() {
        // Retries are recognised by content, not by a condition.
        e["request"].as_object_mut().unwrap().remove("ifNoneExist");
        e["resource"]["subject"] =
            json!({"reference": patient_url, "display": "Grace Okonkwo-Tull"});
    }
    // The appointment names its patient by the entry too.
    entries[0]["resource"]["contained"][1]["participant"][0]["actor"] =
        json!({"reference": patient_url, "display": "Grace Okonkwo-Tull"});
    entries.insert(0, json!({
        "fullUrl": patient_url,
        "resource": {"resourceType": "Patient",
            "identifier": [{"system": "https://riverside-clinic.example/fhir/mrn", "value": "MRN-448812"}],
            "name": [{"family": "Okonkwo-Tull", "given": ["Grace"]}],
            "birthDate": "1961-04-02",
            "address": [{"line": ["14 Quarry Rise"], "city": "Riverside"}]},
        "request": {"method": "POST", "url": "Patient",
            "ifNoneExist": "identifier=https://riverside-clinic.example/fhir/mrn|MRN-448812"}
    }));
    bundle
}

fn entry_statuses(a: &Answer) -> Vec<String> {
    a.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_transaction_names_its_subject_by_a_patient_entry_and_hearth_keeps_none_of_it() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let bundle = transaction_with_patient_entry("urn:uuid:6a1e0c4e-0b8d-4c3e-9f10-2b7c5d9e1a01");
    let a = app.post("/fhir", CLINIC, &bundle).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(entry_statuses(&a), ["200 OK", "201 Created", "201 Created"]);
    // Linked to the tenant by the Patient's identifier, as a notice sent alone would be.
    let items = app.feed_all().await;
    assert!(
        !items.is_empty() && items.iter().all(|e| e["tenant"] == "T-1001"),
        "{items:?}"
    );
    // The Patient entry has its own record: read, to name the subject; no values.
    let patient_reference = a.body["entry"][0]["response"]["outcome"]["id"]
        .as_str()
        .unwrap();
    let record = app.audit_record(patient_reference).await;
    assert_eq!(
        (
            &record["action"],
            &record["resource_type"],
            &record["parent"]
        ),
        (
            &json!("identify-subject"),
            &json!("Patient"),
            &json!(a.reference_id())
        ),
        "{record}"
    );

    // An EHR retrying mints fresh urn:uuids; the notices are still the ones it sent.
    let retry = transaction_with_patient_entry("urn:uuid:0d5b7f3a-77c2-4e0e-8a5e-9c0b1d2e3f04");
    let b = app.post("/fhir", CLINIC, &retry).await;
    assert_eq!(entry_statuses(&b), ["200 OK", "200 OK", "200 OK"], "{b:?}");
    for i in [1, 2] {
        let location = |x: &Answer| x.body["entry"][i]["response"]["location"].clone();
        assert_eq!(location(&b), location(&a), "entry {i} names its original");
        // The trail keeps the digest of the entry as sent, not of Hearth's rewrite.
        let reference = b.body["entry"][i]["response"]["outcome"]["id"]
            .as_str()
            .unwrap();
        let sent = serde_json::to_vec(&retry["entry"][i]["resource"]).unwrap();
        assert_eq!(
            app.audit_record(reference).await["payload_digest"],
            hearth::audit::digest(&sent),
            "entry {i}"
        );
    }
    assert_eq!(app.feed_all().await.len(), items.len());

    // Nothing of the Patient beyond its identifier is kept, answered or stored.
    let location = a.body["entry"][1]["response"]["location"].as_str().unwrap();
    let copy = app.get(&format!("/fhir/{location}"), CLINIC).await;
    assert_eq!(copy.status, 200, "{copy:?}");
    let db = app.db_path();
    for (what, text) in [
        ("answer", a.body.to_string()),
        ("copy", copy.body.to_string()),
    ] {
        assert!(
            !text.contains("Okonkwo") && !text.contains("1961-04-02"),
            "{what}: {text}"
        );
    }
    let store = [
        std::fs::read(&db).expect("the store file"),
        std::fs::read(db.with_extension("db-wal")).unwrap_or_default(),
    ];
    for secret in ["Okonkwo", "Quarry Rise", "1961-04-02"] {
        assert!(
            !store
                .iter()
                .any(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes())),
            "the store holds {secret}"
        );
    }
}

/// One notice of a transaction points at another (`partOf`) by its `urn:uuid`. A retry
/// mints new ones and may order the entries differently: the notices are still the same,
/// answered as replays, and nothing is superseded or forwarded twice. Pointing at another
/// notice is a change.
#[tokio::test]
async fn a_retried_transaction_whose_notices_point_at_each_other_is_a_replay() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let notices: Vec<Value> = fixture("bundle-transaction.json")["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    // (notice, fullUrl, the fullUrl its partOf names)
    let transaction = |entries: &[(usize, &str, Option<&str>)]| {
        let entry = |&(n, url, part_of): &(usize, &str, Option<&str>)| {
            let mut resource = notices[n].clone();
            if let Some(to) = part_of {
                resource["partOf"] = json!([{"reference": to}]);
            }
            json!({"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": "Communication"}})
        };
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries.iter().map(entry).collect::<Vec<_>>()})
    };
    let a = app
        .post(
            "/fhir",
            CLINIC,
            &transaction(&[
                (0, "urn:uuid:a-0", None),
                (1, "urn:uuid:a-1", Some("urn:uuid:a-0")),
            ]),
        )
        .await;
    assert_eq!(entry_statuses(&a), ["201 Created", "201 Created"], "{a:?}");
    let b = app
        .post(
            "/fhir",
            CLINIC,
            &transaction(&[
                (1, "urn:uuid:b-1", Some("urn:uuid:b-0")),
                (0, "urn:uuid:b-0", None),
            ]),
        )
        .await;
    assert_eq!(entry_statuses(&b), ["200 OK", "200 OK"], "{b:?}");
    assert!(
        app.feed_all()
            .await
            .iter()
            .all(|e| e["change"] == "added" || e["change"] == "consent")
    );

    // The same second notice, now part of a third one in the first one's place: a correction.
    let c = app
        .post(
            "/fhir",
            CLINIC,
            &transaction(&[
                (2, "urn:uuid:c-2", None),
                (1, "urn:uuid:c-1", Some("urn:uuid:c-2")),
            ]),
        )
        .await;
    assert_eq!(entry_statuses(&c), ["201 Created", "201 Created"], "{c:?}");
    let outcome = app
        .audit_record(
            c.body["entry"][1]["response"]["outcome"]["id"]
                .as_str()
                .unwrap(),
        )
        .await;
    assert_eq!(outcome["outcome"], "corrected", "{outcome}");
}

#[tokio::test]
async fn a_transaction_entry_pointing_at_no_patient_entry_fails_the_transaction_at_its_reference() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let mut bundle =
        transaction_with_patient_entry("urn:uuid:6a1e0c4e-0b8d-4c3e-9f10-2b7c5d9e1a01");
    bundle["entry"][2]["resource"]["subject"]["reference"] = json!("urn:uuid:somebody-else");
    let a = app.post("/fhir", CLINIC, &bundle).await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (
            422,
            vec!["Bundle.entry[2].resource.subject.reference".to_string()]
        ),
        "{a:?}"
    );
    assert!(feed_items(&app).await.is_empty());

    // A Patient entry Hearth cannot link is refused where its identifier should be.
    let mut anonymous =
        transaction_with_patient_entry("urn:uuid:6a1e0c4e-0b8d-4c3e-9f10-2b7c5d9e1a01");
    anonymous["entry"][0]["resource"]["identifier"] = json!([{"value": "no system"}]);
    let b = app.post("/fhir", CLINIC, &anonymous).await;
    assert_eq!(
        (b.status, b.error_expressions()),
        (422, vec!["Bundle.entry[0].resource.identifier".to_string()]),
        "{b:?}"
    );
    // A Patient entry creates or updates nothing: a conditional PUT is read like a POST,
    // anything else is refused at its method.
    let mut put = transaction_with_patient_entry("urn:uuid:6a1e0c4e-0b8d-4c3e-9f10-2b7c5d9e1a01");
    put["entry"][0]["request"] = json!({"method": "DELETE", "url": "Patient?identifier=x|y"});
    let c = app.post("/fhir", CLINIC, &put).await;
    assert_eq!(
        (c.status, c.error_expressions()),
        (422, vec!["Bundle.entry[0].request.method".to_string()]),
        "{c:?}"
    );
    // Only the senders of notices may name their subject.
    let only_patient = json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [bundle["entry"][0].clone()]});
    assert_eq!(app.post("/fhir", HOUSING, &only_patient).await.status, 403);
    assert!(feed_items(&app).await.is_empty());

    put["entry"][0]["request"] = json!({"method": "PUT",
        "url": "Patient?identifier=https://riverside-clinic.example/fhir/mrn|MRN-448812"});
    let d = app.post("/fhir", CLINIC, &put).await;
    assert_eq!(
        entry_statuses(&d),
        ["200 OK", "201 Created", "201 Created"],
        "{d:?}"
    );
}

/// A notice with nothing the dataset carries is refused at the element that decides what
/// a notice is, in a single request and inside a batch alike.
#[tokio::test]
async fn a_notice_with_nothing_to_map_is_refused_at_its_category() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let mut empty = fixture("risk-flag-update.json");
    empty["contained"] = json!([]);
    empty["category"] = json!([{"text": "general correspondence"}]);
    let a = app.post("/fhir/Communication", CLINIC, &empty).await;
    assert_eq!(
        (a.status, a.error_expressions()),
        (422, vec!["Communication.category".to_string()]),
        "{a:?}"
    );
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [{
        "resource": empty, "request": {"method": "POST", "url": "Communication"}
    }]});
    let b = app.post("/fhir", CLINIC, &batch).await;
    assert_eq!(
        b.body["entry"][0]["response"]["outcome"]["issue"][0]["expression"][0],
        "Bundle.entry[0].resource.category",
        "{b:?}"
    );
}

#[tokio::test]
async fn a_batch_answers_each_entry_on_its_own() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = app
        .post("/fhir", CLINIC, &fixture("bundle-batch.json"))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["type"], "batch-response");
    let entries = a.body["entry"].as_array().unwrap();
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["201 Created", "422 Unprocessable Entity", "201 Created"]
    );
    let bad = &entries[1]["response"]["outcome"];
    assert_eq!(
        bad["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.status"
    );
    // Each entry has its own reference ID.
    let ids: std::collections::HashSet<&str> = entries
        .iter()
        .map(|e| e["response"]["outcome"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn the_capability_statement_tells_the_truth() {
    let app = spawn_app().await;
    let meta = answer(
        app.client
            .get(format!("{}/fhir/metadata", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(meta.status, 200);
    assert_eq!(meta.body["fhirVersion"], "4.0.1");
    let resources = meta.body["rest"][0]["resource"].as_array().unwrap();
    let types: Vec<&str> = resources
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Communication", "CarePlan", "Consent"]);
    let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    for r in resources {
        let ty = r["type"].as_str().unwrap();
        for i in r["interaction"].as_array().unwrap() {
            let stub = json!({"resourceType": ty});
            let answer = match i["code"].as_str().unwrap() {
                "create" => app.post(&format!("/fhir/{ty}"), CLINIC, &stub).await,
                "read" => app.get(&format!("/fhir/{ty}/{id}"), HOUSING).await,
                "vread" => {
                    app.get(&format!("/fhir/{ty}/{id}/_history/1"), HOUSING)
                        .await
                }
                "history-instance" => app.get(&format!("/fhir/{ty}/{id}/_history"), HOUSING).await,
                "search-type" => {
                    app.get(&format!("/fhir/{ty}?patient=T-1001"), HOUSING)
                        .await
                }
                "update" => {
                    app.put_with(&format!("/fhir/{ty}/{id}"), HOUSING, &stub, &[])
                        .await
                }
                other => panic!("the statement claims {other}, which this test does not know"),
            };
            // Served: never the router's 405 (an update of a consent that does not exist
            // is a 405 in its own words), never the router's "nothing here" 404.
            let text = answer.body.to_string();
            assert!(
                !(answer.status == 405 && text.contains("this method is not supported here")),
                "{ty} {i}: {answer:?}"
            );
            assert!(
                !text.contains("nothing at this path") && !text.contains("does not serve"),
                "{ty} {i}: {answer:?}"
            );
        }
    }
    let system: Vec<&str> = meta.body["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(system, ["batch", "transaction"]);
}

#[tokio::test]
async fn acknowledged_exchanges_survive_a_restart() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = post_notice(&app, "risk-flag-update.json").await;
    assert_eq!(a.status, 201);
    let data = app.stop().await;
    let app = spawn_app_in(data).await;
    assert_eq!(feed_items(&app).await.len(), 3);
    assert_eq!(
        post_notice(&app, "risk-flag-update.json").await.status,
        200,
        "still recognised as a replay"
    );
    let v = app.get("/audit/verify", AUDITOR).await;
    assert_eq!(v.body["ok"], true, "{v:?}");
}

/// JSON is UTF-8: a body declared in another charset is refused as such (415), not
/// reported as unparseable; UTF-8 declared, in any spelling, is fine.
#[tokio::test]
async fn a_body_declared_in_another_charset_is_415() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let url = format!("{}/fhir/Communication", app.base);
    let declared = fixture("risk-flag-update.json");
    for (charset, status) in [("utf-16", 415), ("\"UTF-8\"", 201)] {
        let a = answer(
            app.client
                .post(&url)
                .bearer_auth(CLINIC)
                .header(
                    "content-type",
                    format!("application/fhir+json; fhirVersion=4.0; charset={charset}"),
                )
                .body(declared.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, status, "{charset}: {a:?}");
    }
}

/// Partners send new notices rather than correcting old ones: the tenant's record keeps
/// each appointment and each flag notice, and the view says which holds now — the next
/// appointment still to come, and each risk flag as its latest notice left it.
#[tokio::test]
async fn the_tenant_view_says_which_appointment_is_next_and_how_each_flag_stands_now() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let first = fixture("appointment-notice.json");
    let mut review = first.clone();
    review["identifier"][0]["value"] = serde_json::json!("RCC-MSG-20261128-0007");
    let appointment = review["contained"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["resourceType"] == "Appointment")
        .unwrap();
    review["contained"][appointment]["start"] = serde_json::json!("2026-12-09T14:00:00-08:00");
    // Received last, but further off: the review stays next.
    let mut later = review.clone();
    later["identifier"][0]["value"] = serde_json::json!("RCC-MSG-20261128-0011");
    later["contained"][appointment]["start"] = serde_json::json!("2027-01-15T10:00:00-08:00");
    let flags = fixture("risk-flag-update.json");
    let mut falls_over = flags.clone();
    falls_over["identifier"][0]["value"] = serde_json::json!("RCC-MSG-20261128-0009");
    for c in falls_over["contained"].as_array_mut().unwrap() {
        if c["resourceType"] == "Flag" {
            c["status"] = serde_json::json!("inactive");
        }
    }
    for (notice, at) in [
        (first, time::macros::datetime!(2026-11-23 10:00 UTC)),
        (flags, time::macros::datetime!(2026-11-23 10:05 UTC)),
        (review, time::macros::datetime!(2026-11-28 09:00 UTC)),
        (falls_over, time::macros::datetime!(2026-11-28 09:05 UTC)),
        (later, time::macros::datetime!(2026-11-28 09:10 UTC)),
    ] {
        app.clock.set(at);
        let a = app.post("/fhir/Communication", CLINIC, &notice).await;
        assert_eq!(a.status, 201, "{a:?}");
    }
    // 28 November: the 27 November appointment has passed.
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    assert_eq!(view.status, 200, "{view:?}");
    let now = &view.body["now"];
    assert_eq!(
        now["next_appointment"]["start"], "2026-12-09T14:00:00-08:00",
        "{now}"
    );
    let flags = now["risk_flags"].as_array().unwrap();
    assert!(!flags.is_empty(), "{now}");
    assert!(
        flags.iter().all(|f| f["status"] == "inactive"),
        "the later notice left every flag inactive: {now}"
    );
    let kinds: std::collections::BTreeSet<&str> =
        flags.iter().map(|f| f["flag"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), flags.len(), "one per flag: {now}");
    // Every notice's items are still there, for the record.
    let held = view.body["items"].as_array().unwrap();
    assert_eq!(
        held.iter()
            .filter(|i| i["item"] == "next_appointment")
            .count(),
        3
    );
}
