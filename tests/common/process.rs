//! The real `hearth serve` binary as a child process, for tests that need the process
//! itself: SIGKILL, its log output, its command line.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

/// Longest wait for a freshly started server to answer /healthz.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

pub fn hearth_command() -> Command {
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
pub fn config_text(port: u16, data_dir: &Path) -> String {
    let mut config = test_config(data_dir);
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    toml::to_string(&config).expect("the config serialises as TOML")
}

/// A port nothing listens on right now (the server may still lose a race for it; the
/// caller retries with another).
pub fn free_port() -> u16 {
    for _ in 0..20 {
        if let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") {
            return l.local_addr().unwrap().port();
        }
    }
    panic!("cannot find a free loopback port");
}

pub fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: the process picks the crypto provider.
    hearth::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// A running `hearth serve`; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `hearth serve` on `data_dir` and waits until /healthz answers.
    pub async fn start(work: &Path, data_dir: &Path) -> Server {
        Self::start_logging(work, data_dir, "hearth=warn").await
    }

    /// [`Self::start`] with `RUST_LOG` set to `filter`.
    pub async fn start_logging(work: &Path, data_dir: &Path, filter: &str) -> Server {
        let http = client();
        for attempt in 0..5 {
            let port = free_port();
            let config = work.join(format!("hearth-{port}.toml"));
            std::fs::write(&config, config_text(port, data_dir)).unwrap();
            let log = work.join(format!("serve-{port}.log"));
            let out = File::create(&log).unwrap();
            let child = hearth_command()
                .env("RUST_LOG", filter)
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
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reaping the killed server");
        assert!(
            !status.success(),
            "the server was meant to die by SIGKILL, but exited with {status}"
        );
    }

    pub async fn post(
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

    pub async fn get_json(&self, http: &reqwest::Client, path: &str, token: &str) -> Value {
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

pub async fn register_and_consent(server: &Server, http: &reqwest::Client) {
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
