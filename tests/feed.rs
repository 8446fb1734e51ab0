//! The housing updates feed: ordered, cursor-paged, no gaps or duplicates, long-poll.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;

fn notice(n: usize) -> serde_json::Value {
    let mut r = fixture("risk-flag-update.json");
    r["identifier"][0]["value"] = json!(format!("feed-test-{n}"));
    r
}

#[tokio::test]
async fn paging_while_writers_run_shows_every_entry_exactly_once_in_order() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let writers = 4;
    let per_writer = 15;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = app.client.clone();
        let base = app.base.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let r = client
                    .post(format!("{base}/fhir/Communication"))
                    .bearer_auth(CLINIC)
                    .header("content-type", "application/fhir+json")
                    .body(notice(w * 1000 + i).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        }));
    }
    // Page with a small limit while the writers run: the consent's entry, then three
    // items per notice.
    let expected = 1 + writers * per_writer * 3;
    let mut seen = Vec::new();
    let mut since = "0".to_string();
    let mut rounds = 0;
    while seen.len() < expected {
        rounds += 1;
        assert!(
            rounds < 10_000,
            "the feed stopped advancing at {}",
            seen.len()
        );
        let a = app
            .get(
                &format!("/housing/updates?since={since}&limit=7&wait=5"),
                HOUSING,
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        for e in a.body["entries"].as_array().unwrap() {
            seen.push(e["seq"].as_u64().unwrap());
        }
        since = a.body["next"].as_str().unwrap().to_string();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let contiguous: Vec<u64> = (1..=expected as u64).collect();
    assert_eq!(seen, contiguous, "gaps, duplicates or disorder");
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), expected);
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_something_arrives() {
    let app = spawn_app().await.with_consenting_tenant().await;
    // The consent's own entry is the first.
    let client = app.client.clone();
    let url = format!("{}/housing/updates?since=1&wait=30", app.base);
    let poll = tokio::spawn(async move {
        answer(client.get(url).bearer_auth(HOUSING).send().await.unwrap()).await
    });
    // Whether the write lands before or during the poll, the poll must see it.
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &notice(1))
            .await
            .status,
        201
    );
    let a = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll returned")
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body["entries"].as_array().unwrap().len(), 3);
    assert_eq!(a.body["next"], "4");

    // Any write that adds to the feed wakes a poll, not only an inbound notice: here a
    // worker asks the tenant to renew consent.
    let client = app.client.clone();
    let url = format!("{}/housing/updates?since=4&wait=30", app.base);
    let poll = tokio::spawn(async move {
        answer(client.get(url).bearer_auth(HOUSING).send().await.unwrap()).await
    });
    // Let the poll reach its wait, so what is checked is the wake-up, not the first read
    // (a write that lands first is found by that read and would pass without waking).
    wait_until_polls_waiting(&app, 1).await;
    // The prompt comes five minutes into the wait: the read is recorded when it was
    // made, not when it was asked for, so it never precedes what it showed.
    app.clock.advance(time::Duration::minutes(5));
    let asked = app
        .post_json(
            "/housing/tenants/T-1001/renewal-request",
            HOUSING,
            &json!({"reason": "tenant-request"}),
        )
        .await;
    assert_eq!(asked.status, 200, "{asked:?}");
    let a = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll returned")
        .unwrap();
    assert_eq!(a.body["entries"][0]["change"], "renewal-due", "{a:?}");
    let read = app.audit_record(&a.reference_id()).await;
    assert_eq!(read["recorded"], "2026-11-23T10:05:00Z", "{read}");
    wait_until_polls_waiting(&app, 0).await;
}

#[tokio::test]
async fn the_feed_needs_the_housing_role_and_sensible_parameters() {
    let app = spawn_app().await;
    assert_eq!(app.get("/housing/updates", CLINIC).await.status, 403);
    assert_eq!(app.get("/housing/updates", AUDITOR).await.status, 403);
    for (bad, at) in [
        ("since=-1", Some("since")),
        ("since=abc", Some("since")),
        ("limit=abc", Some("limit")),
        ("limit=0", Some("limit")),
        ("limit=501", Some("limit")),
        ("wait=61", Some("wait")),
        ("cursor=1", Some("cursor")),
    ] {
        let a = app.get(&format!("/housing/updates?{bad}"), HOUSING).await;
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_eq!(a.body["resourceType"], "OperationOutcome");
        if let Some(at) = at {
            assert_eq!(a.error_expressions(), [at], "{bad}: {a:?}");
        }
    }
    let empty = app.get("/housing/updates", HOUSING).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["entries"], json!([]));
    assert_eq!(empty.body["next"], "0");

    // A cursor this store never issued — housing's saved cursor after the store was
    // restored from an older backup, or a corrupted one — is refused, not read as "nothing
    // new": every update numbered up to it would otherwise be skipped without a word.
    let app = app.with_consenting_tenant().await;
    let notice = fixture("risk-flag-update.json");
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &notice)
            .await
            .status,
        201
    );
    let head = app.get("/housing/updates?since=0", HOUSING).await.body["next"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let at_head = app
        .get(&format!("/housing/updates?since={head}"), HOUSING)
        .await;
    assert_eq!(at_head.status, 200, "{at_head:?}");
    assert_eq!(at_head.body["entries"], json!([]), "{at_head:?}");
    for ahead in [head + 1, u64::MAX] {
        let a = app
            .get(&format!("/housing/updates?since={ahead}&wait=5"), HOUSING)
            .await;
        assert_eq!(a.status, 400, "{ahead}: {a:?}");
        assert_eq!(a.error_expressions(), ["since"], "{a:?}");
    }
}

/// The latency histogram measures Hearth's time to answer: a long-poll parked on a quiet
/// feed is not a slow request, and does not push the feed's latency up.
#[tokio::test]
async fn a_long_polls_wait_is_not_counted_as_latency() {
    let app = spawn_app().await.with_consenting_tenant().await;
    let head = app.get("/housing/updates?since=0", HOUSING).await.body["next"]
        .as_str()
        .unwrap()
        .to_string();
    let client = app.client.clone();
    let url = format!("{}/housing/updates?since={head}&wait=30", app.base);
    let started = std::time::Instant::now();
    let poll = tokio::spawn(async move {
        answer(client.get(url).bearer_auth(HOUSING).send().await.unwrap()).await
    });
    wait_until_polls_waiting(&app, 1).await;
    // Parked for a measurable while before anything arrives.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!poll.is_finished(), "the poll was still waiting");
    assert_eq!(
        app.post("/fhir/Communication", CLINIC, &notice(1))
            .await
            .status,
        201
    );
    let a = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll returned")
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    let text = app.metrics_text().await;
    let sum: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("hearth_http_request_duration_seconds_sum{route=\"/housing/updates\"} ")
        })
        .expect("the feed's latency is recorded")
        .parse()
        .unwrap();
    assert!(sum > 0.0 && sum < 0.5, "the wait was counted: {sum} s");
    let count = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "hearth_http_request_duration_seconds_count{route=\"/housing/updates\"} ",
            )
        })
        .expect("the feed's count");
    assert_eq!(
        count, "2",
        "the head read and the long-poll, each measured once"
    );
}

/// Waits (bounded) until `n` feed reads are parked in their long-poll, as `/metrics` says.
async fn wait_until_polls_waiting(app: &TestApp, n: u32) {
    let expected = format!("hearth_feed_long_polls_waiting {n}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.metrics_text().await;
        if text.lines().any(|l| l == expected) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no long-poll waiting: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A worker's long-poll does not hold Hearth's shutdown for its whole `wait`: it is
/// answered (an empty page, its cursor unchanged) and the server stops.
#[tokio::test]
async fn shutting_down_answers_waiting_long_polls() {
    let app = spawn_app().await;
    let client = app.client.clone();
    let url = format!("{}/housing/updates?since=0&wait=60", app.base);
    let poll = tokio::spawn(async move {
        answer(client.get(url).bearer_auth(HOUSING).send().await.unwrap()).await
    });
    wait_until_polls_waiting(&app, 1).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), app.stop()).await;
    assert!(stopped.is_ok(), "the long-poll held the shutdown");
    let a = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the poll was answered")
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["entries"], serde_json::json!([]));
    assert_eq!(a.body["next"], "0");
}
