//! Durability under SIGKILL: "acknowledged means durable".
//!
//! Runs the real `hearth serve` as a child process, fires notices at it from several
//! concurrent clients, kills it with SIGKILL while requests are in flight, then checks
//! the store: the audit chain verifies, every reference ID acknowledged with 201 has its
//! exchange, items and audit record, and the feed has no gaps. A restart on the same data
//! directory serves everything that was acknowledged and extends the chain cleanly.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Kill once this many notices are acknowledged, or after LOAD_FOR, whichever is first.
const ENOUGH_ACKS: usize = 500;
const LOAD_FOR: Duration = Duration::from_millis(1500);
/// Longest wait for a freshly started server to answer /healthz.
const READY_WITHIN: Duration = Duration::from_secs(10);

fn hearth_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.current_dir(root())
        .env_remove("HEARTH_CONFIG")
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("HEARTH_LISTEN")
        .env("RUST_LOG", "hearth=warn");
    c
}

/// The harness's test config (same partners, principals and tokens), listening on
/// `port`, written out as the TOML file an operator would hand `hearth serve`.
fn config_text(port: u16, data_dir: &Path) -> String {
    let mut config = test_config(data_dir);
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    toml::to_string(&config).expect("the config serialises as TOML")
}

/// A port nothing listens on right now (the server may still lose a race for it; the
/// caller retries with another).
fn free_port() -> u16 {
    for _ in 0..20 {
        if let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") {
            return l.local_addr().unwrap().port();
        }
    }
    panic!("cannot find a free loopback port");
}

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: the process picks the crypto provider.
    hearth::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// A running `hearth serve`; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `hearth serve` on `data_dir` and waits until /healthz answers.
    async fn start(work: &Path, data_dir: &Path) -> Server {
        let http = client();
        for attempt in 0..5 {
            let port = free_port();
            let config = work.join(format!("hearth-{port}.toml"));
            std::fs::write(&config, config_text(port, data_dir)).unwrap();
            let log = work.join(format!("serve-{port}.log"));
            let out = File::create(&log).unwrap();
            let child = hearth_command()
                .args(["serve", "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("hearth serve starts");
            let mut server = Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
            };
            let deadline = Instant::now() + READY_WITHIN;
            loop {
                if let Some(status) = server.child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                    if log.contains("binding") && attempt < 4 {
                        break; // lost the port to someone else; try another
                    }
                    panic!("hearth serve exited with {status} before it was ready:\n{log}");
                }
                if let Ok(r) = http
                    .get(format!("{}/healthz", server.base))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    && r.status() == 200
                {
                    return server;
                }
                assert!(
                    Instant::now() < deadline,
                    "hearth serve did not answer /healthz within {READY_WITHIN:?}:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        unreachable!("five attempts to bind a free port failed")
    }

    /// SIGKILL: no shutdown hook, no drain, no checkpoint.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reaping the killed server");
        assert!(
            !status.success(),
            "the server was meant to die by SIGKILL, but exited with {status}"
        );
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        http.post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
    }

    async fn get_json(&self, http: &reqwest::Client, path: &str, token: &str) -> Value {
        let r = http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn register_and_consent(server: &Server, http: &reqwest::Client) {
    let tenant = json!({
        "tenant_id": "T-1001",
        "identifiers": [{"system": MRN_SYSTEM, "value": "MRN-448812"}],
    });
    let r = server
        .post(http, "/housing/tenants", HOUSING, &tenant)
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "register: {}",
        r.text().await.unwrap_or_default()
    );
    // The real binary runs on the system clock: keep the consent's period open around
    // whatever today is, so the test does not start failing on 2027-01-01.
    let mut consent = fixture("consent-share-with-clinic.json");
    consent["provision"]["period"] = json!({"start": "2000-01-01", "end": "2999-12-31"});
    let r = server
        .post(http, "/fhir/Consent", HOUSING, &consent)
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "consent: {}",
        r.text().await.unwrap_or_default()
    );
}

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
