//! The cost of one hook call on the largest real patient record in `fixtures/`: the whole path (parse the
//! request, read the prefetch entry by entry, assess, render), beside a pure JSON scan of the same bytes (the
//! floor no parser beats) and a `serde_json::Value` parse (what a naive service would do first).
//!
//! Run: `cargo bench --bench assess`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dry_needling_cds::Knowledge;
use dry_needling_cds::service::{finish, prepare};
use std::hint::black_box;

fn largest_real_fixture() -> (String, Vec<u8>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures/real")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let path = files.pop().expect("a fixture");
    (
        path.file_name().unwrap().to_string_lossy().into_owned(),
        std::fs::read(&path).unwrap(),
    )
}

/// The hook path without the FHIR server (the fixtures carry complete prefetch, so nothing would be fetched).
fn handle_hook(knowledge: &Knowledge, service: &str, body: &[u8], today: time::Date) {
    let prepared = prepare(knowledge, service, body).unwrap();
    assert!(prepared.wanted().is_empty());
    black_box(finish(prepared, knowledge, today).unwrap());
}

fn bench(c: &mut Criterion) {
    let knowledge = Knowledge::embedded().expect("embedded content");
    let today = time::macros::date!(2026 - 11 - 23);
    let (name, body) = largest_real_fixture();
    let mut group = c.benchmark_group(format!("hook/{name}"));
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("scan (IgnoredAny)", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body)).unwrap())
    });
    group.bench_function("serde_json::Value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    group.bench_function("parse + assess + render", |b| {
        b.iter(|| handle_hook(&knowledge, "dry-needling-order-select", black_box(&body), today))
    });
    group.finish();

    let no_order = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/rules/not-dry-needling-exercise.json"
    ))
    .unwrap();
    c.bench_function("hook/no dry-needling order", |b| {
        b.iter(|| handle_hook(&knowledge, "dry-needling-order-select", black_box(&no_order), today))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
