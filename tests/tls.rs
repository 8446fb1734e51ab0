//! Secure routes: HTTPS with rustls, partner client certificates (mutual TLS), and
//! outbound calls that trust only the roots configured for a partner. Certificates are
//! made by the test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::partner::Partner;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;

struct Pki {
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// A leaf certificate for `names`: (certificate PEM, key PEM, DER).
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    hearth::tls::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn hearth_serves_https_and_a_pinned_partner_must_present_its_client_certificate() {
    hearth::tls::install_crypto_provider();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key, _) = pki.leaf(&["localhost", "127.0.0.1"]);
    let (clinic_cert, clinic_key, clinic_der) = pki.leaf(&["riverside-ehr"]);
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.tls = Some(hearth::config::Tls {
        cert: write(dir.path(), "server.pem", &server_cert),
        key: write(dir.path(), "server.key", &server_key),
        client_ca: Some(write(dir.path(), "ca.pem", &pki.ca_pem)),
        // Long enough for every real client on a loaded CI machine; the silent client
        // below is still dropped well within the test's wait.
        handshake_timeout_ms: 2_000,
        accept_error_pause_ms: 100,
    });
    let clinic = config
        .partners
        .iter_mut()
        .find(|p| p.id.as_str() == "riverside-clinic")
        .unwrap();
    clinic.client_cert_sha256 = Some(hearth::tls::fingerprint(&clinic_der));

    let with_cert = client(&pki.ca_pem, Some((&clinic_cert, &clinic_key)));
    let app = spawn_configured(data, config, with_cert.clone(), "https").await;
    let meta = app
        .client
        .get(format!("{}/fhir/metadata", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);

    // A client that connects and never starts the handshake is dropped once the
    // configured handshake time (2 s here) has passed; it cannot hold the slot.
    let addr = app.base.trim_start_matches("https://").to_string();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent client was kept: {closed:?}"
    );

    app.register_tenant().await;
    app.consent("consent-share-with-clinic.json").await;
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("risk-flag-update.json"),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");

    // The clinic's token over a connection without its certificate is refused.
    let without = client(&pki.ca_pem, None);
    let r = without
        .post(format!("{}/fhir/Communication", app.base))
        .bearer_auth(CLINIC)
        .header("content-type", "application/fhir+json")
        .body(fixture("care-contact-update.json").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A certificate from the right CA but not the pinned one is refused too.
    let (other_cert, other_key, _) = pki.leaf(&["someone-else"]);
    let other = client(&pki.ca_pem, Some((&other_cert, &other_key)));
    let r = other
        .get(format!("{}/housing/updates", app.base))
        .bearer_auth(CLINIC)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Partners that are not pinned need no certificate.
    let r = without
        .get(format!("{}/housing/updates", app.base))
        .bearer_auth(HOUSING)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A client that does not trust Hearth's CA cannot connect at all.
    let stranger_ca = Pki::new();
    let untrusting = client(&stranger_ca.ca_pem, None);
    assert!(
        untrusting
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn outbound_delivery_trusts_only_the_partners_configured_roots() {
    hearth::tls::install_crypto_provider();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = pki.leaf(&["localhost", "127.0.0.1"]);
    let server = hearth::config::Tls {
        cert: write(dir.path(), "partner.pem", &cert),
        key: write(dir.path(), "partner.key", &key),
        client_ca: None,
        handshake_timeout_ms: 10_000,
        accept_error_pause_ms: 100,
    };
    let partner = Partner::start_with(Some(hearth::tls::server_config(&server).unwrap())).await;

    for (roots, delivered) in [(pki.ca_pem.clone(), true), (Pki::new().ca_pem, false)] {
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config_with(data.path(), Some(&partner.base));
        let ca_path = write(dir.path(), &format!("roots-{delivered}.pem"), &roots);
        for p in config.partners.iter_mut() {
            p.ca_file = Some(ca_path.clone());
        }
        let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
        app.register_tenant().await;
        let consent = json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic"], "valid_until": "2027-05-31", "signed_at": "2026-11-23T09:00:00Z"});
        assert_eq!(
            app.post_json("/housing/consents", HOUSING, &consent)
                .await
                .status,
            201
        );
        let sent = app
            .post_json("/housing/notes", HOUSING, &json!({"tenant_id": "T-1001", "to": "riverside-clinic", "reason": "Checking in after discharge"}))
            .await;
        let reference = sent.body["reference_id"].as_str().unwrap().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let t = app
                .get(&format!("/housing/notes/{reference}"), HOUSING)
                .await
                .body;
            let attempts = t["delivery"]["attempts"].as_u64().unwrap();
            if delivered && t["delivery"]["state"] == "delivered" {
                break;
            }
            if !delivered && attempts >= 1 {
                assert_eq!(t["delivery"]["state"], "pending", "{t}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        partner.bundles().len(),
        1,
        "only the client that trusts the partner's CA delivered"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_certificate_comes_from_its_header_and_only_from_it() {
    hearth::tls::install_crypto_provider();
    let pin = "ab".repeat(32);
    for (proxy_address, believed) in [("127.0.0.1", true), ("10.9.8.7", false)] {
        let data = tempfile::tempdir().unwrap();
        let mut config = test_config(data.path());
        config.proxy = Some(hearth::config::Proxy {
            address: proxy_address.parse().unwrap(),
            client_cert_header: Some("x-client-cert-sha256".into()),
        });
        let clinic = config
            .partners
            .iter_mut()
            .find(|p| p.id.as_str() == "riverside-clinic")
            .unwrap();
        clinic.client_cert_sha256 = Some(pin.clone());
        let app = spawn_configured(data, config, reqwest::Client::new(), "http").await;
        let call = |header: Option<&str>| {
            let mut r = app
                .client
                .get(format!("{}/housing/updates", app.base))
                .bearer_auth(CLINIC);
            if let Some(h) = header {
                r = r.header("x-client-cert-sha256", h);
            }
            r.send()
        };
        // The clinic may not read the feed (403 for its role) — but only once its
        // certificate is accepted; without it, the refusal is about mutual TLS.
        let with_pin = call(Some(&pin)).await.unwrap().text().await.unwrap();
        let without = call(None).await.unwrap().text().await.unwrap();
        let wrong = call(Some(&"cd".repeat(32)))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !believed {
            // Not the proxy: plain HTTP from it is refused outright, header or not, and
            // only the public routes answer.
            for answer in [&with_pin, &without, &wrong] {
                assert!(
                    answer.contains("only from the configured proxy"),
                    "{answer}"
                );
            }
            let health = app
                .client
                .get(format!("{}/healthz", app.base))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 200);
            continue;
        }
        assert!(without.contains("client certificate"), "{without}");
        assert!(wrong.contains("client certificate"), "{wrong}");
        assert!(!with_pin.contains("client certificate"), "{with_pin}");
    }
}

#[test]
fn a_certificate_that_cannot_be_read_stops_start_up_before_the_store_is_opened() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, _, _) = pki.leaf(&["localhost"]);
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.tls = Some(hearth::config::Tls {
        cert: write(dir.path(), "server.pem", &server_cert),
        // A certificate where the key should be.
        key: write(dir.path(), "server.key", &server_cert),
        client_ca: None,
        handshake_timeout_ms: 10_000,
        accept_error_pause_ms: 100,
    });
    let clock = std::sync::Arc::new(hearth::clock::SystemClock);
    let Err(error) = hearth::startup::build(config, clock) else {
        panic!("a server with an unreadable key started");
    };
    assert!(format!("{error:#}").contains("server.key"), "{error:#}");
    assert!(
        !data.path().join(hearth::store::sqlite::DB_FILE).exists(),
        "the store was opened (and left unclosed) before the certificate was read"
    );
}
