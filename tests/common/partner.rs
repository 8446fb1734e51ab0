//! A partner's FHIR server, started by the test, that can be told to fail, stall, or
//! come back. It honours `ifNoneExist`, as the partners Hearth expects do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Answers 503 without storing anything.
    Down,
    /// Stores the Bundle but answers 503: the answer is lost, the retry must not duplicate.
    LoseAnswer,
    /// Never answers within any sensible timeout.
    Stall,
    /// Refuses with this status.
    Refuse(u16),
    /// Answers 302 to `/fhir/moved`, where a GET answers 200 (a misconfigured proxy).
    Redirect,
    /// Plain POSTs: creates everything but a Task, which it refuses with this status.
    RefuseTask(u16),
    /// Plain POSTs: creates everything but a Task, to which it never answers.
    StallTask,
}

#[derive(Default)]
struct Inner {
    mode: Option<Mode>,
    attempts: usize,
    /// Resources created, by their identifier (`system|value`).
    created: HashMap<String, Value>,
    bundles: Vec<Value>,
    headers: Vec<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct Partner {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Partner {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A partner serving HTTPS with the given server config.
    pub async fn start_with(tls: Option<rustls::ServerConfig>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            mode: Some(Mode::Up),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/fhir", post(receive))
            .route("/fhir/{resource_type}", post(create))
            .route(
                "/fhir/moved",
                get(|| async { Json(json!({"resourceType": "Bundle"})) }),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        match tls {
            Some(config) => {
                tokio::spawn(hearth::tls::serve(
                    listener,
                    app,
                    Some(config),
                    hearth::tls::Timeouts {
                        handshake: Duration::from_secs(10),
                        accept_error_pause: Duration::from_millis(100),
                        header_read: Duration::from_secs(30),
                    },
                    std::future::pending(),
                ));
            }
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            }
        }
        Self {
            base: format!("{scheme}://{addr}/fhir"),
            inner,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    pub fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts
    }

    /// Resources created, keyed by identifier.
    pub fn created(&self) -> HashMap<String, Value> {
        self.inner.lock().unwrap().created.clone()
    }

    pub fn bundles(&self) -> Vec<Value> {
        self.inner.lock().unwrap().bundles.clone()
    }

    pub fn last_headers(&self) -> HashMap<String, String> {
        self.inner
            .lock()
            .unwrap()
            .headers
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// A plain create (for a partner configured without transaction support), conditional
/// on `If-None-Exist` like a real server. Like a strict one, it refuses a reference it
/// cannot resolve: a Bundle-local `urn:uuid:` means nothing outside its Bundle.
async fn create(
    State(inner): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(resource_type): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    Json(resource): Json<Value>,
) -> Response {
    let mode = {
        let mut i = inner.lock().unwrap();
        i.attempts += 1;
        i.mode
    };
    match mode {
        Some(Mode::RefuseTask(s)) if resource_type == "Task" => {
            return (
                StatusCode::from_u16(s).unwrap(),
                Json(json!({"resourceType": "OperationOutcome"})),
            )
                .into_response();
        }
        Some(Mode::StallTask) if resource_type == "Task" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({}))).into_response();
        }
        _ => {}
    }
    let mut i = inner.lock().unwrap();
    if resource.to_string().contains("\"urn:uuid:") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found", "diagnostics": "unresolvable reference"}]})),
        )
            .into_response();
    }
    let key = headers
        .get("if-none-exist")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start_matches("identifier=")
        .to_string();
    let status = match i.created.entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => StatusCode::OK,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(resource);
            StatusCode::CREATED
        }
    };
    (status, Json(json!({"resourceType": "OperationOutcome"}))).into_response()
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: axum::http::HeaderMap,
    Json(bundle): Json<Value>,
) -> Response {
    let mode = {
        let mut i = inner.lock().unwrap();
        i.attempts += 1;
        i.headers.push(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
        );
        i.mode.unwrap_or(Mode::Up)
    };
    match mode {
        Mode::Down => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"resourceType": "OperationOutcome"})),
            )
                .into_response();
        }
        Mode::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({}))).into_response();
        }
        Mode::Refuse(s) => {
            return (
                StatusCode::from_u16(s).unwrap(),
                Json(json!({"resourceType": "OperationOutcome"})),
            )
                .into_response();
        }
        Mode::Redirect => {
            return (StatusCode::FOUND, [(header::LOCATION, "/fhir/moved")]).into_response();
        }
        Mode::Up | Mode::LoseAnswer | Mode::RefuseTask(_) | Mode::StallTask => {}
    }
    let mut i = inner.lock().unwrap();
    let mut responses = Vec::new();
    for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
        let key = entry["request"]["ifNoneExist"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("identifier=")
            .to_string();
        let status = match i.created.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => "200 OK",
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(entry["resource"].clone());
                "201 Created"
            }
        };
        responses.push(json!({"response": {"status": status}}));
    }
    i.bundles.push(bundle);
    if mode == Mode::LoseAnswer {
        i.mode = Some(Mode::Up);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({}))).into_response();
    }
    (
        StatusCode::OK,
        Json(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": responses})),
    )
        .into_response()
}
