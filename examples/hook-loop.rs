//! Runs the hook path (parse, read the prefetch, assess, render; no I/O) on one request file N times, for a
//! profiler: `valgrind --tool=callgrind target/release/examples/hook-loop FILE 50`. The benchmarks say how
//! fast; this says where the time goes.
//!
//! Run: `cargo build --release --example hook-loop`, then the command above. SERVICE defaults to order-select.

use dry_needling_cds::Knowledge;
use dry_needling_cds::service::{Limits, MissingDataPolicy, finish, prepare};
use std::hint::black_box;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: hook-loop FILE [COUNT] [SERVICE]");
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let service = args.next().unwrap_or_else(|| "dry-needling-order-select".to_string());
    let body = std::fs::read(&path).expect("a readable request file");
    let knowledge = Knowledge::embedded().expect("embedded content");
    let today = time::macros::date!(2026 - 11 - 23);
    let mut cards = 0;
    for _ in 0..count {
        let prepared =
            prepare(&knowledge, &Limits::default(), &service, black_box(&body)).expect("a valid hook request");
        assert!(prepared.wanted().is_empty(), "the request must carry complete prefetch");
        cards += finish(prepared, &knowledge, today, &MissingDataPolicy::default())
            .expect("an answer")
            .0
            .cards
            .len();
    }
    println!("{count} calls, {cards} cards");
}
