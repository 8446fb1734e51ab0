//! The audit trail: every transaction recorded, tamper-evident, verifiable.

mod common;

use common::*;

#[tokio::test]
async fn every_transaction_has_an_audit_record_with_its_reference_id() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let answers = [
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await, // accepted
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await, // replayed
        app.post(
            "/fhir/Communication",
            OTHER_CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await, // refused
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("invalid-communication-missing-status.json"),
        )
        .await, // invalid
        app.post(
            "/fhir/Communication",
            "wrong-token",
            &fixture("risk-flag-update.json"),
        )
        .await, // unauthenticated
        app.get("/housing/updates", HOUSING).await, // read
        app.get("/housing/tenants/T-1001", HOUSING).await, // read
    ];
    let records = app.get("/audit/records?limit=1000", AUDITOR).await;
    assert_eq!(records.status, 200);
    let list = records.body["records"].as_array().unwrap();
    let outcome = |a: &Answer| {
        let r = list
            .iter()
            .find(|r| r["record"]["reference_id"] == a.reference_id())
            .unwrap_or_else(|| panic!("no audit record for {a:?}"));
        r["record"]["outcome"].as_str().unwrap().to_string()
    };
    let outcomes: Vec<String> = answers.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            "accepted", "replayed", "refused", "invalid", "refused", "read", "read"
        ]
    );

    let accepted = list
        .iter()
        .find(|r| r["record"]["reference_id"] == answers[0].reference_id())
        .unwrap();
    let rec = &accepted["record"];
    assert_eq!(rec["actor"]["principal"], "riverside-ehr");
    assert_eq!(
        rec["status"], 201,
        "the record states the status the caller was answered"
    );
    assert_eq!(rec["actor"]["role"], "clinic");
    assert_eq!(rec["direction"], "inbound");
    assert_eq!(rec["partner"], "riverside-clinic");
    assert_eq!(rec["tenant"], "T-1001");
    assert_eq!(rec["resource_type"], "Communication");
    assert_eq!(rec["consent"]["version"], 1);
    assert_eq!(rec["items_written"].as_array().unwrap().len(), 3);
    assert!(
        rec["payload_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(!rec["dropped_paths"].as_array().unwrap().is_empty());
    // No clinical value in the record: only kinds, ids, paths, digests.
    let text = rec.to_string();
    assert!(
        !text.contains("At risk for falls") && !text.contains("2026-11-20"),
        "{text}"
    );
    assert_eq!(answers[1].status, 200);
    assert_eq!(
        list.iter()
            .find(|r| r["record"]["reference_id"] == answers[1].reference_id())
            .unwrap()["record"]["related"],
        answers[0].reference_id()
    );
}

/// A partner's interface engine probing `/fhir/Patient/<record number>` leaves the route
/// in the audit chain, not the number: the chain is kept for good.
#[tokio::test]
async fn a_path_the_caller_made_up_is_recorded_as_its_route() {
    let app = spawn_app().await;
    let probe = app.get("/fhir/Patient/MRN-004417", CLINIC).await;
    assert_eq!(probe.status, 404, "{probe:?}");
    let record = app.audit_record(&probe.reference_id()).await;
    assert_eq!(record["request"], "GET /fhir/{type}/{*rest}");
    let records = app.get("/audit/records?limit=1000", AUDITOR).await;
    assert!(!records.body.to_string().contains("MRN-004417"));
}

#[tokio::test]
async fn the_audit_needs_the_auditor_role() {
    let app = spawn_app().await;
    assert_eq!(app.get("/audit/records", HOUSING).await.status, 403);
    assert_eq!(app.get("/audit/verify", CLINIC).await.status, 403);
    assert_eq!(app.get("/audit/verify", AUDITOR).await.body["ok"], true);
}

#[tokio::test]
async fn editing_one_stored_record_makes_verify_fail_at_that_record() {
    let app = spawn_app().await.with_consenting_tenant().await;
    for _ in 0..3 {
        app.post(
            "/fhir/Communication",
            CLINIC,
            &fixture("care-contact-update.json"),
        )
        .await;
    }
    let head = app.get("/audit/verify", AUDITOR).await;
    assert_eq!(head.body["ok"], true);
    let anchor = head.body["verification"]["head"]
        .as_str()
        .unwrap()
        .to_string();
    let db = app.db_path();
    let data = app.stop().await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    // The store itself refuses to change history.
    let err = conn
        .execute("UPDATE audit SET body = '{}' WHERE seq = 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit WHERE seq = 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // Someone with file access drops the guard and edits record 3.
    conn.execute_batch("DROP TRIGGER audit_is_append_only_update;")
        .unwrap();
    conn.execute(
        "UPDATE audit SET body = replace(body, 'riverside-ehr', 'eastside-ehr') WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(conn);

    let v = hearth::store::sqlite::SqliteStore::verify_file(&db, None).unwrap();
    assert!(!v.ok());
    assert_eq!(v.first_broken.unwrap().seq, 3);
    assert_eq!(v.records, 2);

    let app = spawn_app_in(data).await;
    let a = app
        .get(&format!("/audit/verify?anchor={anchor}"), AUDITOR)
        .await;
    assert_eq!(a.body["ok"], false);
    assert_eq!(a.body["verification"]["first_broken"]["seq"], 3);
}

fn hearth_audit(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

/// The inspector's routine: `hearth audit head` kept somewhere safe, later `audit verify
/// --anchor`. Someone with file access deletes the last records and the guards; the
/// chain that is left is intact, and only the anchor shows what was lost.
#[tokio::test]
async fn a_truncated_trail_verifies_only_without_the_anchor_kept_from_before() {
    let app = spawn_app().await.with_consenting_tenant().await;
    for name in ["risk-flag-update.json", "care-contact-update.json"] {
        assert_eq!(
            app.post("/fhir/Communication", CLINIC, &fixture(name))
                .await
                .status,
            201
        );
    }
    let data = app.stop().await;
    let dir = data.path().to_str().unwrap();
    let head = hearth_audit(&["head", "--data-dir", dir]);
    assert!(head.status.success(), "{head:?}");
    let head = String::from_utf8(head.stdout).unwrap();
    let (seq, anchor) = head.trim().split_once(' ').expect("`<seq> <hash>`");
    let seq: i64 = seq.parse().unwrap();
    let before = hearth_audit(&["verify", "--data-dir", dir, "--anchor", anchor]);
    assert!(before.status.success(), "{before:?}");

    let conn = rusqlite::Connection::open(data.path().join("hearth.db")).unwrap();
    conn.execute_batch("DROP TRIGGER audit_is_append_only_delete;")
        .unwrap();
    conn.execute("DELETE FROM audit WHERE seq > ?1", [seq - 2])
        .unwrap();
    drop(conn);

    let plain = hearth_audit(&["verify", "--data-dir", dir]);
    assert!(plain.status.success(), "what is left links up: {plain:?}");
    let anchored = hearth_audit(&["verify", "--data-dir", dir, "--anchor", anchor]);
    assert_eq!(anchored.status.code(), Some(1), "{anchored:?}");
    assert!(
        String::from_utf8_lossy(&anchored.stdout).contains("anchor is not in it"),
        "{anchored:?}"
    );
    let app = spawn_app_in(data).await;
    let v = app
        .get(&format!("/audit/verify?anchor={anchor}"), AUDITOR)
        .await;
    assert_eq!(v.body["ok"], false);
    assert_eq!(v.body["verification"]["anchor_found"], false);
}

#[tokio::test]
async fn an_anchor_from_before_a_rewrite_is_not_found() {
    let app = spawn_app().await.with_consenting_tenant().await;
    app.post(
        "/fhir/Communication",
        CLINIC,
        &fixture("risk-flag-update.json"),
    )
    .await;
    let anchor = app.get("/audit/verify", AUDITOR).await.body["verification"]["head"]
        .as_str()
        .unwrap()
        .to_string();
    let found = app
        .get(&format!("/audit/verify?anchor={anchor}"), AUDITOR)
        .await;
    assert_eq!(found.body["verification"]["anchor_found"], true);
    let unknown = "ab".repeat(32);
    let missing = app
        .get(&format!("/audit/verify?anchor={unknown}"), AUDITOR)
        .await;
    assert_eq!(missing.body["ok"], false);
    assert_eq!(missing.body["verification"]["anchor_found"], false);
    // Not a hash, or half of one pasted: a 400 at the anchor, not a false alarm that the
    // log was rewritten.
    for bad in ["xyz".to_string(), anchor[..32].to_string()] {
        let a = app
            .get(&format!("/audit/verify?anchor={bad}"), AUDITOR)
            .await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_eq!(a.error_expressions(), ["anchor"], "{a:?}");
    }
}

/// An auditor exporting through the API pages with `after` and `limit` and narrows to one
/// tenant: every record once, in order, and only that tenant's.
#[tokio::test]
async fn the_trail_pages_in_order_and_filters_by_tenant() {
    let app = spawn_app().await.with_consenting_tenant().await;
    app.register("T-2002", &[(MRN_SYSTEM, "MRN-2002")]).await;
    for name in ["risk-flag-update.json", "care-contact-update.json"] {
        app.post("/fhir/Communication", CLINIC, &fixture(name))
            .await;
    }
    let all = app.get("/audit/records?limit=1000", AUDITOR).await;
    let all: Vec<u64> = all.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(all.len() >= 5, "{all:?}");

    // Each page read is itself audited, so the trail grows while it is paged: page up to
    // what the first read saw.
    let last = *all.last().unwrap();
    let mut paged = Vec::new();
    let mut after = 0;
    while after < last {
        let page = app
            .get(&format!("/audit/records?after={after}&limit=2"), AUDITOR)
            .await;
        let records = page.body["records"].as_array().unwrap().clone();
        assert_eq!(records.len(), 2, "{page:?}");
        paged.extend(records.iter().map(|r| r["seq"].as_u64().unwrap()));
        after = page.body["next"].as_u64().unwrap();
    }
    paged.retain(|&seq| seq <= last);
    assert_eq!(paged, all);

    let other = app.get("/audit/records?tenant=T-2002", AUDITOR).await;
    let other = other.body["records"].as_array().unwrap();
    assert!(!other.is_empty());
    assert!(
        other.iter().all(|r| r["record"]["tenant"] == "T-2002"),
        "{other:?}"
    );
    assert_eq!(app.get("/audit/records?limit=0", AUDITOR).await.status, 400);
}

/// The operator backs the store up while Hearth runs: one file, everything acknowledged
/// (also what is still in the write-ahead log), its chain verified; never over a file.
#[tokio::test]
async fn a_backup_taken_while_serving_holds_every_acknowledged_exchange() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let mut acknowledged = Vec::new();
    for name in ["risk-flag-update.json", "care-contact-update.json"] {
        let a = app
            .post("/fhir/Communication", CLINIC, &fixture(name))
            .await;
        assert_eq!(a.status, 201);
        acknowledged.push(a.reference_id());
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("hearth-backup.db");
    let backup = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["backup", "--data-dir"])
            .arg(app.data.path())
            .arg(file)
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let done = backup(&file);
    let said = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(
        done.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(said.contains("verified"), "{said}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy is health data");
    }

    let copy = rusqlite::Connection::open(&file).unwrap();
    for reference in &acknowledged {
        let found: i64 = copy
            .query_row(
                "SELECT count(*) FROM exchanges WHERE reference_id = ?1",
                [reference],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 1, "{reference} is missing from the backup");
    }
    drop(copy);
    let again = backup(&file);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// An inspector asks who at housing saw what about T-1001: every read that showed her
/// items answers, the feed's included (a page about many tenants), with the items shown.
#[tokio::test]
async fn the_trail_says_which_of_a_tenants_items_each_housing_read_showed() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let notice = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(notice.status, 201, "{notice:?}");
    let items: Vec<serde_json::Value> =
        app.audit_record(&notice.reference_id()).await["items_written"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].clone())
            .collect();
    assert!(!items.is_empty());
    let feed = app.get("/housing/updates?since=0", HOUSING).await;
    let view = app.get("/housing/tenants/T-1001", HOUSING).await;
    let empty = app.get("/housing/updates?since=1000", HOUSING).await;

    let about = app
        .get("/audit/records?tenant=T-1001&limit=1000", AUDITOR)
        .await;
    let records: Vec<&serde_json::Value> = about.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .collect();
    for read in [&feed, &view] {
        let r = records
            .iter()
            .find(|r| r["reference_id"] == read.reference_id())
            .unwrap_or_else(|| panic!("the read is not in T-1001's trail: {read:?}"));
        assert_eq!(r["items_read"], serde_json::json!(items), "{r}");
    }
    let r = records
        .iter()
        .find(|r| r["reference_id"] == feed.reference_id())
        .unwrap();
    assert_eq!(r["tenants_read"], serde_json::json!(["T-1001"]));
    assert!(
        !records
            .iter()
            .any(|r| r["reference_id"] == empty.reference_id()),
        "a page about no one is not about T-1001"
    );
}

/// An inspector following one exchange asks for everything about its reference ID: the
/// transaction's own record and each entry's (whose parent it is), not only the first.
/// What is not a reference ID is a 400 at the parameter, not an empty answer.
#[tokio::test]
async fn an_auditor_finds_every_record_about_a_reference_id() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let ok = app
        .post("/fhir", CLINIC, &fixture("bundle-transaction.json"))
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let bundle = ok.reference_id();

    let own = app
        .get(&format!("/audit/records?reference_id={bundle}"), AUDITOR)
        .await;
    assert_eq!(own.body["records"].as_array().unwrap().len(), 1, "{own:?}");
    let all = app
        .get(&format!("/audit/records?related_to={bundle}"), AUDITOR)
        .await;
    let records: Vec<&serde_json::Value> = all.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .collect();
    assert_eq!(
        records.len(),
        4,
        "the Bundle and its three entries: {all:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["reference_id"] == bundle.as_str() || r["parent"] == bundle.as_str()),
        "{records:?}"
    );

    for (query, at) in [
        ("reference_id=not-a-ulid", "reference_id"),
        ("related_to=42", "related_to"),
        ("tenant=", "tenant"),
    ] {
        let a = app.get(&format!("/audit/records?{query}"), AUDITOR).await;
        assert_eq!(a.status, 400, "{query}: {a:?}");
        assert_eq!(a.error_expressions(), [at], "{query}: {a:?}");
    }
}
