//! The audit hash chain: appending (serialise the record as the store does, then
//! `audit::record_hash` chained to the previous hash) and verifying (`audit::verify`
//! over records in memory — the CPU part of `hearth audit verify`).
//!
//! `cargo bench --bench audit`

// The allocator the server runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hearth::audit::{
    Actor, AuditEntry, Direction, GENESIS, ItemRef, Outcome, StoredRecord, record_hash, verify,
};
use hearth::dataset::ConsentCitation;
use hearth::ids::{PartnerId, ReferenceId, TenantId};

const CHAIN: usize = 10_000;

/// An accepted inbound discharge notice, as the gateway records it.
fn entry(n: usize) -> AuditEntry {
    let mut a = AuditEntry::new(
        ReferenceId::new(),
        "2026-11-23T10:00:00.123456Z".into(),
        "POST /fhir/Communication".into(),
        "create",
        Direction::Inbound,
    );
    a.outcome = Outcome::Accepted;
    a.status = 201;
    a.actor = Some(Actor {
        principal: "riverside-ehr".into(),
        org: PartnerId::new("riverside-clinic"),
        role: "clinic".into(),
    });
    a.partner = Some(PartnerId::new("riverside-clinic"));
    a.tenant = Some(TenantId::new(format!("T-{n}")));
    a.resource_type = Some("Communication".into());
    a.consent = Some(ConsentCitation {
        id: "01kaqz3d0000000000000000c1".into(),
        version: 2,
    });
    a.items_written = vec![ItemRef {
        kind: "discharge".into(),
        id: Some(format!("{}-0", a.reference_id)),
        labels: Vec::new(),
    }];
    a.dropped_paths = [
        "Communication.text",
        "Communication.contained[0].class",
        "Communication.contained[0].subject",
        "Communication.contained[3].status",
        "Communication.contained[3].intent",
        "Communication.contained[3].for",
        "Communication.contained[3].authoredOn",
        "Communication.contained[5]",
        "Communication.about",
        "Communication.sent",
        "Communication.recipient",
        "Communication.sender",
        "Communication.payload",
        "Communication.note",
    ]
    .map(String::from)
    .to_vec();
    a.payload_digest = Some(hearth::audit::digest(format!("body {n}").as_bytes()));
    a
}

fn bench(c: &mut Criterion) {
    let entries: Vec<AuditEntry> = (0..CHAIN).map(entry).collect();
    let bodies: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let mean = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
    eprintln!("audit record body: {mean} bytes on average");

    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(1));
    let mut prev = GENESIS;
    let mut seq = 0u64;
    g.bench_function("record_hash", |b| {
        b.iter(|| {
            let i = seq as usize % CHAIN;
            seq += 1;
            let e = &entries[i];
            prev = record_hash(
                seq,
                &prev,
                &e.reference_id.to_string(),
                &e.recorded,
                bodies[i].as_bytes(),
            );
            black_box(prev)
        })
    });
    let mut prev = GENESIS;
    let mut seq = 0u64;
    g.bench_function("append (serialise + record_hash)", |b| {
        b.iter(|| {
            let i = seq as usize % CHAIN;
            seq += 1;
            let e = &entries[i];
            let body = serde_json::to_string(e).unwrap();
            prev = record_hash(
                seq,
                &prev,
                &e.reference_id.to_string(),
                &e.recorded,
                body.as_bytes(),
            );
            black_box(prev)
        })
    });

    // A stored chain, verified in memory.
    let mut prev = GENESIS;
    let records: Vec<StoredRecord> = entries
        .iter()
        .zip(&bodies)
        .enumerate()
        .map(|(i, (e, body))| {
            let seq = i as u64 + 1;
            let reference_id = e.reference_id.to_string();
            let hash = record_hash(seq, &prev, &reference_id, &e.recorded, body.as_bytes());
            let r = StoredRecord {
                seq,
                reference_id,
                recorded: e.recorded.clone(),
                prev_hash: prev.to_vec(),
                hash: hash.to_vec(),
                body: body.clone().into_bytes(),
            };
            prev = hash;
            r
        })
        .collect();
    g.throughput(Throughput::Elements(CHAIN as u64));
    g.bench_function("verify (10,000 records in memory)", |b| {
        b.iter(|| {
            let v = verify(records.iter().cloned().map(Ok::<_, ()>), None).unwrap();
            assert!(v.ok());
            black_box(v)
        })
    });
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
