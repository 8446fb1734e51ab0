//! A stand-in for a clinic's FHIR server, for the README walk-through: it accepts the
//! transaction Bundles Hearth delivers on 127.0.0.1:9090/fhir, honours `ifNoneExist`,
//! and prints what arrived.
//!
//! cargo run --example demo_partner

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = Router::new().route("/fhir", post(receive)).with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
    println!("demo partner listening on http://127.0.0.1:9090/fhir");
    axum::serve(listener, app).await
}

async fn receive(
    State(seen): State<Arc<Mutex<HashSet<String>>>>,
    Json(bundle): Json<Value>,
) -> Json<Value> {
    let mut responses = Vec::new();
    for entry in bundle["entry"].as_array().cloned().unwrap_or_default() {
        let key = entry["request"]["ifNoneExist"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let new = seen.lock().expect("lock").insert(key);
        let r = &entry["resource"];
        println!(
            "{} {} {}",
            if new { "created" } else { "already had" },
            r["resourceType"].as_str().unwrap_or("?"),
            r["identifier"][0]["value"].as_str().unwrap_or("?")
        );
        for line in r["payload"].as_array().into_iter().flatten() {
            println!("    {}", line["contentString"].as_str().unwrap_or_default());
        }
        responses.push(json!({"response": {"status": if new { "201 Created" } else { "200 OK" }}}));
    }
    Json(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": responses}))
}
