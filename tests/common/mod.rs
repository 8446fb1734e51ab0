//! Test harness: the real server on a random loopback port, a fresh data directory,
//! a clock the test controls, and known credentials.
#![allow(dead_code)]

pub mod partner;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hearth::clock::ManualClock;
use hearth::config::Config;
use hearth::fhir::Profiles;
use hearth::mapping::Mappings;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::macros::datetime;

pub const CLINIC: &str = "test-token-riverside-ehr";
pub const MCO: &str = "test-token-bayview-care";
pub const HOUSING: &str = "test-token-housing-worker";
pub const AUDITOR: &str = "test-token-auditor";
/// The operator: the audit trail and failed deliveries, never tenants' information.
pub const ADMIN: &str = "test-token-operator";
/// Review members (joint case reviews) at the housing provider, the clinic, and a clinic
/// not on the tenant's review team.
pub const HOUSING_REVIEW: &str = "test-token-housing-review";
pub const CLINIC_REVIEW: &str = "test-token-riverside-review";
pub const OTHER_REVIEW: &str = "test-token-eastside-review";
/// A clinic no tenant has consented to share with.
pub const OTHER_CLINIC: &str = "test-token-eastside-ehr";

pub const TENANT_SYSTEM: &str = "https://housing.example.org/tenant-id";
pub const MRN_SYSTEM: &str = "https://riverside-clinic.example/fhir/mrn";
pub const MEMBER_SYSTEM: &str = "https://bayview-health-plan.example/member-id";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Mappings and profiles are loaded and compiled once per test binary and shared.
pub fn shared() -> &'static (Arc<Mappings>, Arc<Profiles>) {
    static SHARED: OnceLock<(Arc<Mappings>, Arc<Profiles>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        (
            Arc::new(Mappings::load(&root().join("mappings")).expect("mappings load")),
            Arc::new(Profiles::load(&root().join("profiles")).expect("profiles load")),
        )
    })
}

pub fn fixture(name: &str) -> Value {
    let path = root().join("fixtures").join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("fixture is JSON")
}

/// A config for tests: known tokens, three partners, data in `data_dir`.
pub fn test_config(data_dir: &Path) -> Config {
    test_config_with(data_dir, None)
}

/// As [`test_config`], with notes to the clinic and the MCO delivered to `partner_url`.
/// Retries wait 30 s of (test-controlled) clock time; attempts time out after 300 ms.
pub fn test_config_with(data_dir: &Path, partner_url: Option<&str>) -> Config {
    let endpoint = partner_url
        .map(|u| format!("fhir_base_url = \"{u}\"\nbearer_token = \"partner-secret\"\n"))
        .unwrap_or_default();
    // With a partner endpoint, the clinic's discharge notices are forwarded to the MCO.
    let forward = if partner_url.is_some() {
        "[[forward]]\nfrom = \"riverside-clinic\"\nto = \"bayview-health-plan\"\nitems = [\"discharge\"]\n"
    } else {
        ""
    };
    let h = hearth::auth::hash_token;
    let text = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = {data}
mappings_dir = {mappings}
profiles_dir = {profiles}
body_limit_bytes = 65536

[tenancy]
identifier_system = "{TENANT_SYSTEM}"

[feed]
default_page = 100
max_page = 500

{forward}
[relay]
poll_interval_ms = 20
initial_backoff_secs = 30
max_backoff_secs = 600
dead_letter_after_secs = 3600
# Generous: a slow CI machine must not turn a delivery into a timeout (and a retry
# 30 s away on a clock no test moves). Tests of stalled partners set their own.
attempt_timeout_ms = 5000

[[partners]]
id = "riverside-clinic"
name = "Riverside Community Clinic"
kind = "clinic"
identifier_system = "{MRN_SYSTEM}"
{endpoint}
[[partners]]
id = "bayview-health-plan"
name = "Bayview Health Plan"
kind = "mco"
identifier_system = "{MEMBER_SYSTEM}"
{endpoint}
[[partners]]
id = "eastside-clinic"
name = "Eastside Clinic"
kind = "clinic"

[[partners]]
id = "northside-housing"
name = "Northside Housing Association"
kind = "housing"

[[principals]]
id = "riverside-ehr"
org = "riverside-clinic"
role = "clinic"
token_sha256 = "{clinic}"

[[principals]]
id = "bayview-care"
org = "bayview-health-plan"
role = "mco"
token_sha256 = "{mco}"

[[principals]]
id = "eastside-ehr"
org = "eastside-clinic"
role = "clinic"
token_sha256 = "{other}"

[[principals]]
id = "housing-worker"
org = "northside-housing"
role = "housing"
token_sha256 = "{housing}"

[[principals]]
id = "housing-review"
org = "northside-housing"
role = "review-member"
token_sha256 = "{housing_review}"

[[principals]]
id = "riverside-review"
org = "riverside-clinic"
role = "review-member"
token_sha256 = "{clinic_review}"

[[principals]]
id = "eastside-review"
org = "eastside-clinic"
role = "review-member"
token_sha256 = "{other_review}"

[[principals]]
id = "auditor"
org = "northside-housing"
role = "auditor"
token_sha256 = "{auditor}"

[[principals]]
id = "operator"
org = "northside-housing"
role = "admin"
token_sha256 = "{admin}"
"#,
        data = toml_path(data_dir),
        mappings = toml_path(&root().join("mappings")),
        profiles = toml_path(&root().join("profiles")),
        clinic = h(CLINIC),
        mco = h(MCO),
        other = h(OTHER_CLINIC),
        housing = h(HOUSING),
        auditor = h(AUDITOR),
        admin = h(ADMIN),
        housing_review = h(HOUSING_REVIEW),
        clinic_review = h(CLINIC_REVIEW),
        other_review = h(OTHER_REVIEW),
    );
    Config::from_toml(&text).expect("test config parses")
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub data: TempDir,
    /// The running server's gateway, for tests that must interleave its steps (races).
    pub gateway: Arc<hearth::gateway::Gateway>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A notice from the Riverside clinic arriving now, prepared through the running gateway
/// (for tests that interleave a notice's consent decision and its commit with other
/// requests). The reference ID is issued here, at arrival.
pub async fn prepare_clinic_notice(
    app: &TestApp,
    notice: Value,
) -> Result<hearth::gateway::inbound::Prepared, hearth::error::Error> {
    use hearth::auth::{Principal, Role};
    let call = hearth::gateway::Call {
        reference_id: hearth::ids::ReferenceId::new(),
        principal: Principal {
            id: "riverside-ehr".into(),
            org: hearth::ids::PartnerId::new("riverside-clinic"),
            role: Role::Clinic,
        },
        at: hearth::clock::Clock::now(app.clock.as_ref()),
        request: "POST /fhir/Communication".into(),
        parent: None,
        break_glass: None,
    };
    let mut audit = call.audit("create", hearth::audit::Direction::Inbound);
    let digest = hearth::audit::digest(notice.to_string().as_bytes());
    app.gateway
        .prepare(&call, "Communication", notice, digest, None, &mut audit)
        .await
}

/// Starts Hearth on 127.0.0.1:0 with a fresh data directory. The clock starts at
/// 2026-11-23 10:00 UTC.
pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().expect("temp dir")).await
}

/// Starts Hearth on an existing data directory (to test restarts).
pub async fn spawn_app_in(data: TempDir) -> TestApp {
    spawn_app_with(data, None).await
}

/// Starts Hearth delivering notes to `partner_url`.
pub async fn spawn_app_with(data: TempDir, partner_url: Option<&str>) -> TestApp {
    hearth::tls::install_crypto_provider();
    let config = test_config_with(data.path(), partner_url);
    spawn_configured(data, config, reqwest::Client::new(), "http").await
}

/// Starts Hearth with mappings the test shaped itself (a site's own sensitivity rules).
pub async fn spawn_with_mappings(data: TempDir, mappings: Arc<Mappings>) -> TestApp {
    // Before the client is built: reqwest needs the process's rustls provider.
    hearth::tls::install_crypto_provider();
    let config = test_config(data.path());
    spawn_with(data, config, reqwest::Client::new(), "http", mappings).await
}

/// Starts Hearth with a config the test shaped itself, and the client to call it with.
pub async fn spawn_configured(
    data: TempDir,
    config: Config,
    client: reqwest::Client,
    scheme: &str,
) -> TestApp {
    spawn_with(data, config, client, scheme, shared().0.clone()).await
}

async fn spawn_with(
    data: TempDir,
    config: Config,
    client: reqwest::Client,
    scheme: &str,
    mappings: Arc<Mappings>,
) -> TestApp {
    hearth::tls::install_crypto_provider();
    let profiles = shared().1.clone();
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-23 10:00 UTC)));
    let app =
        hearth::startup::build_with(config, clock.clone(), mappings, profiles).expect("app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let gateway = app.state.gateway.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hearth::startup::run(listener, app, async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("{scheme}://{addr}"),
        client,
        clock,
        data,
        gateway,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn reference_id(&self) -> String {
        self.headers
            .get("x-reference-id")
            .expect("every answer has X-Reference-Id")
            .to_str()
            .unwrap()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// The `expression`s of the OperationOutcome's error issues.
    /// Whether the answer repeats `word` anywhere (any case): what a refusal must not do
    /// with a worker's own words.
    pub fn mentions(&self, word: &str) -> bool {
        self.body
            .to_string()
            .to_lowercase()
            .contains(&word.to_lowercase())
    }

    pub fn error_expressions(&self) -> Vec<String> {
        self.issues("error")
            .iter()
            .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
            .map(|e| e.as_str().unwrap().to_string())
            .collect()
    }

    pub fn issues(&self, severity: &str) -> Vec<Value> {
        self.body["issue"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|i| i["severity"] == severity)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Paths reported as dropped (information issues with an expression).
    pub fn dropped(&self) -> Vec<String> {
        self.issues("information")
            .iter()
            .filter_map(|i| i["expression"][0].as_str().map(str::to_string))
            .collect()
    }
}

pub async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

impl TestApp {
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.post_with(path, token, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.fhir_write(reqwest::Method::POST, path, token, body, headers)
            .await
    }

    /// PUT a FHIR resource (an update), with extra headers such as `If-Match`.
    pub async fn put_with(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.fhir_write(reqwest::Method::PUT, path, token, body, headers)
            .await
    }

    async fn fhir_write(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.write(method, path, token, "application/fhir+json", body, headers)
            .await
    }

    async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().await.expect("request")).await
    }

    /// Records consent `form` for T-1001, whose `withhold_from` names one partner, and
    /// makes that restriction one on what the partner *sends* to housing (FHIR actor role
    /// INF): the housing form names only what a partner receives.
    pub async fn record_sending_restriction(&self, form: &Value) {
        let recorded = self.post_json("/housing/consents", HOUSING, form).await;
        assert_eq!(recorded.status, 201, "{recorded:?}");
        let list = self.get("/housing/consents?tenant=T-1001", HOUSING).await;
        let id = list.body["consents"][0]["id"].as_str().unwrap().to_string();
        let path = format!("/fhir/Consent/{id}");
        let mut fhir = self.get(&path, HOUSING).await.body;
        let role = &mut fhir["provision"]["provision"][0]["actor"][0]["role"]["coding"][0]["code"];
        assert_eq!(*role, "IRCP");
        *role = json!("INF");
        let put = self.put_with(&path, HOUSING, &fhir, &[]).await;
        assert_eq!(put.status, 200, "{put:?}");
    }

    /// POST with `application/json` (the housing API).
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.post_json_with(path, token, body, &[]).await
    }

    /// [`TestApp::post_json`] with extra headers, such as a break-glass purpose.
    pub async fn post_json_with(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Answer {
        let json = "application/json";
        self.write(reqwest::Method::POST, path, token, json, body, headers)
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        answer(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(token)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// Registers tenant T-1001 (MRN-448812 at the clinic, BHP-20931 at the MCO).
    /// The Prometheus text at `/metrics` (public, no token).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn register_tenant(&self) {
        self.register(
            "T-1001",
            &[(MRN_SYSTEM, "MRN-448812"), (MEMBER_SYSTEM, "BHP-20931")],
        )
        .await;
    }

    pub async fn register(&self, tenant: &str, ids: &[(&str, &str)]) {
        let body = json!({
            "tenant_id": tenant,
            "identifiers": ids.iter().map(|(s, v)| json!({"system": s, "value": v})).collect::<Vec<_>>(),
        });
        let a = self.post("/housing/tenants", HOUSING, &body).await;
        assert!(a.status == 201 || a.status == 200, "register: {a:?}");
    }

    /// The id of tenant T-1001's consent with `status`, as housing's consent list shows it
    /// (a partner's proposal is found this way: the partner is told nothing to read back).
    pub async fn consent_id_with_status(&self, status: &str) -> String {
        let listed = self.get("/housing/consents?tenant=T-1001", HOUSING).await;
        listed.body["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["status"] == status)
            .unwrap_or_else(|| panic!("no {status} consent in {listed:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Records a consent fixture as the housing worker.
    pub async fn consent(&self, fixture_name: &str) -> Answer {
        let a = self
            .post("/fhir/Consent", HOUSING, &fixture(fixture_name))
            .await;
        assert_eq!(a.status, 201, "consent: {a:?}");
        a
    }

    /// Tenant T-1001 registered, consenting to share with the Riverside clinic.
    pub async fn with_consenting_tenant(self) -> Self {
        self.register_tenant().await;
        self.consent("consent-share-with-clinic.json").await;
        self
    }

    /// The audit record of the request (or Bundle entry) with this reference ID.
    pub async fn audit_record(&self, reference: &str) -> Value {
        let a = self
            .get(&format!("/audit/records?reference_id={reference}"), AUDITOR)
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        a.body["records"][0]["record"].clone()
    }

    /// Every feed entry from the start.
    pub async fn feed_all(&self) -> Vec<Value> {
        let mut since = "0".to_string();
        let mut out = Vec::new();
        loop {
            let a = self
                .get(
                    &format!("/housing/updates?since={since}&limit=100"),
                    HOUSING,
                )
                .await;
            assert_eq!(a.status, 200, "{a:?}");
            let entries = a.body["entries"].as_array().unwrap().clone();
            if entries.is_empty() {
                return out;
            }
            since = a.body["next"].as_str().unwrap().to_string();
            out.extend(entries);
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data.path().join("hearth.db")
    }

    /// Stops the server (draining) and returns the data directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.expect("server task").expect("server ran");
        }
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }
}
