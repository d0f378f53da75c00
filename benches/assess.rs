//! The cost of one hook call on the largest real patient record in `fixtures/`, on the same request bytes:
//! (a) a pure JSON scan (`serde::de::IgnoredAny`, the floor no parser beats), (b) a `serde_json::Value` parse
//! (what a naive service would do first), (c) the whole request parsed into fhir-sdk's r4b models, and (d) the
//! service's whole path (parse the request, read the prefetch entry by entry, assess, render). It prints d/a,
//! d/b and d/c at the end; the goal is d ≤ 3 × a.
//!
//! Run: `cargo bench --bench assess`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dry_needling_cds::Knowledge;
use dry_needling_cds::fetch::Search;
use dry_needling_cds::service::{Limits, MissingDataPolicy, finish, prepare};
use fhir_sdk::r4b::resources::Bundle;
use serde::Deserialize;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

/// The request as fhir-sdk models: every prefetched Bundle and the draft orders, fully typed.
#[derive(Deserialize)]
#[allow(dead_code)]
struct TypedRequest {
    hook: String,
    context: TypedContext,
    prefetch: HashMap<String, Option<Bundle>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct TypedContext {
    #[serde(rename = "draftOrders")]
    draft_orders: Bundle,
}

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

/// The hook path without the FHIR server. The fixtures carry complete prefetch for the four kinds of data; the
/// allergy search (no prefetch key: it is only fetched) is wanted but, with no `fhirServer` in the request, the
/// service would not call anyone either, so `finish` comes straight after `prepare`, as in the service.
fn handle_hook(knowledge: &Knowledge, service: &str, body: &[u8], today: time::Date) {
    let prepared = prepare(knowledge, &Limits::default(), service, body).unwrap();
    let wanted = prepared.wanted();
    assert!(
        wanted.is_empty()
            || (wanted.iter().all(|(search, _)| *search == Search::Allergies)
                && prepared.request.fhir_server.is_none()),
        "the bench must not skip a fetch the service would make: {wanted:?}"
    );
    black_box(finish(prepared, knowledge, today, &MissingDataPolicy::default()).unwrap());
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
    group.bench_function("fhir-sdk r4b models", |b| {
        b.iter(|| serde_json::from_slice::<TypedRequest>(black_box(&body)).unwrap())
    });
    group.bench_function("parse + assess + render", |b| {
        b.iter(|| handle_hook(&knowledge, "dry-needling-order-select", black_box(&body), today))
    });
    group.finish();

    // The ratios, from plain timing loops on the same bytes (criterion's own figures are above). The four are
    // timed in turn, round after round, and the medians are taken, so that a slow spell of a shared machine
    // lands on all four alike rather than on one.
    let time = |f: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..20 {
            f();
        }
        started.elapsed().as_secs_f64() / 20.0 * 1e3
    };
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (mut scan, mut value, mut typed, mut whole, mut whole_over_scan) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..25 {
        scan.push(time(&|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body)).unwrap();
        }));
        value.push(time(&|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap());
        }));
        typed.push(time(&|| {
            black_box(serde_json::from_slice::<TypedRequest>(black_box(&body)).unwrap());
        }));
        whole.push(time(&|| {
            handle_hook(&knowledge, "dry-needling-order-select", black_box(&body), today)
        }));
        whole_over_scan.push(whole[whole.len() - 1] / scan[scan.len() - 1]);
    }
    let (scan, value, typed, whole) = (median(scan), median(value), median(typed), median(whole));
    println!(
        "\nratios on {name} (medians of 25 rounds): (a) scan {scan:.3} ms, (b) Value {value:.3} ms, \
         (c) fhir-sdk {typed:.3} ms, (d) whole path {whole:.3} ms; d/a = {:.2} (goal ≤ 3), d/b = {:.2}, d/c = {:.2}",
        median(whole_over_scan),
        whole / value,
        whole / typed
    );

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
