//! Durability under SIGKILL: "acknowledged means durable".
//!
//! Runs the real `hearth serve` as a child process, fires notices at it from several
//! concurrent clients, kills it with SIGKILL while requests are in flight, then checks
//! the store: the audit chain verifies, every reference ID acknowledged with 201 has its
//! exchange, items and audit record, and the feed has no gaps. A restart on the same data
//! directory serves everything that was acknowledged and extends the chain cleanly.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::*;
use common::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Kill once this many notices are acknowledged, or after LOAD_FOR, whichever is first.
const ENOUGH_ACKS: usize = 500;
const LOAD_FOR: Duration = Duration::from_millis(1500);
fn notice(n: u64) -> Value {
    let mut r = fixture("risk-flag-update.json");
    r["identifier"][0]["value"] = json!(format!("CRASH-TEST-{n}"));
    r
}

#[derive(Default)]
struct Tally {
    acked: Vec<String>,
    unexpected: Vec<String>,
}

fn audit_verify(data_dir: &Path) -> String {
    let o = hearth_command()
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("hearth audit verify runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && out.starts_with("OK"),
        "audit verify after the crash: {:?}\n{out}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn count(db: &Connection, sql: &str, reference: &str) -> i64 {
    db.query_row(sql, [reference], |r| r.get(0)).unwrap()
}

/// Sequence numbers of a table, which must run 1, 2, 3, … with no gap.
fn assert_contiguous(db: &Connection, table: &str) -> u64 {
    let mut stmt = db
        .prepare(&format!("SELECT seq FROM {table} ORDER BY seq"))
        .unwrap();
    let seqs: Vec<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(
            *s,
            i as i64 + 1,
            "{table}: gap or duplicate at position {i}"
        );
    }
    seqs.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_notices_survive_sigkill() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let per_notice = shared().0.translate(&notice(0)).items.len();
    assert!(per_notice > 0);
    let http = client();

    let mut server = Server::start(work.path(), &data).await;
    register_and_consent(&server, &http).await;

    // --- load, then SIGKILL with requests in flight ---------------------------------
    let server_base = server.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, next, tally, in_flight, http, base) = (
            stop.clone(),
            next.clone(),
            tally.clone(),
            in_flight.clone(),
            http.clone(),
            server_base.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                in_flight.fetch_add(1, Ordering::SeqCst);
                let sent = http
                    .post(format!("{base}/fhir/Communication"))
                    .bearer_auth(CLINIC)
                    .header("content-type", "application/fhir+json")
                    .body(notice(n).to_string())
                    .send()
                    .await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match sent {
                    Ok(r) if r.status() == 201 => {
                        let reference = r
                            .headers()
                            .get("x-reference-id")
                            .expect("a 201 carries X-Reference-Id")
                            .to_str()
                            .unwrap()
                            .to_string();
                        // Acknowledged only once the whole answer has arrived.
                        if r.bytes().await.is_ok() {
                            tally.lock().unwrap().acked.push(reference);
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        tally
                            .lock()
                            .unwrap()
                            .unexpected
                            .push(format!("{status}: {body}"));
                    }
                    // The server is gone (killed mid-request).
                    Err(_) => break,
                }
            }
        }));
    }
    let started = Instant::now();
    while started.elapsed() < LOAD_FOR && tally.lock().unwrap().acked.len() < ENOUGH_ACKS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Kill with requests on the wire (clients are between requests only for moments).
    let mut in_flight_at_kill = in_flight.load(Ordering::SeqCst);
    for _ in 0..1000 {
        if in_flight_at_kill > 0 {
            break;
        }
        tokio::task::yield_now().await;
        in_flight_at_kill = in_flight.load(Ordering::SeqCst);
    }
    server.kill();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(15), c)
            .await
            .expect("a client hung after the kill")
            .expect("a client panicked");
    }
    let Tally { acked, unexpected } = std::mem::take(&mut *tally.lock().unwrap());
    assert!(
        unexpected.is_empty(),
        "answers other than 201 under load: {unexpected:?}"
    );
    assert!(
        acked.len() >= CLIENTS,
        "too few notices acknowledged to prove anything: {}",
        acked.len()
    );
    assert!(
        in_flight_at_kill > 0,
        "no request was in flight at the kill"
    );
    eprintln!(
        "acknowledged {} notices in {:?}; {in_flight_at_kill} in flight at SIGKILL",
        acked.len(),
        started.elapsed()
    );

    // --- the store after the crash --------------------------------------------------
    audit_verify(&data);
    {
        let db =
            Connection::open_with_flags(data.join("hearth.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        for reference in &acked {
            assert_eq!(
                count(
                    &db,
                    "SELECT count(*) FROM exchanges WHERE reference_id = ?1",
                    reference
                ),
                1,
                "acknowledged {reference} has no exchange row"
            );
            assert_eq!(
                count(
                    &db,
                    "SELECT count(*) FROM items WHERE reference_id = ?1",
                    reference
                ),
                per_notice as i64,
                "acknowledged {reference} lost items"
            );
            assert!(
                count(
                    &db,
                    "SELECT count(*) FROM audit WHERE reference_id = ?1",
                    reference
                ) >= 1,
                "acknowledged {reference} has no audit record"
            );
            assert_eq!(
                count(
                    &db,
                    "SELECT count(*) FROM feed WHERE reference_id = ?1",
                    reference
                ),
                per_notice as i64,
                "acknowledged {reference} is missing from the feed"
            );
        }
        let feed = assert_contiguous(&db, "feed");
        assert!(feed >= (acked.len() * per_notice) as u64);
        let audited = assert_contiguous(&db, "audit");
        let stored: i64 = db
            .query_row("SELECT count(*) FROM exchanges", [], |r| r.get(0))
            .unwrap();
        assert!(stored as usize >= acked.len());
        eprintln!(
            "after the crash: {stored} exchanges stored ({} acknowledged), {feed} feed entries, {audited} audit records",
            acked.len()
        );
        // Nothing half-written: every stored exchange has all its items, audited.
        let partial: i64 = db
            .query_row(
                "SELECT count(*) FROM exchanges e WHERE
                   (SELECT count(*) FROM items i WHERE i.reference_id = e.reference_id) <> ?1
                   OR NOT EXISTS (SELECT 1 FROM audit a WHERE a.reference_id = e.reference_id)",
                [per_notice as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            partial, 0,
            "exchanges stored without all their items or an audit record"
        );
    }

    // --- restart on the same data directory ------------------------------------------
    let server = Server::start(work.path(), &data).await;
    let view = server
        .get_json(&http, "/housing/tenants/T-1001", HOUSING)
        .await;
    let items = view["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in the tenant view: {view}"));
    assert!(
        items.len() >= acked.len() * per_notice,
        "the tenant view lists {} items; {} acknowledged notices × {per_notice} were promised",
        items.len(),
        acked.len()
    );
    for reference in &acked {
        assert!(
            items.iter().any(|i| i["id"]
                .as_str()
                .is_some_and(|id| id.starts_with(reference.as_str()))),
            "acknowledged {reference} is not in the tenant view after the restart"
        );
    }

    // The restarted server carries on the chain and the feed where the crash left them.
    let r = server
        .post(&http, "/fhir/Communication", CLINIC, &notice(u64::MAX))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "after restart: {}",
        r.text().await.unwrap_or_default()
    );
    audit_verify(&data);
    let db = Connection::open_with_flags(data.join("hearth.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    assert_contiguous(&db, "feed");
    assert_contiguous(&db, "audit");
    drop(server);
}
