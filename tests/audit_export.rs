//! `hearth audit export` in the three formats an auditor asks for.

mod common;

use std::process::Command;

use common::*;

fn export(dir: &std::path::Path, format: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "audit",
            "export",
            "--data-dir",
            dir.to_str().unwrap(),
            "--format",
            format,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_trail_exports_as_jsonl_csv_and_fhir_audit_events_without_clinical_values() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(a.status, 201);
    app.post(
        "/fhir/Communication",
        OTHER_CLINIC,
        &fixture("risk-flag-update.json"),
    )
    .await;
    // Housing's feed read: a read across tenants, which the exports must still tie to
    // the tenant it showed.
    let read = app.get("/housing/updates?since=0", HOUSING).await;
    assert_eq!(read.status, 200);
    let data = app.stop().await;

    let jsonl = export(data.path(), "jsonl");
    assert_eq!(
        jsonl.lines().count(),
        5,
        "register, consent, accepted, refused, read… {jsonl}"
    );

    let csv = export(data.path(), "csv");
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("seq,recorded,reference_id")
    );
    let accepted = csv.lines().find(|l| l.contains(&a.reference_id())).unwrap();
    assert!(
        accepted.contains("accepted") && accepted.contains("risk_flag"),
        "{accepted}"
    );
    let feed = csv
        .lines()
        .find(|l| l.contains(&read.reference_id()))
        .unwrap();
    let item = format!("{}-0", a.reference_id());
    assert!(
        feed.contains(",T-1001,") && feed.contains(&item),
        "the feed read names the tenant and the items it showed: {feed}"
    );

    let bundle: serde_json::Value =
        serde_json::from_str(&export(data.path(), "audit-event")).unwrap();
    let events = bundle["entry"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    let feed = events
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r.to_string().contains(&read.reference_id()))
        .unwrap();
    assert_eq!(
        feed["entity"][0]["what"]["identifier"]["value"], "T-1001",
        "{feed}"
    );
    assert!(feed.to_string().contains(&item), "{feed}");
    let import = events
        .iter()
        .map(|e| &e["resource"])
        .find(|r| {
            r["type"]["code"] == "110107"
                && r["outcome"] == "0"
                && r.to_string().contains(&a.reference_id())
        })
        .unwrap();
    assert_eq!(import["action"], "C");
    assert_eq!(
        import["agent"][1]["who"]["reference"],
        "Organization/riverside-clinic"
    );
    let refused = events
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["outcome"] == "4")
        .unwrap();
    assert_eq!(refused["outcomeDesc"], "partner-not-covered");
    for text in [&jsonl, &csv] {
        assert!(!text.contains("At risk for falls"));
    }
}

/// An inspector working from the CSV alone can tell an emergency exchange from a routine
/// one: the row names its break-glass purpose, where a consent would otherwise be.
#[tokio::test]
async fn the_csv_export_names_an_exchange_only_break_glass_permitted() {
    let app = spawn_app().await.with_consenting_tenant().await;
    // Past the end of the tenant's consent.
    app.clock.set(time::macros::datetime!(2027-06-02 09:00 UTC));
    let urgent = app
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
    assert_eq!(urgent.status, 201, "{urgent:?}");
    let data = app.stop().await;

    let csv = export(data.path(), "csv");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row = reader
        .records()
        .map(Result::unwrap)
        .find(|r| r[column("reference_id")] == urgent.reference_id())
        .expect("the exchange is exported");
    assert_eq!(&row[column("break_glass")], "BTG", "{row:?}");
    assert_eq!(&row[column("outcome")], "accepted", "{row:?}");
    assert!(
        !csv.contains("readmitted overnight"),
        "the stated reason stays out"
    );
}
