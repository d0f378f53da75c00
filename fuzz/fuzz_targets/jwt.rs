//! The JWT path of `auth::Verifier::verify`: the header (`typ`, `kid`, `alg`, `crit`, `jku`), the unverified
//! issuer, the key lookup and fit, the signature, and the claims (`exp`, `nbf`, `iat`, `aud`, `iss`, `jti`,
//! `tenant`), for one trusted client configured through `Config::parse` with the TEST-ONLY keys in
//! `fixtures/auth/` (no `jwks_url`: nothing is ever fetched).
//!
//! A fuzzer cannot forge a signature, so mutating whole tokens stops at the signature check. The first byte of
//! an input therefore picks what the rest is (as the byte's value modulo 3):
//! - `0`: a whole token, as sent in the `Authorization` header;
//! - `1`, `2`: a header's JSON and a claims' JSON, split at the first newline, which are base64url-encoded and
//!   signed with the test ES384 (`1`) or RS384 (`2`) key, so that every check after the signature is reached.
//!   `NOW`, `NOW+n` and `NOW-n` in them are replaced by the current time (plus or minus n seconds) first, so that
//!   seeds stay live.
//!
//! `now` is the wall clock, as the service passes it: jsonwebtoken checks `exp` and `nbf` against the wall clock
//! whatever `now` says (see `tests/parsers.rs`, `verify_checks_exp_against_its_now_argument`).
//!
//! Beyond "no panic": a token that is accepted has the trusted issuer, the `aud` of the path called, a `jti`, an
//! `iat` and an `exp` that make it live now and for no longer than allowed. Each input gets a new `Verifier`,
//! so that the `jti` replay cache does not make runs depend on each other.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use dry_needling_cds::auth::{LEEWAY_SECONDS, MAX_LIFETIME_SECONDS, Verifier};
use dry_needling_cds::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const PATH: &str = "/cds-services/dry-needling-order-select";
const AUDIENCE: &str = "http://127.0.0.1:8080/cds-services/dry-needling-order-select";
const ISSUER: &str = "https://ehr.test.example";
const CONFIG: &str = r#"
public_base_url = "http://127.0.0.1:8080"

[[client]]
issuer = "https://ehr.test.example"
jwks_file = "test-jwks.json"
algorithms = ["ES384", "RS384"]
"#;

/// `FUZZ_JWT_VERBOSE=1`: print each input's verdict (to see which seeds get in, and why the others do not).
static VERBOSE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_JWT_VERBOSE").is_some());

struct Fixture {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    es_key: EncodingKey,
    rs_key: EncodingKey,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = |name: &str| std::fs::read(auth_dir().join(name)).expect("test key");
    Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        http: dry_needling_cds::fetch::http_client(),
        es_key: EncodingKey::from_ec_pem(&key("es384-private.pem")).expect("ES384 key"),
        rs_key: EncodingKey::from_rsa_pem(&key("rs384-private.pem")).expect("RS384 key"),
    }
});

fn auth_dir() -> &'static Path {
    static DIR: LazyLock<std::path::PathBuf> =
        LazyLock::new(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/auth"));
    &DIR
}

/// Unpadded base64url.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `header.claims.signature` over the given JSON texts (or any bytes).
fn signed(header: &[u8], claims: &[u8], key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64url(header), b64url(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    format!("{message}.{signature}")
}

fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `NOW`, `NOW+n`, `NOW-n` → the number of seconds.
fn with_now(text: &[u8], now: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        if !text[i..].starts_with(b"NOW") {
            out.push(text[i]);
            i += 1;
            continue;
        }
        i += 3;
        let sign = match text.get(i) {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => 0,
        };
        let digits = text[i + (sign != 0) as usize..]
            .iter()
            .take(18)
            .take_while(|b| b.is_ascii_digit())
            .count();
        let mut value = now as i128;
        if sign != 0 && digits > 0 {
            let offset: i128 = std::str::from_utf8(&text[i + 1..i + 1 + digits])
                .expect("digits")
                .parse()
                .expect("at most 18 digits");
            value += sign * offset;
            i += 1 + digits;
        }
        out.extend_from_slice(value.to_string().as_bytes());
    }
    out
}

/// The claims an accepted token must have right. Read like the verifier reads them (a struct, so unknown
/// claims are skipped unchecked: serde_json does not validate the UTF-8 of a value it ignores, and neither
/// does the verifier; see docs/testing.md, "Fuzzing").
#[derive(serde::Deserialize)]
struct Said {
    iss: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    jti: Option<Value>,
}

fn number(value: &Option<Value>, name: &str) -> f64 {
    value
        .as_ref()
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("accepted without a numeric `{name}`"))
}

/// What an accepted token must say.
fn check_accepted(token: &str, now: u64) {
    let claims: Said = jsonwebtoken::dangerous::insecure_decode_claims(token).expect("accepted claims are JSON");
    assert_eq!(claims.iss.as_ref().and_then(Value::as_str), Some(ISSUER));
    match &claims.aud {
        Some(Value::String(aud)) => assert_eq!(aud, AUDIENCE),
        Some(Value::Array(auds)) => assert!(auds.iter().any(|a| a == AUDIENCE)),
        other => panic!("accepted with aud {other:?}"),
    }
    assert!(
        claims
            .jti
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|jti| !jti.is_empty())
    );
    let (now, leeway, longest) = (
        now as f64,
        LEEWAY_SECONDS as f64,
        (MAX_LIFETIME_SECONDS + LEEWAY_SECONDS) as f64,
    );
    let (exp, iat) = (number(&claims.exp, "exp"), number(&claims.iat, "iat"));
    assert!(exp + leeway >= now, "accepted after exp");
    assert!(iat <= now + leeway, "accepted before iat");
    assert!(
        exp <= now + longest && exp - iat <= longest,
        "accepted a long-lived token"
    );
    if let Some(nbf) = &claims.nbf {
        // jsonwebtoken reads the clock a moment after `now` was taken: a second of slack.
        assert!(
            nbf.as_f64().is_some_and(|nbf| nbf <= now + leeway + 1.0),
            "accepted before nbf"
        );
    }
    let header = jsonwebtoken::decode_header(token).expect("accepted header");
    assert!(header.typ.is_some_and(|t| t.eq_ignore_ascii_case("JWT")));
    assert!(header.kid.is_some() && header.crit.is_none());
    assert!(matches!(header.alg, Algorithm::ES384 | Algorithm::RS384));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = &*FIXTURE;
    let now = wall_clock();
    let token = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(token) => token.to_string(),
            Err(_) => return,
        },
        kind => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &b""[..]),
            };
            let (header, claims) = (with_now(header, now), with_now(claims, now));
            let (header, claims) = (&header[..], &claims[..]);
            if kind == 1 {
                signed(header, claims, &fixture.es_key, Algorithm::ES384)
            } else {
                signed(header, claims, &fixture.rs_key, Algorithm::RS384)
            }
        }
    };
    let config = Config::parse(CONFIG, auth_dir()).expect("the test configuration");
    let base = config.public_base_url.as_deref().expect("public_base_url");
    let verifier = Verifier::new(config.clients, base, fixture.http.clone());
    let verified = fixture.runtime.block_on(verifier.verify(&token, PATH, now));
    if *VERBOSE {
        eprintln!("{:?}", verified.as_ref().map(|_| "accepted").map_err(|r| r.reason));
    }
    if verified.is_ok() {
        check_accepted(&token, now);
    }
});
