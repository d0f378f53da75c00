//! The parsers that read untrusted input, under property tests: the hook request (`service::prepare`, which
//! reads the envelope, the draft orders and the prefetch, then `service::finish`), the FHIR reader, the JWT
//! header and claims (`auth::Verifier::verify`) and the configuration file (`config::Config::parse`).
//!
//! Why: these are where bytes from outside meet the code, and "no input causes a panic or a 5xx" is an invariant
//! (ARCHITECTURE.md). Random bytes alone rarely get past the first brace, so most inputs here are real requests
//! from `fixtures/` broken on purpose (values deleted, replaced by other JSON, grafted from elsewhere, wrapped
//! in an array, keys repeated, the text cut short or a byte changed), tokens signed with the TEST-ONLY keys in
//! `fixtures/auth/` carrying generated claims, and configurations assembled from valid and invalid lines. The
//! same parsers are fuzzed, coverage-guided, by `scripts/fuzz` (`fuzz/`); these tests keep the properties in
//! every `cargo test`, and every crash either finds is kept at the end of this file as a regression test.
//!
//! Properties, besides "never panics":
//! - a hook request is refused with an error or answered with well-formed cards (a summary of 1 to 140
//!   characters, a known indicator), and an error never quotes a value the caller sent;
//! - the prefetch reads the same whether the request's single pass reads it (it follows `context`) or it is
//!   read afterwards (it comes first), and a prefetch value reads as `parse_contents` reads it;
//! - a token is accepted only when its claims make it valid, and a clearly valid one is accepted;
//! - an accepted configuration keeps `Config::parse`'s promises.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use dry_needling_cds::Knowledge;
use dry_needling_cds::auth::{LEEWAY_SECONDS, MAX_LIFETIME_SECONDS, Verifier};
use dry_needling_cds::config::Config;
use dry_needling_cds::fhir::{Contents, Unreadable, parse_contents, parse_prefetch_value, parse_resource};
use dry_needling_cds::service::{HookError, Limits, MissingDataPolicy, finish, prepare};
use dry_needling_cds::wire::CardsResponse;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// The date the fixtures are written against.
const TODAY: time::Date = time::macros::date!(2026 - 11 - 23);
const SERVICES: [&str; 2] = ["dry-needling-order-select", "dry-needling-order-sign"];
/// A value no error message may ever contain: it is only ever sent by the caller.
const CANARY: &str = "CANARY-q7x";

/// The number of cases: `n`, or `PROPTEST_CASES` when set (for a longer run: `PROPTEST_CASES=5000 cargo test
/// --release --test parsers`).
fn cases(n: u32) -> u32 {
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => ProptestConfig::default().cases,
        None => n,
    }
}

static KNOWLEDGE: LazyLock<Knowledge> = LazyLock::new(|| Knowledge::embedded().expect("embedded content"));

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every hook request in `fixtures/`, parsed, smallest first (so that shrinking prefers small ones).
static REQUESTS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let mut files = Vec::new();
    for dir in [
        "fixtures/rules",
        "fixtures/review",
        "fixtures/review/second",
        "fixtures/real",
    ] {
        for entry in std::fs::read_dir(repo(dir)).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(std::fs::read(&path).expect("fixture"));
            }
        }
    }
    files.sort_by_key(Vec::len);
    let requests: Vec<Value> = files.iter().map(|f| serde_json::from_slice(f).expect("JSON")).collect();
    assert!(requests.len() > 200, "the fixtures moved");
    requests
});

/// The FHIR values those requests carry: every `draftOrders` Bundle, prefetch value and entry resource.
static FHIR_VALUES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let mut seen = HashSet::new();
    let mut values = Vec::new();
    for request in REQUESTS.iter() {
        let mut add = |value: &Value| {
            if seen.insert(value.to_string()) {
                values.push(value.clone());
            }
        };
        add(&request["context"]["draftOrders"]);
        for value in request["prefetch"].as_object().into_iter().flat_map(|p| p.values()) {
            add(value);
            for entry in value["entry"].as_array().into_iter().flatten() {
                add(&entry["resource"]);
            }
        }
    }
    values.sort_by_key(|v| v.to_string().len());
    values
});

// ---------------------------------------------------------------------------------------------------------------
// Breaking JSON on purpose

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    At(usize),
}

/// The path of every value in a document, the document itself first.
fn paths(value: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(path.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(Step::Key(key.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(Step::At(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn at<'v>(value: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(value, |value, step| match step {
        Step::Key(key) => &mut value[key.as_str()],
        Step::At(i) => &mut value[*i],
    })
}

/// One change to a document; each `Index` picks a value among all of the document's values at that moment.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index),
    Replace(Index, Value),
    /// Replaces the second value by a copy of the first: a value of the right kind in the wrong place.
    Graft(Index, Index),
    Wrap(Index),
}

fn apply(document: &mut Value, edit: &Edit) {
    let all = paths(document);
    match edit {
        Edit::Delete(pick) => {
            let path = &all[pick.index(all.len())];
            if let Some((last, parent)) = path.split_last() {
                match (at(document, parent), last) {
                    (Value::Object(map), Step::Key(key)) => {
                        map.remove(key);
                    }
                    (Value::Array(items), Step::At(i)) => {
                        items.remove(*i);
                    }
                    _ => unreachable!("paths() only yields children of containers"),
                }
            }
        }
        Edit::Replace(pick, value) => *at(document, &all[pick.index(all.len())]) = value.clone(),
        Edit::Graft(from, to) => {
            let copy = at(document, &all[from.index(all.len())]).clone();
            *at(document, &all[to.index(all.len())]) = copy;
        }
        Edit::Wrap(pick) => {
            let target = at(document, &all[pick.index(all.len())]);
            *target = Value::Array(vec![target.take()]);
        }
    }
}

/// Damage done to the text after the edits.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(Index),
    SetByte(Index, u8),
    Insert(Index, &'static str),
}

impl Damage {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Damage::None => {}
            Damage::Truncate(pick) => bytes.truncate(pick.index(bytes.len() + 1)),
            Damage::SetByte(pick, byte) if !bytes.is_empty() => {
                let i = pick.index(bytes.len());
                bytes[i] = *byte;
            }
            Damage::SetByte(..) => {}
            Damage::Insert(pick, text) => {
                let i = pick.index(bytes.len() + 1);
                bytes.splice(i..i, text.bytes());
            }
        }
    }
}

/// JSON text with object keys in document order (or reversed at the top level), and the values at `repeat`
/// written twice: a key repeated in its object, an array item repeated.
fn write(value: &Value, path: &mut Vec<Step>, repeat: &HashSet<Vec<Step>>, reverse_top: bool, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            if reverse_top && path.is_empty() {
                keys.reverse();
            }
            let mut first = true;
            for key in keys {
                path.push(Step::Key(key.clone()));
                let times = if repeat.contains(path) { 2 } else { 1 };
                for _ in 0..times {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], path, repeat, reverse_top, out);
                }
                path.pop();
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            let mut first = true;
            for (i, item) in items.iter().enumerate() {
                path.push(Step::At(i));
                let times = if repeat.contains(path) { 2 } else { 1 };
                for _ in 0..times {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    write(item, path, repeat, reverse_top, out);
                }
                path.pop();
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A document broken by `edits`, with the values picked by `repeats` written twice, then damaged.
#[derive(Debug, Clone)]
struct Breakage {
    edits: Vec<Edit>,
    repeats: Vec<Index>,
    damage: Damage,
}

impl Breakage {
    fn text(&self, document: &Value, reverse_top: bool) -> Vec<u8> {
        let mut document = document.clone();
        for edit in &self.edits {
            apply(&mut document, edit);
        }
        let all = paths(&document);
        let repeat: HashSet<Vec<Step>> = self
            .repeats
            .iter()
            .map(|pick| all[pick.index(all.len())].clone())
            .collect();
        let mut text = String::new();
        write(&document, &mut Vec::new(), &repeat, reverse_top, &mut text);
        let mut bytes = text.into_bytes();
        self.damage.apply(&mut bytes);
        bytes
    }
}

/// Strings the readers branch on, and some they should not trip on.
const STRINGS: &[&str] = &[
    "",
    " ",
    CANARY,
    "null",
    "active",
    "recurrence",
    "inactive",
    "resolved",
    "refuted",
    "entered-in-error",
    "completed",
    "stopped",
    "on-hold",
    "in-progress",
    "not-done",
    "draft",
    "order",
    "plan",
    "error",
    "fatal",
    "next",
    "Bundle",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationOrder",
    "Medication",
    "Procedure",
    "ServiceRequest",
    "ProcedureRequest",
    "Patient",
    "OperationOutcome",
    "order-select",
    "order-sign",
    "ServiceRequest/dn-1",
    "#med",
    "Medication/med-1",
    "urn:uuid:0",
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.ama-assn.org/go/cpt",
    "20560",
    "231082000",
    "279039007",
    "M54.50",
    "a",
    "wk",
    "mo",
    "2026-11-23",
    "2026-11-24",
    "2026-11",
    "2026",
    "0001-01-01",
    "9999-12-31T23:59:59Z",
    "2019-02-29",
    "2019-13-45",
    "-2019",
    "+275760-09-13",
    "20",
    "chronic low back pain since 2019",
    "acute myofascial pain of the upper trapezius",
    "ibuprofen 81 mg",
    "\u{0}",
    "\u{feff}",
    "💉 ü ﬁ",
];

/// Any JSON value, leaning towards what FHIR readers meet.
fn json_value() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "resourceType",
        "entry",
        "resource",
        "fullUrl",
        "link",
        "relation",
        "url",
        "id",
        "code",
        "coding",
        "system",
        "display",
        "text",
        "status",
        "intent",
        "clinicalStatus",
        "verificationStatus",
        "onsetDateTime",
        "onsetAge",
        "onsetPeriod",
        "onsetRange",
        "onsetString",
        "abatementDateTime",
        "recordedDate",
        "birthDate",
        "value",
        "unit",
        "low",
        "high",
        "start",
        "end",
        "medicationCodeableConcept",
        "medicationReference",
        "reference",
        "contained",
        "reasonCode",
        "reasonReference",
        "bodySite",
        "issue",
        "severity",
        "taken",
        "wasNotTaken",
        "notDone",
        "dosage",
        "doseQuantity",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0.5f64),
            Just(-0.0),
            Just(1e308),
            Just(-1e308),
            Just(5e-324),
            Just(54_900.0),
            Just(1e15)
        ]
        .prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        (1usize..400).prop_map(|n| Value::from("x".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..4)
                .prop_map(|fields| { Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
        ]
    })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => any::<Index>().prop_map(Edit::Delete),
        4 => (any::<Index>(), json_value()).prop_map(|(i, v)| Edit::Replace(i, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Graft(a, b)),
        1 => any::<Index>().prop_map(Edit::Wrap),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        2 => any::<Index>().prop_map(Damage::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::SetByte(i, b)),
        1 => (any::<Index>(), prop::sample::select(&["{", "]", ",", "\"", "\\u", "null,", "\u{7f}"][..]))
            .prop_map(|(i, s)| Damage::Insert(i, s)),
    ]
}

fn breakage(damaged: bool) -> impl Strategy<Value = Breakage> {
    let damage = if damaged {
        damage().boxed()
    } else {
        Just(Damage::None).boxed()
    };
    (
        prop::collection::vec(edit(), 0..5),
        prop::collection::vec(any::<Index>(), 0..2),
        damage,
    )
        .prop_map(|(edits, repeats, damage)| Breakage { edits, repeats, damage })
}

// ---------------------------------------------------------------------------------------------------------------
// The hook request

/// One service's answer, with the random uuids blanked, so that two answers can be compared.
fn call(service: &str, body: &[u8]) -> Result<Value, String> {
    call_with(&Limits::default(), service, body)
}

/// Limits so small that broken requests meet them too.
const TINY: Limits = Limits {
    max_draft_orders: 2,
    max_cards: 1,
    max_prefetch_entries: 3,
};

fn call_with(limits: &Limits, service: &str, body: &[u8]) -> Result<Value, String> {
    let answer = prepare(&KNOWLEDGE, limits, service, body)
        .and_then(|prepared| finish(prepared, &KNOWLEDGE, TODAY, &MissingDataPolicy::default()));
    match answer {
        Ok((response, summary)) => {
            assert_eq!(summary.cards, response.cards.len());
            assert!(response.cards.len() <= limits.max_cards);
            check_cards(&response);
            let mut value = serde_json::to_value(&response).expect("cards serialise");
            blank_uuids(&mut value);
            Ok(value)
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains(CANARY), "the error quotes the request: {message}");
            Err(match error {
                HookError::MissingData(kinds, _) => format!("{message}: {kinds:?}"),
                _ => message,
            })
        }
    }
}

fn check_cards(response: &CardsResponse) {
    for card in &response.cards {
        let length = card.summary.chars().count();
        assert!(
            length > 0 && length <= 140,
            "summary of {length} characters: {}",
            card.summary
        );
        // The indicator is a `wire::Indicator`: only CDS Hooks' three values can be written.
        assert!(!card.source.label.is_empty());
    }
}

fn blank_uuids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "uuid" {
                    *child = Value::Null;
                } else {
                    blank_uuids(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_uuids),
        _ => {}
    }
}

fn request(pick: Index) -> &'static Value {
    &REQUESTS[pick.index(REQUESTS.len())]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn broken_requests_get_an_error_or_well_formed_cards(pick in any::<Index>(), breakage in breakage(true)) {
        let body = breakage.text(request(pick), false);
        for service in SERVICES {
            let _ = call(service, &body);
            let _ = call_with(&TINY, service, &body);
        }
    }

    #[test]
    fn the_prefetch_reads_the_same_in_the_requests_pass_or_after_it(pick in any::<Index>(), breakage in breakage(false)) {
        // Keys sorted: `context` before `prefetch`, so a request with a dry-needling order has its prefetch read
        // in the same pass. Reversed: `prefetch` first, kept raw and read afterwards.
        let document = request(pick);
        let in_pass = breakage.text(document, false);
        let after = breakage.text(document, true);
        for service in SERVICES {
            prop_assert_eq!(call(service, &in_pass), call(service, &after), "{}", service);
            prop_assert_eq!(call_with(&TINY, service, &in_pass), call_with(&TINY, service, &after), "{} (tiny limits)", service);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        for service in SERVICES {
            let _ = call(service, &body);
        }
    }

    #[test]
    fn json_shaped_noise_never_panics(tokens in prop::collection::vec(prop::sample::select(&[
        "{", "}", "[", "]", ",", ":", "null", "1", "-0.5e3", "\"x\"", "\"\\ud800\"", "\"hook\"", "\"order-select\"",
        "\"order-sign\"", "\"hookInstance\"", "\"context\"", "\"draftOrders\"", "\"selections\"", "\"prefetch\"",
        "\"conditions\"", "\"resourceType\"", "\"Bundle\"", "\"entry\"", "\"resource\"", "\"ServiceRequest\"",
        "\"code\"", "\"coding\"", "\"20560\"", "\"fhirAuthorization\"", "\"access_token\"",
    ][..]), 0..96)) {
        let body = tokens.concat();
        for service in SERVICES {
            let _ = call(service, body.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The FHIR reader

/// Everything the reader says about a text, in a comparable form.
fn read(contents: &Result<Contents, Unreadable>) -> Result<String, Unreadable> {
    contents
        .as_ref()
        .map(|c| format!("{:?} {} {} {:?}", c.resources, c.skipped, c.bundle, c.next))
        .map_err(|e| *e)
}

/// All three readers; a prefetch value that is not `null` reads as `parse_contents` reads it. Read with a cap on
/// the entries, a Bundle has the same number of entries in all (built or counted), at most the cap built, and
/// those built are the first of the uncapped read's.
fn read_fhir(text: &str) {
    let contents = parse_contents(text, usize::MAX);
    let _ = parse_resource(text);
    if let Some(prefetch) = parse_prefetch_value(text, usize::MAX) {
        assert_eq!(read(&prefetch), read(&contents), "{text}");
    }
    for cap in [0, 1, 2] {
        let capped = parse_contents(text, cap);
        match (&contents, &capped) {
            (Ok(full), Ok(capped)) if full.bundle => {
                assert_eq!(
                    full.resources.len() + full.skipped,
                    capped.resources.len() + capped.skipped,
                    "{text}"
                );
                assert!(capped.resources.len() <= cap, "{text}");
                assert_eq!(full.resources[..capped.resources.len()], capped.resources[..], "{text}");
            }
            (full, capped) => assert_eq!(read(full), read(capped), "cap {cap}: {text}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn broken_fhir_values_are_read_or_refused(pick in any::<Index>(), breakage in breakage(true)) {
        let value = &FHIR_VALUES[pick.index(FHIR_VALUES.len())];
        let bytes = breakage.text(value, false);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            read_fhir(text);
        }
    }

    #[test]
    fn generated_fhir_values_are_read_or_refused(value in json_value(), resource_type in prop::sample::select(&[
        "Bundle", "Condition", "MedicationStatement", "MedicationRequest", "MedicationOrder", "Medication",
        "Procedure", "ServiceRequest", "ProcedureRequest", "Patient", "OperationOutcome", "Observation",
    ][..])) {
        let mut value = value;
        if let Value::Object(map) = &mut value {
            map.insert("resourceType".into(), resource_type.into());
        }
        read_fhir(&value.to_string());
        read_fhir(&json!({"resourceType": "Bundle", "entry": [{"resource": value}]}).to_string());
    }

    #[test]
    fn arbitrary_text_is_read_or_refused(text in "\\PC{0,300}") {
        read_fhir(&text);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The JWT header and claims

const ISSUER: &str = "https://ehr.test.example";
const PATH: &str = "/cds-services/dry-needling-order-select";
const AUDIENCE: &str = "http://127.0.0.1:8080/cds-services/dry-needling-order-select";
const CLIENT_TOML: &str = r#"
public_base_url = "http://127.0.0.1:8080"

[[client]]
issuer = "https://ehr.test.example"
jwks_file = "test-jwks.json"
algorithms = ["ES384", "RS384"]
"#;

struct Keys {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    es: EncodingKey,
    rs: EncodingKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let pem = |name: &str| std::fs::read(repo("fixtures/auth").join(name)).expect("test key");
    Keys {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        http: dry_needling_cds::fetch::http_client(),
        es: EncodingKey::from_ec_pem(&pem("es384-private.pem")).expect("ES384 key"),
        rs: EncodingKey::from_rsa_pem(&pem("rs384-private.pem")).expect("RS384 key"),
    }
});

fn wall_clock() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Unpadded base64url.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token of these header and claims texts, signed with the ES384 or RS384 test key whatever the header says.
fn signed(header: &str, claims: &str, rsa: bool) -> String {
    signed_bytes(header.as_bytes(), claims.as_bytes(), rsa)
}

/// As [`signed`], for claims that need not be text.
fn signed_bytes(header: &[u8], claims: &[u8], rsa: bool) -> String {
    let message = format!("{}.{}", b64url(header), b64url(claims));
    let (key, alg) = if rsa {
        (&KEYS.rs, Algorithm::RS384)
    } else {
        (&KEYS.es, Algorithm::ES384)
    };
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    format!("{message}.{signature}")
}

/// A fresh verifier (an empty `jti` cache) for the test client, configured through `Config::parse`.
fn verify(token: &str, now: u64) -> bool {
    let config = Config::parse(CLIENT_TOML, &repo("fixtures/auth")).expect("test configuration");
    let base = config.public_base_url.clone().expect("public_base_url");
    let verifier = Verifier::new(config.clients, &base, KEYS.http.clone());
    KEYS.runtime.block_on(verifier.verify(token, PATH, now)).is_ok()
}

/// Claims and header fields: the valid value, other values of the right kind, values of the wrong kind, absent.
#[derive(Debug, Clone)]
struct TokenSpec {
    kid: Option<Value>,
    typ: Option<Value>,
    alg: &'static str,
    crit: bool,
    jku: bool,
    rsa: bool,
    iss: Option<Value>,
    aud: Option<Value>,
    /// Offsets from now, or other JSON.
    iat: Option<Result<i64, Value>>,
    exp: Option<Result<i64, Value>>,
    nbf: Option<Result<i64, Value>>,
    jti: Option<Value>,
}

fn maybe<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop_oneof![9 => s.prop_map(Some), 1 => Just(None)]
}

/// A time as an offset from now (near every bound the verifier checks, or anywhere), or other JSON.
fn time_offset() -> impl Strategy<Value = Result<i64, Value>> {
    prop_oneof![
        4 => (-1000i64..1000).prop_map(Ok),
        4 => prop::sample::select(&[-31i64, -30, -29, -1, 0, 1, 29, 30, 31, 300, 599, 600, 601, 629, 630, 631][..]).prop_map(Ok),
        1 => any::<i64>().prop_map(Ok),
        1 => prop_oneof![
            Just(json!("1800000000")),
            Just(json!(1.5e9)),
            Just(json!(-1)),
            Just(json!(null)),
            Just(json!(1e300)),
            Just(json!(u64::MAX)),
        ]
        .prop_map(Err),
    ]
}

/// One change to a valid token.
#[derive(Debug, Clone)]
enum Change {
    Kid(Option<Value>),
    Typ(Option<Value>),
    Alg(&'static str),
    Crit,
    Jku,
    /// Signed with the RS384 key (the header says so, unless another change says otherwise).
    Rsa,
    Iss(Option<Value>),
    Aud(Option<Value>),
    Iat(Option<Result<i64, Value>>),
    Exp(Option<Result<i64, Value>>),
    Nbf(Option<Result<i64, Value>>),
    Jti(Option<Value>),
}

fn change() -> impl Strategy<Value = Change> {
    let names = |others: &'static [&'static str]| {
        maybe(prop_oneof![
            3 => prop::sample::select(others).prop_map(|s| json!(s)),
            1 => json_value(),
        ])
    };
    prop_oneof![
        names(&["test-rs384", "", "remote-es384", "TEST-ES384"]).prop_map(Change::Kid),
        names(&["jwt", "JWS", "at+jwt", ""]).prop_map(Change::Typ),
        prop::sample::select(&["RS384", "ES256", "HS384", "PS384", "EdDSA", "none"][..]).prop_map(Change::Alg),
        Just(Change::Crit),
        Just(Change::Jku),
        Just(Change::Rsa),
        names(&["https://ehr.test.example/", "https://sandbox.cds-hooks.org", ""]).prop_map(Change::Iss),
        maybe(prop_oneof![
            Just(json!([AUDIENCE, "https://other.example"])),
            Just(json!("http://127.0.0.1:8080/cds-services")),
            Just(json!([])),
            json_value(),
        ])
        .prop_map(Change::Aud),
        maybe(time_offset()).prop_map(Change::Iat),
        maybe(time_offset()).prop_map(Change::Exp),
        time_offset().prop_map(|t| Change::Nbf(Some(t))),
        names(&["", " ", "x"]).prop_map(Change::Jti),
    ]
}

/// A valid token's fields, then up to three changes: most tokens are one or two changes away from valid.
fn token_spec() -> impl Strategy<Value = TokenSpec> {
    prop::collection::vec(change(), 0..4).prop_map(|changes| {
        let mut spec = TokenSpec::valid();
        for change in changes {
            match change {
                Change::Kid(v) => spec.kid = v,
                Change::Typ(v) => spec.typ = v,
                Change::Alg(v) => spec.alg = v,
                Change::Crit => spec.crit = true,
                Change::Jku => spec.jku = true,
                Change::Rsa => {
                    spec.rsa = true;
                    spec.alg = "RS384";
                    spec.kid = Some(json!("test-rs384"));
                }
                Change::Iss(v) => spec.iss = v,
                Change::Aud(v) => spec.aud = v,
                Change::Iat(v) => spec.iat = v,
                Change::Exp(v) => spec.exp = v,
                Change::Nbf(v) => spec.nbf = v,
                Change::Jti(v) => spec.jti = v,
            }
        }
        spec
    })
}

impl TokenSpec {
    /// What an EHR sends: ES384 with the test key's `kid`, five minutes of life from now.
    fn valid() -> TokenSpec {
        TokenSpec {
            kid: Some(json!("test-es384")),
            typ: Some(json!("JWT")),
            alg: "ES384",
            crit: false,
            jku: false,
            rsa: false,
            iss: Some(json!(ISSUER)),
            aud: Some(json!(AUDIENCE)),
            iat: Some(Ok(0)),
            exp: Some(Ok(300)),
            nbf: None,
            jti: Some(json!("a-jti")),
        }
    }

    fn time(value: &Option<Result<i64, Value>>, now: u64) -> Option<Value> {
        value.as_ref().map(|v| match v {
            Ok(offset) => json!((now as i64).saturating_add(*offset)),
            Err(other) => other.clone(),
        })
    }

    fn token(&self, now: u64) -> String {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), json!(self.alg));
        let fields = [("kid", &self.kid), ("typ", &self.typ)];
        for (name, value) in fields {
            if let Some(value) = value {
                header.insert(name.into(), value.clone());
            }
        }
        if self.crit {
            header.insert("crit".into(), json!(["exp"]));
        }
        if self.jku {
            header.insert("jku".into(), json!("https://ehr.test.example/jwks.json"));
        }
        let mut claims = serde_json::Map::new();
        let times = [
            ("iat", Self::time(&self.iat, now)),
            ("exp", Self::time(&self.exp, now)),
            ("nbf", Self::time(&self.nbf, now)),
        ];
        let others = [
            ("iss", self.iss.clone()),
            ("aud", self.aud.clone()),
            ("jti", self.jti.clone()),
        ];
        for (name, value) in times.into_iter().chain(others) {
            if let Some(value) = value {
                claims.insert(name.into(), value);
            }
        }
        signed(
            &Value::Object(header).to_string(),
            &Value::Object(claims).to_string(),
            self.rsa,
        )
    }

    /// Valid with a margin of two seconds on every bound, so that the clock's tick cannot matter.
    fn clearly_valid(&self) -> bool {
        let offset = |v: &Option<Result<i64, Value>>| match v {
            Some(Ok(offset)) => Some(*offset),
            _ => None,
        };
        let (leeway, longest) = (LEEWAY_SECONDS as i64, (MAX_LIFETIME_SECONDS + LEEWAY_SECONDS) as i64);
        let key_matches = if self.rsa {
            self.alg == "RS384" && self.kid == Some(json!("test-rs384"))
        } else {
            self.alg == "ES384" && self.kid == Some(json!("test-es384"))
        };
        let aud_ok = self.aud == Some(json!(AUDIENCE)) || self.aud == Some(json!([AUDIENCE, "https://other.example"]));
        let times_ok = match (offset(&self.iat), offset(&self.exp)) {
            (Some(iat), Some(exp)) => {
                iat < leeway - 2 && exp > 2 - leeway && exp < longest - 2 && exp - iat < longest - 2 && iat.abs() < 1000
            }
            _ => false,
        };
        let nbf_ok = match &self.nbf {
            None => true,
            Some(Ok(nbf)) => *nbf < leeway - 2 && nbf.abs() < 1000,
            Some(Err(_)) => false,
        };
        key_matches
            && self
                .typ
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
            && !self.crit
            && !self.jku
            && self.iss == Some(json!(ISSUER))
            && aud_ok
            && times_ok
            && nbf_ok
            && self.jti.as_ref().and_then(Value::as_str).is_some_and(|j| !j.is_empty())
    }
}

/// What an accepted token must say, read back from the token itself.
fn check_accepted(token: &str, now: u64, after: u64) {
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).expect("claims");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert!(header.typ.is_some_and(|t| t.eq_ignore_ascii_case("JWT")) && header.kid.is_some());
    assert!(header.crit.is_none() && header.jku.is_none());
    assert_eq!(claims["iss"], ISSUER);
    match &claims["aud"] {
        Value::String(aud) => assert_eq!(aud, AUDIENCE),
        Value::Array(auds) => assert!(auds.iter().any(|a| a == AUDIENCE)),
        other => panic!("accepted with aud {other}"),
    }
    assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()));
    let (now, leeway, longest) = (
        now as f64,
        LEEWAY_SECONDS as f64,
        (MAX_LIFETIME_SECONDS + LEEWAY_SECONDS) as f64,
    );
    let exp = claims["exp"].as_f64().expect("accepted without a numeric exp");
    let iat = claims["iat"].as_f64().expect("accepted without a numeric iat");
    assert!(exp + leeway >= now, "accepted after exp");
    assert!(iat <= now + leeway, "accepted before iat");
    assert!(
        exp <= now + longest && exp - iat <= longest,
        "accepted a long-lived token"
    );
    if let Some(nbf) = claims.get("nbf") {
        // jsonwebtoken reads the clock a moment after `now` was taken, and at the latest when it returned.
        assert!(
            nbf.as_f64().is_some_and(|nbf| nbf <= after as f64 + leeway),
            "accepted before nbf"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    #[test]
    fn a_token_is_accepted_only_when_its_claims_are_valid(spec in token_spec()) {
        let now = wall_clock();
        let token = spec.token(now);
        let accepted = verify(&token, now);
        // jsonwebtoken reads the clock itself, some time after `now` on a loaded machine: bound `nbf` by the clock
        // after the verification, not by a fixed allowance.
        let after = wall_clock();
        if accepted {
            check_accepted(&token, now, after);
        }
        if spec.clearly_valid() {
            prop_assert!(accepted, "refused a valid token: {:?}", spec);
        }
    }

    #[test]
    fn a_changed_token_is_refused(edits in prop::collection::vec((any::<Index>(), prop::sample::select(
        &['A', 'a', 'Q', '0', '-', '_', '.', '=', '+', '/', ' ', 'é'][..]), 0u8..3), 1..4)) {
        let now = wall_clock();
        let original = TokenSpec::valid().token(now);
        let mut token: Vec<char> = original.chars().collect();
        for (pick, c, how) in edits {
            let i = pick.index(token.len() + 1);
            match how {
                0 if i < token.len() => token[i] = c,
                1 if i < token.len() => {
                    token.remove(i);
                }
                _ => token.insert(i, c),
            }
        }
        let token: String = token.into_iter().collect();
        prop_assume!(token != original);
        prop_assert!(!verify(&token, now), "accepted a changed token: {}", token);
    }

    #[test]
    fn arbitrary_tokens_are_refused(token in prop_oneof![
        "\\PC{0,200}",
        "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,140}",
        (json_value(), json_value()).prop_map(|(h, c)| format!("{}.{}.", b64url(h.to_string().as_bytes()), b64url(c.to_string().as_bytes()))),
    ]) {
        prop_assert!(!verify(&token, wall_clock()));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The configuration file

/// An accepted configuration keeps the promises of `Config::parse`.
fn check_config(text: &str) {
    let Ok(config) = Config::parse(text, &repo("fixtures/auth")) else {
        return;
    };
    if let Some(url) = &config.public_base_url {
        assert!(!url.ends_with('/'), "{text}");
        assert!(url.starts_with("https://") || url.starts_with("http://"), "{text}");
    }
    assert!(config.clients.is_empty() || config.public_base_url.is_some(), "{text}");
    assert!(
        !config.fetch.deadline.is_zero() && config.fetch.deadline.as_secs() <= 60,
        "{text}"
    );
    assert!(config.fetch.max_pages > 0 && config.fetch.max_entries > 0 && config.fetch.max_body_bytes > 0);
    let limits = config.limits;
    assert!(
        limits.max_draft_orders > 0 && limits.max_cards > 0 && limits.max_prefetch_entries > 0,
        "{text}"
    );
    for (i, client) in config.clients.iter().enumerate() {
        assert!(
            !client.issuer.is_empty() && client.issuer.trim() == client.issuer,
            "{text}"
        );
        assert!(!client.algorithms.is_empty(), "{text}");
        assert!(
            client.algorithms.iter().all(|a| a.family() != AlgorithmFamily::Hmac),
            "{text}"
        );
        assert!(!client.keys.keys.is_empty() || client.jwks_url.is_some(), "{text}");
        assert!(config.clients[..i].iter().all(|c| c.issuer != client.issuer), "{text}");
    }
}

fn toml_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "https://cds.example.org",
                "https://cds.example.org/",
                "http://127.0.0.1:8080",
                "https://cds.example.org/base/?q=1",
                "https://cds.example.org/#f",
                "ftp://cds.example.org",
                "http://ehr.example.org",
                "https://ehr.example.org/fhir",
                "https://[::1]:8443",
                "http://localhost",
                "not a url",
                "",
                "  https://ehr.test.example  ",
                "https://ehr.test.example",
            ][..]
        )
        .prop_map(String::from),
        "\\PC{0,20}",
    ]
    .prop_map(|s| Value::String(s).to_string())
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => toml_string(),
        2 => prop::collection::vec(toml_string(), 0..3).prop_map(|items| format!("[{}]", items.join(", "))),
        2 => prop_oneof![Just(0u64), Just(1), Just(1500), Just(60_000), Just(60_001), Just(u64::MAX >> 1)]
            .prop_map(|n| n.to_string()),
        1 => prop::sample::select(&["-1", "1.5", "true", "{}", "[[]]", "9223372036854775808", "inf"][..]).prop_map(String::from),
    ]
}

/// One line of a configuration: a section header, or a key and a value (good or bad).
fn config_line() -> impl Strategy<Value = String> {
    let algorithms = prop::collection::vec(
        prop::sample::select(
            &[
                "ES384", "RS384", "ES256", "PS256", "EdDSA", "HS256", "none", "es384", "",
            ][..],
        ),
        0..3,
    )
    .prop_map(|names| {
        format!(
            "algorithms = [{}]",
            names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
        )
    });
    let jwks = prop::sample::select(
        &[
            "jwks_file = \"test-jwks.json\"",
            "jwks_file = \"remote-jwks.json\"",
            "jwks_file = \"missing.json\"",
            "jwks_file = \"README.md\"",
            "jwks_file = \".\"",
            "jwks = '{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"k\":\"c2VjcmV0\"}]}'",
            "jwks = '{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}'",
            "jwks = '{\"keys\":[]}'",
            "jwks = 'nope'",
            "jwks_url = \"https://ehr.test.example/jwks.json\"",
            "jwks_url = \"http://ehr.test.example/jwks.json\"",
        ][..],
    )
    .prop_map(String::from);
    let key = prop::sample::select(
        &[
            "public_base_url",
            "deadline_ms",
            "max_pages",
            "max_entries",
            "max_body_bytes",
            "servers",
            "open_servers",
            "issuer",
            "jwks_url",
            "tenant",
            "fhir_servers",
            "open_fhir_servers",
            "header_read_timeout_secs",
            "idle_timeout_secs",
            "max_connections",
            "max_concurrent_hooks",
            "max_draft_orders",
            "max_cards",
            "max_prefetch_entries",
            "unknown",
        ][..],
    );
    prop_oneof![
        2 => prop::sample::select(&["[fhir]", "[server]", "[limits]"][..]).prop_map(String::from),
        3 => Just("[[client]]".to_string()),
        1 => Just("[client]".to_string()),
        3 => Just(format!("issuer = \"{ISSUER}\"")),
        3 => jwks,
        3 => algorithms,
        6 => (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn assembled_configurations_are_accepted_only_when_sound(lines in prop::collection::vec(config_line(), 0..14), base in any::<bool>()) {
        let mut text = if base { "public_base_url = \"http://127.0.0.1:8080\"\n".to_string() } else { String::new() };
        text.push_str(&lines.join("\n"));
        check_config(&text);
    }

    #[test]
    fn shipped_configurations_broken_on_purpose_never_panic(pick in 0usize..2, damage in damage()) {
        let text = std::fs::read_to_string(repo(["config/example.toml", "config/sandbox.toml"][pick])).unwrap();
        let mut bytes = text.into_bytes();
        damage.apply(&mut bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check_config(text);
        }
    }

    #[test]
    fn arbitrary_text_is_not_a_configuration_that_breaks_promises(text in "\\PC{0,200}") {
        check_config(&text);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Regression tests: inputs the fuzzers or the properties above found, kept as they were found.

/// Nesting far deeper than any real document: each parser must refuse it (serde_json stops at 128 levels),
/// never overflow the stack.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = |open: &str, close: &str| format!("{}{}", open.repeat(100_000), close.repeat(100_000));
    let arrays = deep("[", "]");
    let objects = deep("{\"a\":", "}");
    for value in [&arrays, &objects] {
        read_fhir(value);
        let request = format!(
            "{{\"hook\":\"order-select\",\"hookInstance\":\"x\",\"context\":{{\"draftOrders\":{value}}},\"prefetch\":{{\"conditions\":{value}}}}}"
        );
        for service in SERVICES {
            let _ = call(service, request.as_bytes());
        }
        let token = format!("{}.{}.", b64url(value.as_bytes()), b64url(value.as_bytes()));
        assert!(!verify(&token, wall_clock()));
    }
    check_config(&format!("a = {}", deep("[", "]")));
    check_config(&format!("a = {}", deep("{b = ", "}")));
}

/// Found by the `jwt` fuzz target, whose first version verified at a fixed `now` six weeks ahead of the clock:
/// `Verifier::verify(token, path, now)` checks `iat`, the lifetime and the `jti` cache against `now`, but
/// jsonwebtoken checks `exp` and `nbf` against the wall clock (`Validation` has no "now"). So with `now` an hour
/// ahead of the clock, a token that expired 100 s before `now` is accepted; with `now` an hour behind, a live
/// token is refused. No effect while the server passes the wall clock (src/http), but `now` is a lie otherwise.
/// Fixed: `src/auth.rs` checks `exp` and `nbf` itself, against `now`, with the leeway.
#[test]
fn verify_checks_exp_against_its_now_argument() {
    let ahead = wall_clock() + 3600;
    let expired = TokenSpec {
        iat: Some(Ok(-400)),
        exp: Some(Ok(-100)),
        ..TokenSpec::valid()
    };
    assert!(
        !verify(&expired.token(ahead), ahead),
        "accepted a token that expired before `now`"
    );
    let behind = wall_clock() - 3600;
    assert!(
        verify(&TokenSpec::valid().token(behind), behind),
        "refused a token live at `now`"
    );
}

/// Found by the `jwt` fuzz target: a token whose claims are not UTF-8 (so not JSON, RFC 7519 7.2 step 10) is
/// accepted when the bad bytes sit in a claim the verifier does not read, because serde_json skips an ignored
/// string's bytes without checking them and `Claims` ignores unknown claims. Harmless (the token is signed by a
/// trusted issuer), but the RFC says to refuse it. Fixed: `src/auth.rs` reads the claims whole, as a
/// `serde_json::Value`, before anything else.
#[test]
fn claims_that_are_not_utf8_are_refused() {
    let now = wall_clock();
    let header = br#"{"alg":"ES384","typ":"JWT","kid":"test-es384"}"#;
    let claims = |note: &[u8]| {
        let mut claims = format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","iat":{now},"exp":{},"jti":"a-jti","note":""#,
            now + 300
        )
        .into_bytes();
        claims.extend_from_slice(note);
        claims.extend_from_slice(b"\"}");
        claims
    };
    assert!(
        verify(&signed_bytes(header, &claims(b"ok"), false), now),
        "refused the same token with text claims"
    );
    assert!(
        !verify(&signed_bytes(header, &claims(b"\xff\xfe"), false), now),
        "accepted claims that are not UTF-8"
    );
}
