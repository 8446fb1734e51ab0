//! `docs/openapi.json`, served at `GET /openapi.json`, against the live router: every
//! documented operation is served, known-unserved routes are not documented (and not
//! served), the FHIR part agrees with the CapabilityStatement, and real answers match the
//! documented statuses, headers and schemas.

mod common;

use common::*;
use serde_json::{Value, json};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Paths anyone may call without credentials (`http::is_public`).
const PUBLIC: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/fhir/metadata",
];

/// Routes the router does not serve; none may appear in the document.
const UNSERVED: [(&str, &str); 14] = [
    ("delete", "/fhir/Communication"),
    ("get", "/fhir/Communication"),
    ("put", "/fhir/Communication/{id}"),
    ("delete", "/fhir/Consent/{id}"),
    ("get", "/fhir/Communication/{id}/_history"),
    ("get", "/fhir/Patient/{id}"),
    ("post", "/fhir/Patient"),
    ("get", "/housing/tenants"),
    ("delete", "/housing/tenants/{id}"),
    ("get", "/housing/consents/{id}"),
    ("get", "/housing/reviews"),
    ("put", "/housing/reviews/{id}"),
    ("post", "/audit/records"),
    ("post", "/healthz"),
];

/// GET /openapi.json without credentials: JSON, OpenAPI 3.1.x.
async fn fetch_doc(app: &TestApp) -> Value {
    let r = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-reference-id"));
    let text = r.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("/openapi.json is JSON");
    let version = doc["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1.x, not {version}");
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    doc
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("a local $ref"))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

/// Every (method, path template, operation) in the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn is_public(op: &Value) -> bool {
    op.get("security")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
}

/// A test token of a role the operation serves (`x-hearth-roles`); `None` for a public one.
fn token_for(path: &str, op: &Value) -> Option<&'static str> {
    if is_public(op) {
        return None;
    }
    let roles = op["x-hearth-roles"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no x-hearth-roles"));
    let token = roles.iter().find_map(|r| match r.as_str()? {
        "clinic" => Some(CLINIC),
        "mco" => Some(MCO),
        "housing" => Some(HOUSING),
        "review-member" => Some(HOUSING_REVIEW),
        "auditor" => Some(AUDITOR),
        _ => None,
    });
    Some(token.unwrap_or_else(|| panic!("{path}: no test token for roles {roles:?}")))
}

/// The template with its path parameters filled in (the parameter's example, or a dummy),
/// and the required query parameters.
fn concrete(doc: &Value, template: &str, op: &Value) -> (String, Vec<(String, String)>) {
    let mut path = template.to_string();
    let mut query = Vec::new();
    let params = doc["paths"][template]["parameters"]
        .as_array()
        .into_iter()
        .chain(op["parameters"].as_array())
        .flatten()
        .map(|p| resolve(doc, p));
    for p in params {
        let name = p["name"].as_str().unwrap();
        let example = p["example"].as_str().unwrap_or("dummy-1").to_string();
        match p["in"].as_str().unwrap() {
            "path" => path = path.replace(&format!("{{{name}}}"), &example),
            "query" if p["required"] == true => query.push((name.to_string(), example)),
            _ => {}
        }
    }
    assert!(!path.contains('{'), "{template}: undeclared path parameter");
    (path, query)
}

/// Any method, any credentials, an optional body with its content type.
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    query: &[(String, String)],
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> Answer {
    let mut url = reqwest::Url::parse(&format!("{}{path}", app.base)).unwrap();
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    let mut req = app.client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((content_type, body)) = body {
        req = req.header("content-type", content_type).body(body);
    }
    answer(req.send().await.expect("request")).await
}

/// The router's own 404s: no route (`fallback`) or an unserved FHIR type (`unsupported`).
fn is_router_fallback(a: &Answer) -> bool {
    a.status == 404
        && a.issues("error").iter().any(|i| {
            let d = i["diagnostics"].as_str().unwrap_or_default();
            d.contains("there is nothing at this path") || d.contains("does not serve")
        })
}

/// The router's own 405: no such method on a route (a handler's 405, such as an update of
/// a consent that does not exist, says why in its own words).
fn is_method_fallback(a: &Answer) -> bool {
    a.status == 405
        && a.issues("error")
            .iter()
            .any(|i| i["diagnostics"] == "this method is not supported here")
}

/// Asserts `a` is a documented answer of `method template`: its status is listed, it
/// carries `X-Reference-Id` (documented and present), its content type is documented, and
/// a JSON body matches the documented schema.
fn check_documented(doc: &Value, method: &str, template: &str, a: &Answer) {
    let what = format!("{} {template} -> {}", method.to_uppercase(), a.status);
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{what}: not documented");
    let response = op["responses"]
        .get(a.status.to_string())
        .or_else(|| op["responses"].get("default"))
        .unwrap_or_else(|| panic!("{what}: status not documented; body {}", a.body));
    let response = resolve(doc, response);
    assert!(
        response["headers"].get("X-Reference-Id").is_some(),
        "{what}: X-Reference-Id not documented"
    );
    assert!(
        a.header("x-reference-id").is_some(),
        "{what}: no X-Reference-Id"
    );
    let content_type = a.header("content-type").unwrap_or_default();
    let essence = content_type.split(';').next().unwrap().trim();
    let media = response["content"]
        .get(essence)
        .unwrap_or_else(|| panic!("{what}: content type {content_type} not documented"));
    if essence.ends_with("json") {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": doc["components"],
            "allOf": [media["schema"]],
        });
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&a.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: body does not match the documented schema: {errors:#?}\n{}",
            a.body
        );
    }
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let doc = fetch_doc(&app).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 38, "only {} operations documented", ops.len());
    for (method, template, op) in &ops {
        let (path, query) = concrete(&doc, template, op);
        let body = matches!(method.as_str(), "post" | "put").then(|| {
            let content_type = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned())
                .unwrap_or_else(|| "application/json".into());
            (content_type, "{}".to_string())
        });
        let a = call(
            &app,
            method,
            &path,
            &query,
            token_for(template, op),
            body.as_ref().map(|(c, b)| (c.as_str(), b.clone())),
        )
        .await;
        let what = format!("{} {path}", method.to_uppercase());
        assert!(!is_method_fallback(&a), "{what} is not served: {a:?}");
        assert!(!is_router_fallback(&a), "{what} is not routed: {a:?}");
        check_documented(&doc, method, template, &a);
    }
}

#[tokio::test]
async fn unserved_routes_are_not_documented() {
    let app = spawn_app().await;
    let doc = fetch_doc(&app).await;
    for (method, template) in UNSERVED {
        assert!(
            doc["paths"][template].get(method).is_none(),
            "{} {template} is documented but not served",
            method.to_uppercase()
        );
        // …and they really are not served.
        let path = template.replace("{id}", "dummy-1");
        let body = matches!(method, "post" | "put").then(|| ("application/json", "{}".into()));
        let a = call(&app, method, &path, &[], Some(HOUSING), body).await;
        assert!(
            is_method_fallback(&a) || is_router_fallback(&a),
            "{} {path} answered {}: {}",
            method.to_uppercase(),
            a.status,
            a.body
        );
        assert!(a.header("x-reference-id").is_some());
    }
}

#[tokio::test]
async fn the_document_is_consistent() {
    let app = spawn_app().await;
    let doc = fetch_doc(&app).await;
    let bearer = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
    let ops = operations(&doc);
    let mut ids = std::collections::HashSet::new();
    for (method, path, op) in &ops {
        let what = format!("{} {path}", method.to_uppercase());
        assert!(
            ids.insert(op["operationId"].as_str().expect("an operationId")),
            "{what}: duplicate operationId"
        );
        // Exactly the public paths opt out of the global bearer requirement.
        assert_eq!(
            is_public(op),
            PUBLIC.contains(&path.as_str()),
            "{what}: security"
        );
        if !is_public(op) {
            assert!(op.get("security").is_none(), "{what}: overrides security");
            for code in ["401", "403", "500"] {
                assert!(op["responses"].get(code).is_some(), "{what}: no {code}");
            }
        }
        for (code, response) in op["responses"].as_object().unwrap() {
            let response = resolve(&doc, response);
            assert!(
                response["headers"].get("X-Reference-Id").is_some(),
                "{what} {code}: no X-Reference-Id header"
            );
            if code.starts_with('4') || code == "500" {
                assert_eq!(
                    response["content"]["application/fhir+json"]["schema"]["$ref"],
                    "#/components/schemas/OperationOutcome",
                    "{what} {code}: errors are OperationOutcomes"
                );
            }
        }
        if matches!(method.as_str(), "post" | "put") && op.get("requestBody").is_some() {
            for code in ["413", "415"] {
                assert!(op["responses"].get(code).is_some(), "{what}: no {code}");
            }
        }
    }
    // Request headers where they apply: break-glass on the exchanges consent decides,
    // If-None-Exist on the creates that honour it.
    let header_params: [(&str, &[&str]); 3] = [
        (
            "X-Purpose-Of-Use",
            &[
                "/fhir",
                "/fhir/Communication",
                "/fhir/CarePlan",
                "/housing/notes",
            ],
        ),
        (
            "X-Break-Glass-Reason",
            &[
                "/fhir",
                "/fhir/Communication",
                "/fhir/CarePlan",
                "/housing/notes",
            ],
        ),
        ("If-None-Exist", &["/fhir/Communication", "/fhir/CarePlan"]),
    ];
    for (param, paths) in header_params {
        for path in paths {
            let params = doc["paths"][path]["post"]["parameters"].as_array().unwrap();
            assert!(
                params.iter().any(|p| resolve(&doc, p)["name"] == param),
                "POST {path}: no {param}"
            );
        }
    }

    // The FHIR part agrees with the CapabilityStatement, both ways.
    let cs = call(&app, "get", "/fhir/metadata", &[], None, None).await;
    check_documented(&doc, "get", "/fhir/metadata", &cs);
    let mut declared: Vec<(String, String)> = vec![
        ("get".into(), "/fhir/metadata".into()),
        ("post".into(), "/fhir".into()),
    ];
    for r in cs.body["rest"][0]["resource"].as_array().unwrap() {
        let ty = r["type"].as_str().unwrap();
        for i in r["interaction"].as_array().unwrap() {
            let (method, path) = match i["code"].as_str().unwrap() {
                "create" => ("post", format!("/fhir/{ty}")),
                "search-type" => ("get", format!("/fhir/{ty}")),
                "read" => ("get", format!("/fhir/{ty}/{{id}}")),
                "update" => ("put", format!("/fhir/{ty}/{{id}}")),
                "history-instance" => ("get", format!("/fhir/{ty}/{{id}}/_history")),
                "vread" => ("get", format!("/fhir/{ty}/{{id}}/_history/{{vid}}")),
                other => panic!("an interaction this test does not know: {other}"),
            };
            assert!(
                doc["paths"][&path].get(method).is_some(),
                "the CapabilityStatement declares {ty} {}: {} {path} is not documented",
                i["code"],
                method.to_uppercase()
            );
            declared.push((method.into(), path));
        }
    }
    for (method, path, _) in ops.iter().filter(|(_, p, _)| p.starts_with("/fhir")) {
        assert!(
            declared.contains(&(method.clone(), path.clone())),
            "{} {path} is documented but not in the CapabilityStatement",
            method.to_uppercase()
        );
    }
}

/// A walk through the API: every answer is checked against the document.
#[tokio::test]
async fn real_answers_match_the_documented_schemas() {
    // Notes need a delivery endpoint; nothing listens there (attempts just fail).
    let app = spawn_app_with(tempfile::tempdir().unwrap(), Some("http://127.0.0.1:9")).await;
    let doc = fetch_doc(&app).await;
    let check = |m: &str, t: &str, a: &Answer, status: u16| {
        assert_eq!(a.status, status, "{} {t}: {a:?}", m.to_uppercase());
        check_documented(&doc, m, t, a);
    };

    // Tenants.
    let registration = json!({"tenant_id": "T-1001", "identifiers": [
        {"system": MRN_SYSTEM, "value": "MRN-448812"},
        {"system": MEMBER_SYSTEM, "value": "BHP-20931"}]});
    let a = app
        .post_json("/housing/tenants", HOUSING, &registration)
        .await;
    check("post", "/housing/tenants", &a, 201);
    let a = app
        .post_json("/housing/tenants", HOUSING, &registration)
        .await;
    check("post", "/housing/tenants", &a, 200);
    // The trail records the status the caller was answered.
    assert_eq!(app.audit_record(&a.reference_id()).await["status"], 200);
    let other = json!({"tenant_id": "T-2002", "identifiers": [{"system": MRN_SYSTEM, "value": "MRN-448812"}]});
    let a = app.post_json("/housing/tenants", HOUSING, &other).await;
    check("post", "/housing/tenants", &a, 409);

    // Consents.
    let form = json!({"tenant_id": "T-1001", "share_with": ["riverside-clinic", "bayview-health-plan"],
        "valid_until": "2027-05-31", "restrictions": ["substance-use"]});
    let a = app.post_json("/housing/consents", HOUSING, &form).await;
    check("post", "/housing/consents", &a, 201);
    let consent = a.body["consent"]["id"].as_str().unwrap().to_string();
    let a = app
        .post_json(
            "/housing/consents",
            HOUSING,
            &json!({"tenant_id": "T-1001", "colour": "red"}),
        )
        .await;
    check("post", "/housing/consents", &a, 400);
    let a = app
        .post_json(
            "/housing/consents",
            HOUSING,
            &json!({"tenant_id": "T-9999"}),
        )
        .await;
    check("post", "/housing/consents", &a, 422);
    let a = app.get("/housing/consents?tenant=T-1001", HOUSING).await;
    check("get", "/housing/consents", &a, 200);
    let a = app.get(&format!("/fhir/Consent/{consent}"), CLINIC).await;
    check("get", "/fhir/Consent/{id}", &a, 200);
    let mut resource = a.body.clone();
    resource.as_object_mut().unwrap().remove("meta");
    let a = app
        .put_with(&format!("/fhir/Consent/{consent}"), HOUSING, &resource, &[])
        .await;
    check("put", "/fhir/Consent/{id}", &a, 200);
    let a = app
        .get(&format!("/fhir/Consent/{consent}/_history"), HOUSING)
        .await;
    check("get", "/fhir/Consent/{id}/_history", &a, 200);
    let a = app
        .get(&format!("/fhir/Consent/{consent}/_history/2"), HOUSING)
        .await;
    check("get", "/fhir/Consent/{id}/_history/{vid}", &a, 200);
    let a = app
        .get("/fhir/Consent?patient=T-1001&status=active", HOUSING)
        .await;
    check("get", "/fhir/Consent", &a, 200);
    let a = app
        .get(
            &format!("/fhir/Consent?patient:identifier={MRN_SYSTEM}|MRN-448812"),
            CLINIC,
        )
        .await;
    check("get", "/fhir/Consent", &a, 200);
    let a = app.get("/fhir/Consent?subject=T-1001", HOUSING).await;
    check("get", "/fhir/Consent", &a, 400);
    let a = app
        .post_json(
            &format!("/housing/consents/{consent}/confirm"),
            HOUSING,
            &json!({}),
        )
        .await;
    check("post", "/housing/consents/{id}/confirm", &a, 409);

    // Notices.
    let notice = fixture("discharge-notice-oversharing.json");
    let a = app.post("/fhir/Communication", CLINIC, &notice).await;
    check("post", "/fhir/Communication", &a, 201);
    let location = a.header("location").unwrap();
    let a = app.post("/fhir/Communication", CLINIC, &notice).await;
    check("post", "/fhir/Communication", &a, 200);
    let a = app.get(&location, CLINIC).await;
    check("get", "/fhir/Communication/{id}", &a, 200);
    let a = app.get(&location, MCO).await;
    check("get", "/fhir/Communication/{id}", &a, 404);
    let a = app
        .post("/fhir/CarePlan", CLINIC, &fixture("follow-up-plan.json"))
        .await;
    check("post", "/fhir/CarePlan", &a, 201);
    let a = app
        .post("/fhir", CLINIC, &fixture("bundle-batch.json"))
        .await;
    check("post", "/fhir", &a, 200);
    let a = app.post("/fhir/Communication", HOUSING, &notice).await;
    check("post", "/fhir/Communication", &a, 403);
    let a = app
        .post(
            "/fhir/Communication",
            CLINIC,
            &fixture("invalid-communication-missing-status.json"),
        )
        .await;
    check("post", "/fhir/Communication", &a, 422);
    let a = app
        .post_with(
            "/fhir/Communication",
            CLINIC,
            &notice,
            &[("X-Break-Glass-Reason", "why")],
        )
        .await;
    check("post", "/fhir/Communication", &a, 400);
    let a = answer(
        app.client
            .post(format!("{}/fhir/Communication", app.base))
            .bearer_auth(CLINIC)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap(),
    )
    .await;
    check("post", "/fhir/Communication", &a, 415);
    let big = json!({"resourceType": "Communication", "note": "x".repeat(70_000)});
    let a = app.post("/fhir/Communication", CLINIC, &big).await;
    check("post", "/fhir/Communication", &a, 413);

    // Housing reads.
    let a = app.get("/housing/updates?since=0&limit=50", HOUSING).await;
    check("get", "/housing/updates", &a, 200);
    assert!(!a.body["entries"].as_array().unwrap().is_empty());
    let a = app.get("/housing/updates?limit=0", HOUSING).await;
    check("get", "/housing/updates", &a, 400);
    let a = app.get("/housing/tenants/T-1001", HOUSING).await;
    check("get", "/housing/tenants/{id}", &a, 200);
    let item = a.body["items"][0]["id"].as_str().unwrap().to_string();
    let a = app.get("/housing/tenants/T-1001", CLINIC).await;
    check("get", "/housing/tenants/{id}", &a, 403);
    let a = call(&app, "get", "/housing/tenants/T-1001", &[], None, None).await;
    check("get", "/housing/tenants/{id}", &a, 401);
    let a = app
        .get("/housing/tenants/T-1001/disclosures", HOUSING)
        .await;
    check("get", "/housing/tenants/{id}/disclosures", &a, 200);
    for partner in ["riverside-clinic", "eastside-clinic"] {
        let a = app
            .get(
                &format!("/housing/tenants/T-1001/preview?partner={partner}"),
                HOUSING,
            )
            .await;
        check("get", "/housing/tenants/{id}/preview", &a, 200);
    }
    let a = app.get("/housing/consents/due", HOUSING).await;
    check("get", "/housing/consents/due", &a, 200);
    let a = app
        .post_json(
            "/housing/tenants/T-1001/renewal-request",
            HOUSING,
            &json!({}),
        )
        .await;
    check("post", "/housing/tenants/{id}/renewal-request", &a, 200);

    // Notes.
    let note = json!({"tenant_id": "T-1001", "to": "riverside-clinic",
        "reason": "Tenant is home and unsure about the follow-up visit",
        "facts": [{"item_id": item}, {"item": "next_appointment", "start": "2026-12-01T10:00:00Z"}],
        "requested_action": "Confirm the visit date", "deadline": "2026-12-01", "priority": "urgent"});
    let a = app.post_json("/housing/notes", HOUSING, &note).await;
    check("post", "/housing/notes", &a, 201);
    let reference = a.body["reference_id"].as_str().unwrap().to_string();
    let a = app
        .get(&format!("/housing/notes/{reference}"), HOUSING)
        .await;
    check("get", "/housing/notes/{reference}", &a, 200);
    let a = app
        .get("/housing/notes?tenant=T-1001&open=true", HOUSING)
        .await;
    check("get", "/housing/notes", &a, 200);
    let a = app.get("/housing/notes/dead-letters", HOUSING).await;
    check("get", "/housing/notes/dead-letters", &a, 200);
    let a = app
        .post_json(
            &format!("/housing/notes/{reference}/replay"),
            HOUSING,
            &json!({}),
        )
        .await;
    check("post", "/housing/notes/{reference}/replay", &a, 409);

    // A partner's proposed consent, confirmed, then revoked.
    let a = app
        .post(
            "/fhir/Consent",
            CLINIC,
            &fixture("consent-share-with-clinic.json"),
        )
        .await;
    check("post", "/fhir/Consent", &a, 202);
    let proposed = app.consent_id_with_status("proposed").await;
    let a = app
        .post_json(
            &format!("/housing/consents/{proposed}/confirm"),
            HOUSING,
            &json!({}),
        )
        .await;
    check("post", "/housing/consents/{id}/confirm", &a, 200);
    let a = app
        .post_json(
            &format!("/housing/consents/{proposed}/revoke"),
            HOUSING,
            &json!({}),
        )
        .await;
    check("post", "/housing/consents/{id}/revoke", &a, 200);

    // Joint case reviews, under a consent that covers the clinic on the team.
    let a = app.post_json("/housing/consents", HOUSING, &form).await;
    check("post", "/housing/consents", &a, 201);
    let review = json!({"tenant_id": "T-1001", "date": "2026-11-23",
        "attendees": ["northside-housing", "riverside-clinic"],
        "decisions": [{"kind": "housing-accommodation", "action": "Fit grab rails", "owner": "northside-housing", "due": "2026-12-04"}],
        "next_review": "2026-11-28"});
    let a = app
        .post_json("/housing/reviews", HOUSING_REVIEW, &review)
        .await;
    check("post", "/housing/reviews", &a, 201);
    let id = a.body["id"].as_str().unwrap().to_string();
    let a = app
        .get(&format!("/housing/reviews/{id}"), CLINIC_REVIEW)
        .await;
    check("get", "/housing/reviews/{id}", &a, 200);
    let a = app
        .get(&format!("/housing/reviews/{id}"), OTHER_REVIEW)
        .await;
    check("get", "/housing/reviews/{id}", &a, 403);
    let a = app.get(&format!("/fhir/CarePlan/{id}"), AUDITOR).await;
    check("get", "/fhir/CarePlan/{id}", &a, 200);
    let a = app.get("/housing/reviews/due", HOUSING_REVIEW).await;
    check("get", "/housing/reviews/due", &a, 200);
    assert_eq!(a.body["due"].as_array().unwrap().len(), 1, "{a:?}");

    // Audit.
    let a = app.get("/audit/records?limit=20", AUDITOR).await;
    check("get", "/audit/records", &a, 200);
    let a = app.get("/audit/records", HOUSING).await;
    check("get", "/audit/records", &a, 403);
    let a = app.get("/audit/verify", AUDITOR).await;
    check("get", "/audit/verify", &a, 200);
    let a = app.get("/audit/verify?anchor=zz", AUDITOR).await;
    check("get", "/audit/verify", &a, 400);
    let a = app.get("/audit/break-glass", AUDITOR).await;
    check("get", "/audit/break-glass", &a, 200);

    // Operations.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let a = call(&app, "get", path, &[], None, None).await;
        check("get", path, &a, 200);
    }
}
