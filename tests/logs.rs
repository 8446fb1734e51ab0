//! "No PHI in logs": the real `hearth serve`, logging at debug, is sent notices full of
//! clinical detail (accepted, refused, invalid, probed for), and its log must carry none
//! of it — reference IDs, tenant IDs and paths only.

mod common;

use common::process::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_log_carries_no_clinical_values_even_at_debug() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start_logging(work.path(), &data, "debug").await;
    let http = client();
    register_and_consent(&server, &http).await;

    let oversharing = fixture("discharge-notice-oversharing.json");
    let mut invalid = oversharing.clone();
    invalid["identifier"][0]["value"] = json!("invalid-1");
    invalid["contained"][0]["birthDate"] = json!("1955-13-08");
    for (token, body, status) in [
        (CLINIC, oversharing.clone(), 201),
        (
            CLINIC,
            fixture("medication-change-buprenorphine-start.json"),
            201,
        ),
        (OTHER_CLINIC, oversharing, 403),
        (CLINIC, invalid, 422),
    ] {
        let r = server
            .post(&http, "/fhir/Communication", token, &body)
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{}", r.text().await.unwrap_or_default());
    }
    let probe = http
        .get(format!("{}/fhir/Patient/MRN-448812", server.base))
        .bearer_auth(CLINIC)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 404);
    server
        .get_json(&http, "/housing/tenants/T-1001", HOUSING)
        .await;

    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("T-1001"),
        "the log names tenants by their ID:\n{log}"
    );
    for value in [
        "Kowalczyk",
        "Halina",
        "Nowak",
        "1955-03-08",
        "1955-13-08",
        "MRN-448812",
        "555-0173",
        "ethadone",
        "uprenorphine",
        "Opioid",
        "fracture",
        "tearful",
        "Withdrawal",
    ] {
        assert!(
            !log.to_lowercase().contains(&value.to_lowercase()),
            "`{value}` is in the log:\n{log}"
        );
    }
}
