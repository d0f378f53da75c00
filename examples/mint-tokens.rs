//! Writes N distinct CDS Hooks JWTs (one `jti` each, since the service refuses a replayed `jti`), signed with
//! the TEST-ONLY key in fixtures/auth, for load tests against `scripts/load-test.toml`.
//!
//! Run: `cargo run --release --example mint-tokens -- AUD COUNT > tokens.txt`

use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn main() {
    let mut args = std::env::args().skip(1);
    let aud = args.next().expect("usage: mint-tokens AUD COUNT");
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/auth/es384-private.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let mut header = Header::new(Algorithm::ES384);
    header.typ = Some("JWT".to_string());
    header.kid = Some("test-es384".to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for _ in 0..count {
        let claims = serde_json::json!({
            "iss": "https://ehr.test.example",
            "aud": aud,
            "iat": now,
            "exp": now + 300,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        println!("{}", jsonwebtoken::encode(&header, &claims, &key).unwrap());
    }
}
