//! Scan (validate, build nothing) the same hook request with serde_json, sonic-rs and simd-json.
use serde::de::IgnoredAny;
use std::time::Instant;
fn time<F: FnMut()>(mut f: F) -> f64 {
    for _ in 0..50 { f(); }
    let mut best = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..200 { f(); }
        best.push(t.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    best.sort_by(|a, b| a.partial_cmp(b).unwrap());
    best[best.len() / 2]
}
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let body = std::fs::read(&path).unwrap();
    let serde = time(|| { std::hint::black_box(serde_json::from_slice::<IgnoredAny>(&body).unwrap()); });
    let serde_value = time(|| { std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap()); });
    let sonic = time(|| { std::hint::black_box(sonic_rs::from_slice::<IgnoredAny>(&body).unwrap()); });
    let sonic_value = time(|| { std::hint::black_box(sonic_rs::from_slice::<sonic_rs::Value>(&body).unwrap()); });
    let simd = time(|| { let mut b = body.clone(); std::hint::black_box(simd_json::to_tape(&mut b).unwrap()); });
    let copy = time(|| { std::hint::black_box(body.clone()); });
    println!("{} bytes, median µs per parse:", body.len());
    println!("serde_json IgnoredAny {serde:.1}\nserde_json Value {serde_value:.1}\nsonic-rs IgnoredAny {sonic:.1}\nsonic-rs Value {sonic_value:.1}\nsimd-json tape (incl. copy {copy:.1}) {simd:.1}");
}
