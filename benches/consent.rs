//! Consent decisions against a 10,000-tenant, 50,000-consent registry (issue 5: target
//! ≥ 200,000 decisions/s on one core). The registry is modelled as Hearth holds it per
//! exchange: the tenant's consent versions, looked up by tenant, then `consent::decide`.
//!
//! `cargo bench --bench consent`

// The allocator the server runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hearth::consent::{ConsentVersion, ExchangeRequest, Flow, decide, terms_from_fhir};
use hearth::ids::{PartnerId, TenantId};
use serde_json::{Value, json};
use time::OffsetDateTime;

const TENANTS: usize = 10_000;
/// Per tenant: consent A v1, v2 (revoked); consent B v1, v2 (renewed); consent C v1.
const VERSIONS_PER_TENANT: usize = 5;
const BATCH: usize = 1_000;

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn version(
    base: &Value,
    n: usize,
    status: &str,
    age_days: i64,
    id: String,
    v: u32,
) -> ConsentVersion {
    let mut c = base.clone();
    c["patient"]["identifier"]["value"] = json!(format!("T-{n}"));
    c["status"] = json!(status);
    c["dateTime"] = json!(format!(
        "2026-{:02}-01T10:00:00Z",
        11 - (age_days / 31).min(10)
    ));
    c["provision"]["period"] = json!({"start": "2026-01-01", "end": "2027-06-30"});
    let partner = |r: &str| r.strip_prefix("Organization/").map(PartnerId::new);
    let terms = terms_from_fhir(&c, partner, |_| true).expect("consent terms");
    ConsentVersion {
        id,
        version: v,
        terms,
    }
}

/// Five versions per tenant. With `restricted`, the governing one (the newest) denies
/// SUD/ETH, so every decision withholds along the label hierarchy.
fn registry(restricted: bool) -> HashMap<TenantId, Vec<ConsentVersion>> {
    let share = fixture("consent-share-with-clinic.json");
    let no_sud = fixture("consent-clinic-and-mco-no-sud.json");
    (1..=TENANTS)
        .map(|n| {
            let id = |k: &str| format!("01kaqz3d{n:010}{k}");
            let versions = vec![
                version(&no_sud, n, "active", 300, id("a"), 1),
                version(&no_sud, n, "inactive", 250, id("a"), 2),
                version(&share, n, "active", 200, id("b"), 1),
                version(&share, n, "active", 100, id("b"), 2),
                version(
                    if restricted { &no_sud } else { &share },
                    n,
                    "active",
                    10,
                    id("c"),
                    1,
                ),
            ];
            (TenantId::new(format!("T-{n}")), versions)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let restricted = registry(true);
    let registry = registry(false);
    assert_eq!(
        registry.values().map(Vec::len).sum::<usize>(),
        TENANTS * VERSIONS_PER_TENANT
    );
    // Tenants in a scattered order, so lookups do not walk the map in cache order.
    let order: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("T-{}", (i * 7919) % TENANTS + 1)))
        .collect();
    let clinic = PartnerId::new("riverside-clinic");
    // The label hierarchy the server decides with.
    let hierarchy = hearth::mapping::Mappings::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
    )
    .expect("the mappings load")
    .label_hierarchy()
    .clone();
    let at = OffsetDateTime::parse(
        "2026-11-23T10:00:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let one_item = vec![BTreeSet::new()];
    let sud_item: BTreeSet<String> = ["SUD".to_string(), "ETH".to_string()].into();
    let two_items = vec![sud_item, BTreeSet::new()];

    let mut g = c.benchmark_group("consent");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, labels, registry) in [
        ("decide/1-item", &one_item, &registry),
        ("decide/2-items-sud", &two_items, &registry),
        // The governing consent withholds the SUD item: labels matched along the hierarchy.
        ("decide/2-items-sud-restricted", &two_items, &restricted),
    ] {
        let mut next = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut permits = 0usize;
                for _ in 0..BATCH {
                    let tenant = &order[next];
                    next = (next + 1) % TENANTS;
                    let consents = registry.get(tenant).map(Vec::as_slice).unwrap_or(&[]);
                    let d = decide(
                        consents,
                        &ExchangeRequest {
                            flow: Flow::Inbound,
                            partner: &clinic,
                            purpose: "COC",
                            item_labels: labels,
                            item_senders: &[],
                            at,
                            renewal_due: false,
                            block_while_renewal_due: false,
                            break_glass: None,
                            label_hierarchy: &hierarchy,
                        },
                    );
                    permits += matches!(d, hearth::consent::Decision::Permit { .. }) as usize;
                }
                assert_eq!(permits, BATCH, "every seeded tenant permits the clinic");
                black_box(permits)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
