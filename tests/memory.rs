//! What one request costs in memory, counted by the allocator itself (issue 22, items 3 to 5): a request over a
//! content cap is refused without building what it holds; a hook call whose record is mostly text peaks at a
//! small multiple of its body; a feedback body peaks at a small multiple of its size.
//!
//! Why a counting allocator and not the process's RSS: RSS moves with the allocator's arenas, the other tests'
//! threads and the machine, so a bound on it would be loose or flaky. The allocator sees every byte the call
//! asks for, deterministically; the process-level figures (32 large calls, 200 feedback bodies at once) are
//! measured on the release binary by `scripts/burst` and stated in docs/invariants.md. The tests run one at a
//! time (a lock) so that each peak is its own.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{SELECT, send_with, state};
use dry_needling_cds::service::Limits;
use serde_json::json;

/// The system allocator, counting the bytes held now and the most held since the last [`reset_peak`].
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
#[allow(unsafe_code)] // a global allocator is an unsafe trait; this one only counts
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let held = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(held, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(pointer, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                let held = HELD.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(held, Ordering::Relaxed);
            } else {
                HELD.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `work` and returns its answer with the most bytes it held at once beyond what was held before it.
async fn peak_of<T>(work: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = HELD.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let answer = work.await;
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("peak held by the call: {peak} bytes");
    (answer, peak)
}

fn request(uri: &str, body: String) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::post(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap()
}

fn dry_needling_order() -> serde_json::Value {
    json!({"resource": {"resourceType": "ServiceRequest", "id": "dn", "status": "draft", "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "20560"}]},
        "reasonCode": [{"text": "myofascial pain of the upper back"}]}})
}

fn hook_body(orders: Vec<serde_json::Value>, conditions: Vec<serde_json::Value>) -> String {
    json!({
        "hook": "order-select",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2eb",
        "context": {"userId": "Practitioner/1", "patientId": "p1", "selections": ["ServiceRequest/dn"],
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": orders}},
        "prefetch": {
            "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": conditions},
            "medicationStatements": null, "medicationRequests": null, "procedures": null}
    })
    .to_string()
}

fn condition(i: usize, text: &str) -> serde_json::Value {
    json!({"resource": {"resourceType": "Condition", "id": format!("c{i}"),
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "279069000"}], "text": text},
        "onsetDateTime": "2026-11-01"}})
}

#[tokio::test]
async fn a_prefetch_over_its_cap_is_refused_without_building_its_entries() {
    let _one = ONE_AT_A_TIME.lock().await;
    // 60,000 entries against a cap of 1,000. Before: every entry was built, then counted: the call held many
    // times its body (247 MB for a 15 MiB body).
    let conditions = (0..60_000).map(|i| condition(i, "pain")).collect();
    let body = hook_body(vec![dry_needling_order()], conditions);
    let size = body.len();
    let mut state = state();
    state.limits = Limits {
        max_prefetch_entries: 1_000,
        ..Limits::default()
    };
    let (reply, peak) = peak_of(send_with(state, request(SELECT, body))).await;
    assert_eq!(reply.status.as_u16(), 413, "{}", String::from_utf8_lossy(&reply.bytes));
    let text = String::from_utf8_lossy(&reply.bytes);
    assert!(text.contains("has more than 1000 entries"), "{text}");
    // The body is held before the call (it is not counted); the call itself holds a fraction of it (measured:
    // under a tenth; before, four to six times the body).
    assert!(
        peak < size / 4,
        "a {size}-byte request over its cap held {peak} bytes at its peak"
    );
}

#[tokio::test]
async fn draft_orders_over_their_cap_are_refused_without_building_them() {
    let _one = ONE_AT_A_TIME.lock().await;
    let orders = (0..50_000)
        .map(|i| {
            json!({"resource": {"resourceType": "ServiceRequest", "id": format!("o{i}"), "status": "draft",
                "intent": "order", "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}],
                "text": "Chest CT"}}})
        })
        .collect();
    let body = hook_body(orders, Vec::new());
    let size = body.len();
    let (reply, peak) = peak_of(send_with(state(), request(SELECT, body))).await;
    assert_eq!(reply.status.as_u16(), 413, "{}", String::from_utf8_lossy(&reply.bytes));
    assert!(String::from_utf8_lossy(&reply.bytes).contains("`context.draftOrders` has more than 200 entries"));
    // The body is held before the call (it is not counted); the call itself holds a fraction of it (measured:
    // under a tenth; before, four to six times the body).
    assert!(
        peak < size / 4,
        "a {size}-byte request over its cap held {peak} bytes at its peak"
    );
}

#[tokio::test]
async fn a_record_of_long_texts_costs_a_small_multiple_of_its_body_and_answers_within_the_bound() {
    let _one = ONE_AT_A_TIME.lock().await;
    // About 1 MiB, nearly all condition text that the cards could quote: the shape that made a 710 KB call
    // answer 28 MB, and 32 such calls hold 1.09 GB.
    let conditions = (0..500)
        .map(|i| condition(i, &format!("myofascial pain {i} {}", "y".repeat(2_000))))
        .collect();
    let body = hook_body(vec![dry_needling_order()], conditions);
    let size = body.len();
    assert!(size > 1_000_000, "{size}");
    let (reply, peak) = peak_of(send_with(state(), request(SELECT, body))).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.bytes));
    assert!(
        reply.bytes.len() < 64 * 1024,
        "the answer is {} bytes",
        reply.bytes.len()
    );
    // The body, the record's strings, the answer: a few times the body, so 32 such calls stay under 300 MB.
    assert!(peak < size * 4, "a {size}-byte call held {peak} bytes at its peak");
}

#[tokio::test]
async fn a_feedback_body_costs_a_small_multiple_of_its_size() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Just under the 1 MiB feedback limit, of small entries: the worst ratio of parsed to sent.
    let entry = json!({"card": "0a0b0c0d-0000-4000-8000-000000000000", "outcome": "overridden",
        "overrideReason": {"reason": {"code": "x", "system": "http://example.org"}},
        "outcomeTimestamp": "2026-11-23T10:00:00Z"});
    let each = entry.to_string().len() + 1;
    let entries: Vec<_> = (0..(1024 * 1024 - 100) / each).map(|_| entry.clone()).collect();
    let body = json!({ "feedback": entries }).to_string();
    let size = body.len();
    assert!(size < 1024 * 1024 && size > 1000 * 1024, "{size}");
    let (reply, peak) = peak_of(send_with(state(), request(&format!("{SELECT}/feedback"), body))).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.bytes));
    // Before: the body was parsed into a `serde_json::Value` tree first, 13 times its size; now the entries
    // only, measured 1.9 times.
    assert!(
        peak < size * 5 / 2,
        "a {size}-byte feedback body held {peak} bytes at its peak"
    );
}
