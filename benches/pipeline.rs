//! The pure inbound pipeline, per notice kind, without a server (issue 5, item 4):
//! parse (+ canonical digest, as the HTTP extractor does) → validate (profiles + subject
//! check, as `gateway::static_checks`) → map and classify (`Mappings::translate`) →
//! minimise (the stored items and Hearth's minimised copy built from them).
//!
//! `cargo bench --bench pipeline`

// The allocator the server runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hearth::dataset::{ConsentCitation, Provenance, StoredItem};
use hearth::fhir::Profiles;
use hearth::ids::{Identifier, PartnerId, ReferenceId, TenantId};
use hearth::mapping::{Mappings, Translation};
use hearth::store::StoredExchange;
use serde_json::Value;

const TENANT_SYSTEM: &str = "https://housing.example.org/tenant-id";

/// One valid fixture per notice kind (and the over-sharing discharge notice).
const NOTICES: &[&str] = &[
    "discharge-notice",
    "discharge-notice-oversharing",
    "medication-change-notice",
    "medication-change-dose-changed",
    "medication-change-buprenorphine-start",
    "appointment-notice",
    "risk-flag-update",
    "care-contact-update",
    "accommodation-needs",
    "follow-up-plan",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture as a partner would send it: compact JSON.
fn body(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(root().join("fixtures").join(format!("{name}.json")))
        .expect("fixture");
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    serde_json::to_vec(&v).unwrap()
}

fn parse(bytes: &[u8]) -> (Value, String) {
    let v: Value = serde_json::from_slice(bytes).expect("JSON");
    let canonical = serde_json::to_vec(&v).unwrap();
    let digest = hearth::audit::digest(&canonical);
    (v, digest)
}

fn minimise(t: &Translation) -> Vec<u8> {
    let reference_id = ReferenceId::new();
    let received_at = "2026-11-23T10:00:00Z".to_string();
    let provenance = Provenance {
        partner: PartnerId::new("riverside-clinic"),
        reference_id,
        received_at: received_at.clone(),
        consent: Some(ConsentCitation {
            id: "01kaqz3d0000000000000000c1".into(),
            version: 2,
        }),
    };
    let items: Vec<StoredItem> = t
        .items
        .iter()
        .enumerate()
        .map(|(i, m)| StoredItem {
            id: format!("{reference_id}-{i}"),
            item: m.item.clone(),
            labels: m.labels.iter().cloned().collect(),
            provenance: provenance.clone(),
        })
        .collect();
    // What the store writes per item, and the copy a reader gets back.
    let stored: usize = items
        .iter()
        .map(|i| serde_json::to_string(i).unwrap().len())
        .sum();
    let ex = StoredExchange {
        reference_id,
        partner: provenance.partner.clone(),
        resource_type: "Communication".into(),
        identifier: Identifier::new("https://riverside-clinic.example/fhir/message-id", "X"),
        tenant: TenantId::new("T-1001"),
        state: "current".into(),
        received_at,
        items,
        retired: Vec::new(),
    };
    let copy = hearth::gateway::minimised_copy(&ex, TENANT_SYSTEM);
    black_box(stored);
    serde_json::to_vec(&copy).unwrap()
}

fn pipeline(c: &mut Criterion) {
    let profiles = Profiles::load(&root().join("profiles")).expect("profiles");
    let mappings = Mappings::load(&root().join("mappings")).expect("mappings");

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for name in NOTICES {
        let bytes = body(name);
        // Sanity: the fixture is valid and maps to something.
        let (v, _) = parse(&bytes);
        assert!(
            hearth::gateway::static_checks(&profiles, &v).is_empty(),
            "{name} is valid"
        );
        assert!(!mappings.translate(&v).items.is_empty(), "{name} maps");
        g.bench_function(*name, |b| {
            b.iter(|| {
                let (v, digest) = parse(black_box(&bytes));
                let issues = hearth::gateway::static_checks(&profiles, &v);
                let t = mappings.translate(&v);
                let labels: Vec<BTreeSet<String>> =
                    t.items.iter().map(|i| i.labels.clone()).collect();
                black_box((digest, issues, labels, minimise(&t)))
            })
        });
    }
    g.finish();

    // Where the time goes, for the discharge notice the load benchmark sends.
    let bytes = body("discharge-notice-oversharing");
    let (v, _) = parse(&bytes);
    let t = mappings.translate(&v);
    let mut g = c.benchmark_group("stage/discharge-notice-oversharing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Value>(black_box(&bytes)).unwrap()))
    });
    g.bench_function("canonical-digest", |b| {
        b.iter(|| {
            let canonical = serde_json::to_vec(black_box(&v)).unwrap();
            black_box(hearth::audit::digest(&canonical))
        })
    });
    g.bench_function("validate", |b| {
        b.iter(|| black_box(hearth::gateway::static_checks(&profiles, black_box(&v))))
    });
    g.bench_function("translate", |b| {
        b.iter(|| black_box(mappings.translate(black_box(&v))))
    });
    g.bench_function("minimise", |b| {
        b.iter(|| black_box(minimise(black_box(&t))))
    });
    // Part of translate: the `[[words]]` scan over every string of every item it maps.
    let texts: Vec<String> = t
        .items
        .iter()
        .flat_map(|i| {
            let mut out = Vec::new();
            collect_strings(&serde_json::to_value(&i.item).unwrap(), &mut out);
            out
        })
        .collect();
    g.bench_function("words", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(mappings.text_labels(black_box(text)));
            }
        })
    });
    g.finish();
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = pipeline
}
criterion_main!(benches);
