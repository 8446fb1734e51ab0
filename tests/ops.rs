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
