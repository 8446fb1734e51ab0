//! Operations: health, readiness and Prometheus metrics, without credentials and without
//! identifiers in the metrics.

mod common;

use common::*;

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_credentials() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    app.get(&a.header("location").unwrap(), CLINIC).await;
    for path in ["/healthz", "/readyz"] {
        let r = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("hearth_http_requests_total"), "{metrics}");
    assert!(
        metrics.contains(r#"route="/fhir/Communication/{id}""#),
        "{metrics}"
    );
    assert!(metrics.contains("hearth_http_request_duration_seconds_bucket"));
    assert!(
        !metrics.contains(&a.reference_id()),
        "no identifiers in metrics"
    );
    assert!(!metrics.contains("T-1001"));
}

/// A client that starts a request and never finishes its headers is cut off at the
/// configured deadline, so it can neither hold a connection for ever nor keep Hearth
/// from shutting down.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off_and_does_not_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.header_read_timeout_ms = 300;
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;

    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTT").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the connection was still open after 10 s");

    // Another starts one while Hearth is told to stop: the stop waits for it only until
    // the same deadline.
    let mut slower = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slower.write_all(b"GET /healthz HTT").await.unwrap();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), app.stop()).await;
    assert!(stopped.is_ok(), "a half-sent request held the shutdown");
}

/// Anyone can send requests without a token, and each refusal is a durable audit record:
/// per client address and minute only the first few are itemised, the rest counted into
/// one summary record. Every refusal is accounted for; the store grows by a bounded
/// amount however many arrive.
#[tokio::test]
async fn refusals_without_credentials_are_itemised_within_a_budget_and_summarised_beyond() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.unauthenticated_audit_per_minute = 2;
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
    let probe = |n: usize| {
        let app = &app;
        async move {
            for _ in 0..n {
                let a = app.get("/fhir/Communication/x", "not-a-token").await;
                assert_eq!(a.status, 401);
            }
        }
    };
    probe(5).await;
    let refused = |rs: &[serde_json::Value]| {
        rs.iter()
            .filter(|r| r["status"] == 401 && r["action"] == "request")
            .count()
    };
    let summaries = |rs: &[serde_json::Value]| {
        rs.iter()
            .filter(|r| r["action"] == "refusals-summary")
            .map(|r| r["count"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let first = all_records(app.gateway.store.as_ref()).await;
    assert_eq!(refused(&first), 2, "{first:?}");
    assert!(summaries(&first).is_empty());
    assert!(
        app.metrics_text()
            .await
            .contains("hearth_refusals_not_itemised_total 3")
    );

    // A minute later: that minute's three are summarised, and the count starts again.
    app.clock.advance(time::Duration::minutes(1));
    probe(4).await;
    let second = all_records(app.gateway.store.as_ref()).await;
    assert_eq!(refused(&second), 4, "{second:?}");
    assert_eq!(summaries(&second), [3]);

    // The last minute's count is written at shutdown.
    let data = app.stop().await;
    let store = hearth::store::sqlite::SqliteStore::open(data.path()).unwrap();
    let after = all_records(&store).await;
    assert_eq!(summaries(&after), [3, 2]);
    store.close();
}

/// A client that sends its headers and then stops sending the body gets a 408 at the
/// configured deadline, not a request held open for as long as it likes.
#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.body_read_timeout_ms = 300;
    hearth::tls::install_crypto_provider();
    let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /fhir/Communication HTTP/1.1\r\nHost: hearth\r\nAuthorization: Bearer {CLINIC}\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n{{\"resourceType\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("answered before the test's own deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Every audit record in `store` (up to a thousand), oldest first.
async fn all_records(store: &(impl hearth::store::AuditStore + ?Sized)) -> Vec<serde_json::Value> {
    store
        .query(hearth::store::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record)
        .collect()
}
