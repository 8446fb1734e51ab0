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
