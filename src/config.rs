//! Configuration: one TOML file, read once, unknown keys rejected. Command-line flags
//! and `HEARTH_*` environment variables override the listen address and data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::auth::{self, Principal, Principals, Role};
use crate::ids::PartnerId;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A trusted reverse proxy terminates TLS in front of Hearth: plain HTTP is then
    /// allowed off loopback, and the client-certificate identity comes from the proxy's
    /// header — believed only on connections from the proxy's address.
    #[serde(default)]
    pub proxy: Option<Proxy>,
    /// The address clients reach Hearth's FHIR API at (`https://hearth.example.org/fhir`),
    /// when it is not what they send in `Host` (a proxy that rewrites it, a path prefix).
    /// Bundle `fullUrl`s and links are absolute under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// Where the store file lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Mapping files (see mappings/README.md).
    #[serde(default = "default_mappings_dir")]
    pub mappings_dir: PathBuf,
    /// JSON Schema profiles.
    #[serde(default = "default_profiles_dir")]
    pub profiles_dir: PathBuf,
    /// Largest request body accepted, in bytes (larger: 413).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// A connection that has not sent a request's headers by then is closed, so a client
    /// trickling bytes cannot hold connections, or shutdown, open.
    #[serde(default = "default_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A request whose body has not arrived by then (after its headers) is answered 408.
    #[serde(default = "default_read_timeout")]
    pub body_read_timeout_ms: u64,
    /// Refusals of requests without credentials itemised in the audit per client address
    /// and minute; the rest are counted into one summary record (see `http::refusals`).
    #[serde(default = "default_unauthenticated_audit")]
    pub unauthenticated_audit_per_minute: u32,
    pub tenancy: Tenancy,
    #[serde(default)]
    pub feed: Feed,
    #[serde(default)]
    pub consent: ConsentPolicy,
    #[serde(default)]
    pub relay: Relay,
    /// HTTPS: without it Hearth serves plain HTTP, on loopback only (unless
    /// `[proxy]`).
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Routing rules: notices from one partner forwarded, minimised, to another.
    #[serde(default)]
    pub forward: Vec<ForwardRule>,
    #[serde(default)]
    pub partners: Vec<PartnerConfig>,
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tenancy {
    /// The identifier system of the housing provider's tenant IDs.
    pub identifier_system: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Entries per page when `limit` is not given.
    #[serde(default = "default_page")]
    pub default_page: usize,
    /// Largest page a caller may ask for.
    #[serde(default = "default_max_page")]
    pub max_page: usize,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            default_page: default_page(),
            max_page: default_max_page(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentPolicy {
    /// Whether exchanges continue while a tenant's consent is marked renewal-due (after
    /// a hospitalisation, a change of provider or a tenant request). Default: yes, until
    /// the consent expires.
    #[serde(default = "yes")]
    pub share_while_renewal_due: bool,
    /// How many days before a tenant's consent ends it is listed as due for renewal
    /// (`GET /housing/consents/due`, reason `expiring`); 0 lists only expired ones.
    #[serde(default = "thirty")]
    pub expiry_notice_days: u32,
}

fn thirty() -> u32 {
    30
}

impl Default for ConsentPolicy {
    fn default() -> Self {
        Self {
            share_while_renewal_due: true,
            expiry_notice_days: thirty(),
        }
    }
}

fn yes() -> bool {
    true
}

/// What kind of organisation a partner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartnerKind {
    Clinic,
    Mco,
    Housing,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// Short stable id, used in consents as `Organization/<id>`.
    pub id: PartnerId,
    pub name: String,
    pub kind: PartnerKind,
    /// The identifier system this partner uses for tenants (MRN, member ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier_system: Option<String>,
    /// Where notes to this partner are delivered (its FHIR base URL). Without it, notes
    /// to this partner are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_base_url: Option<String>,
    /// Bearer token Hearth presents to the partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Whether the partner's FHIR server honours `ifNoneExist` in a transaction Bundle.
    /// If not, each resource is POSTed on its own with its identifier.
    #[serde(default = "yes")]
    pub supports_transactions: bool,
    /// Mutual TLS: requests by this partner's principals must come over a connection
    /// presenting the client certificate with this SHA-256 (hex, of the DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_sha256: Option<String>,
    /// Roots that verify this partner's server certificate (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate and key Hearth presents to this partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<PathBuf>,
    /// Deliveries in flight to this partner at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
}

fn default_in_flight() -> usize {
    4
}

/// A secret from the config: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// The proxy's address as Hearth sees it.
    pub address: std::net::IpAddr,
    /// Header in which the proxy passes the SHA-256 (hex) of the client certificate it
    /// verified, e.g. `x-client-cert-sha256`.
    #[serde(default)]
    pub client_cert_header: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain and private key Hearth serves.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Roots for partners' client certificates (mutual TLS). Partners pin theirs with
    /// `client_cert_sha256`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// A client that has not finished the TLS handshake by then is dropped, so idle
    /// connections cannot pile up.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// Pause after a failed `accept` (out of file descriptors, say) before the next, so
    /// the server does not spin while connections in flight close.
    #[serde(default = "default_accept_error_pause")]
    pub accept_error_pause_ms: u64,
}

/// Used for plain HTTP too, where there is no `[tls]` to set it.
pub const DEFAULT_ACCEPT_ERROR_PAUSE_MS: u64 = 100;
pub const DEFAULT_HANDSHAKE_MS: u64 = 10_000;

fn default_accept_error_pause() -> u64 {
    DEFAULT_ACCEPT_ERROR_PAUSE_MS
}

fn default_handshake_timeout() -> u64 {
    DEFAULT_HANDSHAKE_MS
}

fn default_read_timeout() -> u64 {
    30_000
}

fn default_unauthenticated_audit() -> u32 {
    60
}

/// Forward dataset items received from `from` to `to` (e.g. a clinic's discharge notices
/// to the MCO care manager), when the tenant's consent covers both.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    pub from: PartnerId,
    pub to: PartnerId,
    /// Item kinds to forward (`discharge`, `medication_change`, …); empty means all.
    #[serde(default)]
    pub items: Vec<String>,
}

/// Outbound delivery: how often the relay looks for due work, backoff and deadlines.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// How often the relay checks for deliveries that are due.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// First retry delay; doubles per attempt (with ±25% jitter) up to `max_backoff_secs`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_secs: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u64,
    /// A note not delivered this long after it was queued is dead-lettered.
    #[serde(default = "default_dead_letter")]
    pub dead_letter_after_secs: u64,
    /// Each HTTP request of a delivery attempt may take this long (an attempt that sends
    /// a batch's entries one by one makes one request per entry).
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_ms: u64,
}

impl Relay {
    /// When a note queued (or replayed) at `from_ms` is dead-lettered if undelivered.
    pub fn give_up_ms(&self, from_ms: i64) -> i64 {
        from_ms.saturating_add((self.dead_letter_after_secs as i64).saturating_mul(1000))
    }
}

impl Default for Relay {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_poll_ms(),
            initial_backoff_secs: default_initial_backoff(),
            max_backoff_secs: default_max_backoff(),
            dead_letter_after_secs: default_dead_letter(),
            attempt_timeout_ms: default_attempt_timeout(),
        }
    }
}

fn default_poll_ms() -> u64 {
    1000
}
fn default_initial_backoff() -> u64 {
    5
}
fn default_max_backoff() -> u64 {
    600
}
fn default_dead_letter() -> u64 {
    48 * 3600
}
fn default_attempt_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub id: String,
    /// The partner id of the principal's organisation.
    pub org: PartnerId,
    pub role: Role,
    /// SHA-256 (hex) of the bearer token.
    pub token_sha256: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
/// Where the store lives when neither the config nor the command line says.
pub const DEFAULT_DATA_DIR: &str = "hearth-data";

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_mappings_dir() -> PathBuf {
    PathBuf::from("mappings")
}
fn default_profiles_dir() -> PathBuf {
    PathBuf::from("profiles")
}
fn default_body_limit() -> usize {
    1024 * 1024
}
fn default_page() -> usize {
    100
}
/// The largest feed page an operator may allow.
const MAX_FEED_PAGE: usize = 10_000;

fn default_max_page() -> usize {
    1000
}

/// Whether no two of `items` are equal.
fn all_different<T: Ord>(mut items: impl Iterator<Item = T>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    items.all(|i| seen.insert(i))
}

/// Notes carry health information and the partner's bearer token: HTTPS, except to a
/// partner on this machine (a local proxy or a test server).
fn check_partner_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url)?;
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        "http" => anyhow::bail!("{url} is plain HTTP off this machine; use https"),
        other => anyhow::bail!("{url}: scheme {other} is not http(s)"),
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    fn check(&self) -> anyhow::Result<()> {
        for p in &self.principals {
            anyhow::ensure!(
                self.partners.iter().any(|o| o.id == p.org),
                "principal `{}` belongs to `{}`, which is not a configured partner",
                p.id,
                p.org
            );
            anyhow::ensure!(
                p.token_sha256.len() == 64 && p.token_sha256.chars().all(|c| c.is_ascii_hexdigit()),
                "principal `{}`: token_sha256 must be 64 hex digits",
                p.id
            );
        }
        for f in &self.forward {
            anyhow::ensure!(
                self.partner(&f.from).is_some(),
                "forward: `{}` is not a configured partner",
                f.from
            );
            let to = self.partner(&f.to);
            anyhow::ensure!(
                to.is_some_and(|p| p.fhir_base_url.is_some()),
                "forward: `{}` needs a configured partner with fhir_base_url",
                f.to
            );
            for kind in &f.items {
                anyhow::ensure!(
                    crate::dataset::ItemKind::parse(kind).is_some(),
                    "forward: `{kind}` is not a dataset item kind"
                );
            }
            anyhow::ensure!(
                f.from != f.to,
                "forward: `{}` to itself would echo every notice back to its sender",
                f.from
            );
        }
        anyhow::ensure!(
            all_different(self.partners.iter().map(|p| &p.id)),
            "partner ids must be unique"
        );
        // Tenants, the feed and consents are not divided by housing organisation: a
        // second provider would read the first one's tenants. One Hearth per provider.
        let housing: Vec<&PartnerId> = self
            .partners
            .iter()
            .filter(|p| p.kind == PartnerKind::Housing)
            .map(|p| &p.id)
            .collect();
        anyhow::ensure!(
            housing.len() <= 1,
            "one housing provider per Hearth (found {}): tenants, the feed and consents are not divided between providers; run a Hearth for each",
            housing.len()
        );
        for p in &self.principals {
            anyhow::ensure!(
                p.role != Role::Housing || housing.contains(&&p.org),
                "principal `{}` has the housing role but belongs to `{}`, which is not the housing provider",
                p.id,
                p.org
            );
        }
        anyhow::ensure!(
            self.feed.default_page >= 1 && self.feed.default_page <= self.feed.max_page,
            "feed.default_page must be between 1 and feed.max_page"
        );
        // A page is built in memory; items are a few KB each.
        anyhow::ensure!(
            self.feed.max_page <= MAX_FEED_PAGE,
            "feed.max_page must be at most {MAX_FEED_PAGE}"
        );
        anyhow::ensure!(
            self.unauthenticated_audit_per_minute >= 1,
            "unauthenticated_audit_per_minute must be at least 1"
        );
        anyhow::ensure!(
            (100..=600_000).contains(&self.header_read_timeout_ms)
                && (100..=600_000).contains(&self.body_read_timeout_ms),
            "header_read_timeout_ms and body_read_timeout_ms must be between 100 and 600000"
        );
        // Below a kilobyte no FHIR resource fits, and every write would be a 413.
        anyhow::ensure!(
            self.body_limit_bytes >= 1024,
            "body_limit_bytes must be at least 1024"
        );
        // A name HTTP cannot carry is never found, and every pinned partner refused with
        // a misleading "present your certificate".
        if let Some(header) = self
            .proxy
            .as_ref()
            .and_then(|p| p.client_cert_header.as_deref())
        {
            anyhow::ensure!(
                axum::http::HeaderName::from_bytes(header.as_bytes()).is_ok(),
                "[proxy] client_cert_header `{header}` is not an HTTP header name"
            );
        }
        // Two principals with one token: the last would silently win, authenticating as
        // another organisation or role.
        anyhow::ensure!(
            all_different(
                self.principals
                    .iter()
                    .map(|p| p.token_sha256.to_ascii_lowercase())
            ),
            "principals' token_sha256 must be unique"
        );
        anyhow::ensure!(
            all_different(self.principals.iter().map(|p| &p.id)),
            "principal ids must be unique"
        );
        let r = &self.relay;
        anyhow::ensure!(
            r.poll_interval_ms >= 1 && r.attempt_timeout_ms >= 1 && r.initial_backoff_secs >= 1,
            "relay.poll_interval_ms, attempt_timeout_ms and initial_backoff_secs must be at least 1"
        );
        // The first delay is capped by the maximum, so a maximum below it is not an error.
        anyhow::ensure!(
            r.max_backoff_secs >= 1 && r.max_backoff_secs <= 7 * 24 * 3600,
            "relay.max_backoff_secs must be between 1 second and a week"
        );
        // Zero dead-letters a note at its first failure; a huge value overflows the
        // deadline's arithmetic into the past, which does the same.
        anyhow::ensure!(
            r.dead_letter_after_secs >= 60 && r.dead_letter_after_secs <= 90 * 24 * 3600,
            "relay.dead_letter_after_secs must be between a minute and 90 days"
        );
        // Consents run for months to a few years; a notice beyond that is a typo.
        anyhow::ensure!(
            self.consent.expiry_notice_days <= 3650,
            "consent.expiry_notice_days must be at most 3650 (ten years)"
        );
        // Hearth terminating TLS itself sees the client certificate first-hand; a proxy's
        // certificate header would replace it, and every pinned partner be refused.
        anyhow::ensure!(
            self.tls.is_none()
                || self
                    .proxy
                    .as_ref()
                    .is_none_or(|p| p.client_cert_header.is_none()),
            "[tls] and [proxy] client_cert_header cannot both be set: with [tls], Hearth reads the client certificate itself"
        );
        if let Some(tls) = &self.tls {
            anyhow::ensure!(
                tls.handshake_timeout_ms >= 100 && tls.accept_error_pause_ms >= 1,
                "tls.handshake_timeout_ms must be at least 100 and accept_error_pause_ms at least 1"
            );
        }
        if let Some(url) = &self.public_base_url {
            let parsed = reqwest::Url::parse(url).context("public_base_url")?;
            // Exactly as written (it is copied into every Bundle): no stray spaces the
            // parser would forgive, and no credentials to hand out.
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https")
                    && parsed.query().is_none()
                    && parsed.fragment().is_none()
                    && parsed.username().is_empty()
                    && parsed.password().is_none()
                    && !url.contains(char::is_whitespace),
                "public_base_url {url} must be an http(s) address without credentials, query or fragment"
            );
        }
        for p in &self.partners {
            if let Some(url) = &p.fhir_base_url {
                check_partner_url(url)
                    .with_context(|| format!("partner `{}`: fhir_base_url", p.id))?;
            }
            anyhow::ensure!(
                p.max_in_flight >= 1,
                "partner `{}`: max_in_flight must be at least 1, or no note is ever sent",
                p.id
            );
            if let Some(pin) = &p.client_cert_sha256 {
                anyhow::ensure!(
                    pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()),
                    "partner `{}`: client_cert_sha256 must be 64 hex digits",
                    p.id
                );
                // Without either, no request could ever present the certificate, and
                // every one of this partner's requests would be refused.
                let certificates_seen = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
                    || self
                        .proxy
                        .as_ref()
                        .is_some_and(|p| p.client_cert_header.is_some());
                anyhow::ensure!(
                    certificates_seen,
                    "partner `{}` pins a client certificate, but Hearth sees none: set [tls] client_ca, or [proxy] client_cert_header behind a proxy that verifies them",
                    p.id
                );
            }
        }
        Ok(())
    }

    pub fn principals(&self) -> Principals {
        Principals::new(self.principals.iter().map(|p| {
            (
                p.token_sha256.clone(),
                Principal {
                    id: p.id.clone(),
                    org: p.org.clone(),
                    role: p.role,
                },
            )
        }))
    }

    pub fn partner(&self, id: &PartnerId) -> Option<&PartnerConfig> {
        self.partners.iter().find(|p| &p.id == id)
    }

    /// The housing provider this Hearth serves ([`Config::check`] allows at most one).
    pub fn housing(&self) -> Option<&PartnerConfig> {
        self.partners
            .iter()
            .find(|p| p.kind == PartnerKind::Housing)
    }
}

/// A sample principal with its freshly generated token (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct IssuedCredential {
    pub id: String,
    pub org: String,
    pub role: Role,
    pub token: String,
}

/// Writes a commented sample config to `path` with fresh credentials for a clinic, an
/// MCO, a housing worker and an auditor; returns the credentials.
pub fn write_sample(
    path: &Path,
    data_dir: &Path,
    mappings_dir: &Path,
    profiles_dir: &Path,
) -> anyhow::Result<Vec<IssuedCredential>> {
    anyhow::ensure!(
        !path.exists(),
        "{} already exists; not overwriting it",
        path.display()
    );
    let creds: Vec<IssuedCredential> = [
        ("riverside-ehr", "riverside-clinic", Role::Clinic),
        ("bayview-care", "bayview-health-plan", Role::Mco),
        ("housing-worker", "northside-housing", Role::Housing),
        ("auditor", "northside-housing", Role::Auditor),
    ]
    .into_iter()
    .map(|(id, org, role)| IssuedCredential {
        id: id.into(),
        org: org.into(),
        role,
        token: auth::generate_token(),
    })
    .collect();
    let toml_str = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let mut text = format!(
        r#"# Hearth configuration. Relative paths are relative to the directory Hearth starts in.
# Reference: README.md, "Configuration".

# Address to listen on. Plain HTTP is meant for loopback only.
listen = "127.0.0.1:8080"
# The store (one SQLite file, hearth.db) lives here.
data_dir = {data_dir}
# Mapping files and JSON Schema profiles, read once at start-up.
mappings_dir = {mappings}
profiles_dir = {profiles}
# Largest request body, in bytes.
body_limit_bytes = 1048576

[tenancy]
# The identifier system of the housing provider's own tenant IDs.
identifier_system = "https://housing.example.org/tenant-id"

[feed]
default_page = 100
max_page = 1000

[relay]
# Outbound delivery: retries back off from initial_backoff_secs, doubling, up to
# max_backoff_secs; a note not delivered within dead_letter_after_secs is dead-lettered.
poll_interval_ms = 1000
initial_backoff_secs = 5
max_backoff_secs = 600
dead_letter_after_secs = 172800
attempt_timeout_ms = 10000

[consent]
# Keep sharing while a consent is marked renewal-due (after a hospitalisation, a change
# of provider or a tenant request)? Sharing always stops when a consent expires.
share_while_renewal_due = true
# List a consent as due for renewal this many days before it ends (0: once it has ended).
expiry_notice_days = 30

# Partner organisations. `id` is how consents name them (Organization/<id>);
# `identifier_system` is how that partner identifies tenants.
[[partners]]
id = "riverside-clinic"
name = "Riverside Community Clinic"
kind = "clinic"
identifier_system = "https://riverside-clinic.example/fhir/mrn"
# Where care coordination notes to this partner are delivered (the README's demo partner).
fhir_base_url = "http://127.0.0.1:9090/fhir"

[[partners]]
id = "bayview-health-plan"
name = "Bayview Health Plan"
kind = "mco"
identifier_system = "https://bayview-health-plan.example/member-id"

[[partners]]
id = "northside-housing"
name = "Northside Housing Association"
kind = "housing"

# Callers. Only the SHA-256 of each bearer token is kept here; the tokens were shown
# once when this file was written. Roles: clinic, mco, housing, review-member, auditor, admin.
"#,
        data_dir = toml_str(data_dir),
        mappings = toml_str(mappings_dir),
        profiles = toml_str(profiles_dir),
    );
    for c in &creds {
        text.push_str(&format!(
            "\n[[principals]]\nid = \"{}\"\norg = \"{}\"\nrole = \"{}\"\ntoken_sha256 = \"{}\"\n",
            c.id,
            c.org,
            c.role.as_str(),
            auth::hash_token(&c.token)
        ));
    }
    Config::from_toml(&text).context("the sample config does not parse; this is a bug")?;
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    // Readable by its owner only: it names the partners' endpoints, and operators put
    // partner bearer tokens in it. `create_new`: two first starts at once must not both
    // print credentials of which only the last would work.
    let mut file =
        create_private_file(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(creds)
}

/// Creates the new file `path` (never over an existing one), readable by its owner only.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `dir` (and its parents) readable by its owner only when it does not exist:
/// it holds the store, health data about tenants. An existing directory is left as the
/// operator set it up.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_round_trips_and_keeps_only_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        let creds = write_sample(
            &path,
            &dir.path().join("data"),
            Path::new("mappings"),
            Path::new("profiles"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for c in &creds {
            assert!(!text.contains(&c.token));
        }
        let config = Config::load(&path).unwrap();
        let p = config.principals();
        assert_eq!(p.authenticate(&creds[0].token).unwrap().role, Role::Clinic);
        assert!(write_sample(&path, dir.path(), Path::new("m"), Path::new("p")).is_err());
    }

    /// Settings that would silently misroute or stall are refused at start-up.
    #[test]
    fn dangerous_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.toml");
        write_sample(&path, dir.path(), Path::new("m"), Path::new("p")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(Config::from_toml(&text).is_ok());
        let refused = |changed: String, why: &str| {
            let err = Config::from_toml(&changed).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#}");
        };
        // One token for two principals: the second would sign in as the first.
        let hashes: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("token_sha256 = "))
            .collect();
        assert!(hashes.len() >= 2);
        refused(
            text.replacen(hashes[1], hashes[0], 1),
            "token_sha256 must be unique",
        );
        refused(
            text.replace("initial_backoff_secs = 5", "initial_backoff_secs = 0"),
            "at least 1",
        );
        refused(
            text.replace("max_backoff_secs = 600", "max_backoff_secs = 99999999999"),
            "max_backoff_secs",
        );
        for (from, to) in [("172800", "0"), ("172800", "99999999999999999")] {
            refused(
                text.replace(
                    &format!("dead_letter_after_secs = {from}"),
                    &format!("dead_letter_after_secs = {to}"),
                ),
                "dead_letter_after_secs",
            );
        }
        refused(
            format!(
                "{text}\n[[forward]]\nfrom = \"riverside-clinic\"\nto = \"riverside-clinic\"\n"
            ),
            "to itself",
        );
        refused(
            text.replace("max_page = 1000", "max_page = 100000000"),
            "feed.max_page",
        );
        refused(
            text.replace("body_limit_bytes = 1048576", "body_limit_bytes = 0"),
            "body_limit_bytes",
        );
        refused(
            format!(
                "{text}\n[proxy]\naddress = \"127.0.0.1\"\nclient_cert_header = \"x client cert\"\n"
            ),
            "not an HTTP header name",
        );
        // A notice period past the calendar would put "due since" before year 0.
        refused(
            text.replace("expiry_notice_days = 30", "expiry_notice_days = 4000000"),
            "expiry_notice_days",
        );
        // A pinned certificate that no request can present would refuse the partner.
        let pinned = text.replacen(
            "kind = \"clinic\"",
            &format!(
                "kind = \"clinic\"\nclient_cert_sha256 = \"{}\"",
                "ab".repeat(32)
            ),
            1,
        );
        refused(pinned.clone(), "sees none");
        assert!(
            Config::from_toml(&format!(
                "{pinned}\n[proxy]\naddress = \"127.0.0.1\"\nclient_cert_header = \"x-client-cert\"\n"
            ))
            .is_ok()
        );
        // A second housing provider would read the first one's tenants.
        refused(
            format!(
                "{text}\n[[partners]]\nid = \"southside-housing\"\nname = \"Southside\"\nkind = \"housing\"\n"
            ),
            "one housing provider",
        );
        refused(
            text.replacen(
                "org = \"northside-housing\"",
                "org = \"riverside-clinic\"",
                1,
            ),
            "not the housing provider",
        );
        refused(
            format!(
                "{text}\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[proxy]\naddress = \"127.0.0.1\"\nclient_cert_header = \"x-client-cert\"\n"
            ),
            "cannot both be set",
        );
        // Notes in plain HTTP across the network; on this machine it is allowed.
        refused(
            text.replace("http://127.0.0.1:9090/fhir", "http://mco.example:9090/fhir"),
            "plain HTTP",
        );
        for fine in [
            "https://mco.example/fhir",
            "http://localhost:9/fhir",
            "http://[::1]:9/fhir",
        ] {
            assert!(check_partner_url(fine).is_ok(), "{fine}");
        }
    }

    /// The config and a directory it creates are its owner's alone, and a second first
    /// start does not overwrite the first one's credentials.
    #[cfg(unix)]
    #[test]
    fn the_sample_config_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("hearth-data");
        let path = data.join("hearth.toml");
        write_sample(&path, &data, Path::new("m"), Path::new("p")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&data), 0o700);
        let before = std::fs::read_to_string(&path).unwrap();
        assert!(write_sample(&path, &data, Path::new("m"), Path::new("p")).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn the_public_base_url_is_an_http_address() {
        let with = |url: &str| {
            Config::from_toml(&format!(
                "public_base_url = \"{url}\"\n[tenancy]\nidentifier_system = \"x\"\n"
            ))
        };
        assert!(with("https://hearth.example.org/fhir").is_ok());
        for bad in [
            "hearth.example.org/fhir",
            "ftp://h/fhir",
            "https://h/fhir?x=1",
            "https://user:pw@h/fhir",
            " https://h/fhir",
        ] {
            let err = with(bad).unwrap_err();
            assert!(
                format!("{err:#}").contains("public_base_url"),
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err =
            Config::from_toml("lisen = \"127.0.0.1:1\"\n[tenancy]\nidentifier_system = \"x\"\n")
                .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"));
    }
}
