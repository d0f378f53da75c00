//! Invariants of the terminology and of care, checked on generated inputs (issue 21): a concept's meaning does
//! not depend on the order of its codings, and adding a coding never removes another's; every ICD-10-CM code of
//! the chapters the guideline touches is classified; care that states a site or a route counts only for it; and
//! no card summary carries caller markup or control characters, whatever the record says.

mod common;

use common::*;
use dry_needling_cds::assess::care::{HeatRequirement, check_care};
use dry_needling_cds::assess::concept::{Kind, Regions, classify, regions};
use dry_needling_cds::content::Knowledge;
use dry_needling_cds::record::{
    Availability, Coding, Concept, DataKind, DateSpan, Medication, MedicationSource, PatientRecord, Procedure,
};
use proptest::prelude::*;
use serde_json::json;
use time::macros::date;

const SCT: &str = "http://snomed.info/sct";
const ICD: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const LOCAL: &str = "urn:oid:1.2.840.114350.1.13.5325.1.7.2.696871";

fn knowledge() -> &'static Knowledge {
    static K: std::sync::OnceLock<Knowledge> = std::sync::OnceLock::new();
    K.get_or_init(|| Knowledge::embedded().expect("embedded content"))
}

fn coding(system: &str, code: &str, display: &str) -> Coding {
    Coding {
        system: system.into(),
        code: code.into(),
        display: Some(display.into()),
    }
}

/// Codings from every kind of set, exclusions and history among them, and codes no set holds.
fn codings() -> Vec<Coding> {
    vec![
        coding(SCT, "279039007", "Low back pain (finding)"),
        coding(ICD, "M54.50", "Low back pain, unspecified"),
        coding(SCT, "9121000119106", "Low back pain in pregnancy (finding)"),
        coding(ICD, "M54.51", "Vertebrogenic low back pain"),
        coding(ICD, "M79.11", "Myalgia of mastication muscle"),
        coding(ICD, "M77.11", "Lateral epicondylitis, right elbow"),
        coding(
            ICD,
            "Z82.69",
            "Family history of other diseases of the musculoskeletal system",
        ),
        coding(SCT, "203082005", "Fibromyalgia (disorder)"),
        coding(ICD, "M54.6", "Dolor en la columna dorsal"),
        coding(SCT, "279041008", "Myofascial pain syndrome of lower back (disorder)"),
        coding(LOCAL, "12345", "Neck pain"),
        coding(SCT, "38341003", "Hypertensive disorder (disorder)"),
        coding(
            ICD,
            "O26.892",
            "Other specified pregnancy related conditions, second trimester",
        ),
    ]
}

fn concept(picks: &[usize]) -> Concept {
    let all = codings();
    Concept {
        codings: picks.iter().map(|i| all[i % all.len()].clone()).collect(),
        text: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_order_of_codings_does_not_change_the_meaning(picks in prop::collection::vec(0usize..13, 1..5), rotate in 0usize..5) {
        let terms = &knowledge().terminology;
        let a = concept(&picks);
        let mut b = a.clone();
        let n = b.codings.len();
        b.codings.rotate_left(rotate % n);
        b.codings.reverse();
        prop_assert_eq!(classify(&a, terms), classify(&b, terms));
    }

    #[test]
    fn adding_a_coding_never_removes_another_codings_meaning(picks in prop::collection::vec(0usize..13, 1..4), extra in 0usize..13) {
        let terms = &knowledge().terminology;
        let before = classify(&concept(&picks), terms);
        let mut more = picks.clone();
        more.push(extra);
        let after = classify(&concept(&more), terms);
        for kind in before.kinds.iter() {
            prop_assert!(after.kinds.has(kind), "{:?} lost {:?} when {:?} was added", picks, kind, extra);
        }
        prop_assert!(!before.says_chronic || after.says_chronic);
    }
}

#[test]
fn exclusions_and_history_remove_only_their_own_meaning() {
    let terms = &knowledge().terminology;
    // Low back pain in pregnancy (an exclusion) coded with M54.50 is still low back pain.
    let m = classify(&concept(&[2, 1, 12]), terms);
    assert!(m.kinds.has(Kind::LowBackPain), "{m:?}");
    // A family history code alone names no condition of the patient; typed history neither.
    assert!(classify(&concept(&[6]), terms).kinds.is_empty());
    let typed = Concept {
        codings: vec![],
        text: Some("Family history of fibromyalgia (mother)".into()),
    };
    assert!(classify(&typed, terms).kinds.is_empty());
    // "History of" later in the text does not hide the condition.
    let later = Concept {
        codings: vec![],
        text: Some("Low back pain, history of lumbar fusion".into()),
    };
    assert!(classify(&later, terms).kinds.has(Kind::LowBackPain));
    // A code places its concept whatever the display's language.
    assert!(!regions(&concept(&[8]), terms).is_empty());
    assert!(!regions(&concept(&[8]), terms).low_back());
}

/// Every ICD-10-CM code of the chapters the guideline touches is in the generated table with exactly one kind
/// (or "not addressed"), and the table holds nothing else.
#[test]
fn every_icd10cm_code_of_the_chapters_is_classified() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/cards/valuesets/icd10cm.csv");
    let text = std::fs::read_to_string(path).expect("icd10cm.csv");
    let mut kinds: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    for row in reader.records() {
        let row = row.expect("a row");
        let (set, code) = (&row[0], row[2].to_string());
        if !set.starts_with("site.") {
            *kinds.entry(code).or_default() += 1;
        }
    }
    let in_scope = |code: &str| {
        let block = &code[..3];
        block.starts_with('M')
            || ("G43".."G45").contains(&block)
            || block == "G89"
            || ["S13", "S16", "S23", "S29", "S33", "S39"].contains(&block)
            || ("Z80".."Z88").contains(&block)
    };
    assert!(kinds.len() > 9_000, "{} codes", kinds.len());
    for (code, n) in &kinds {
        assert!(in_scope(code), "{code} is outside the classified chapters");
        assert_eq!(*n, 1, "{code} has {n} kinds");
    }
    // The whole of each block is there, e.g. every M54 code and every Z82 code.
    for code in [
        "M54.50", "M54.51", "M96.1", "M79.11", "M77.11", "M72.2", "G43.909", "G89.29", "Z82.69", "S39.012A",
    ] {
        assert!(kinds.contains_key(code), "{code}");
    }
}

fn day(d: time::Date) -> Option<DateSpan> {
    Some(DateSpan::day(d))
}

fn heat(text: &str, site: Option<&str>) -> Procedure {
    Procedure {
        id: None,
        code: Concept {
            codings: vec![],
            text: Some(text.into()),
        },
        status: Some("completed".into()),
        not_done: false,
        date: day(date!(2026 - 11 - 10)),
        until: None,
        body_sites: site
            .map(|s| Concept {
                codings: vec![],
                text: Some(s.into()),
            })
            .into_iter()
            .collect(),
    }
}

fn nsaid(text: &str, route: Option<&str>, site: Option<&str>) -> Medication {
    let typed = |t: &str| Concept {
        codings: vec![],
        text: Some(t.into()),
    };
    Medication {
        id: None,
        source: MedicationSource::Request,
        code: typed(text),
        medication_reference: None,
        status: Some("active".into()),
        intent: Some("order".into()),
        taken: None,
        not_taken: false,
        date: day(date!(2026 - 11 - 10)),
        asserted_only: false,
        until: None,
        routes: route.map(typed).into_iter().collect(),
        sites: site.map(typed).into_iter().collect(),
    }
}

fn record(medications: Vec<Medication>, procedures: Vec<Procedure>) -> PatientRecord {
    let mut record = PatientRecord {
        medications,
        procedures,
        ..PatientRecord::default()
    };
    for kind in DataKind::ALL {
        record.set_availability(kind, Availability::Present);
    }
    record
}

fn pain(text: &str) -> Regions {
    regions(
        &Concept {
            codings: vec![],
            text: Some(text.into()),
        },
        &knowledge().terminology,
    )
}

const SITES: [&str; 8] = [
    "lower back",
    "right knee",
    "left shoulder",
    "neck",
    "thoracic spine",
    "right elbow",
    "left heel",
    "jaw",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Heat given at one site counts for pain of that site, and for pain elsewhere only when it names no site.
    #[test]
    fn care_that_states_a_site_counts_only_for_it(care_site in 0usize..8, pain_site in 0usize..8, sited in any::<bool>()) {
        let terms = &knowledge().terminology;
        let site = sited.then_some(SITES[care_site]);
        let r = record(vec![], vec![heat("Hot pack", site)]);
        let check = check_care(&r, HeatRequirement::LowBack, pain(SITES[pain_site]), date!(2026 - 10 - 01), date!(2026 - 11 - 23), terms);
        let counted = check.heat.evidence.iter().any(|e| e.not_counted.is_none());
        let meets = pain(SITES[care_site]).overlaps(pain(SITES[pain_site]));
        prop_assert_eq!(counted, !sited || meets);
        // The same analgesic applied to a site.
        let r = record(vec![nsaid("diclofenac 1 % topical gel", None, site)], vec![]);
        let check = check_care(&r, HeatRequirement::NotRequired, pain(SITES[pain_site]), date!(2026 - 10 - 01), date!(2026 - 11 - 23), terms);
        let counted = check.analgesic.evidence.iter().any(|e| e.not_counted.is_none());
        prop_assert_eq!(counted, !sited || meets);
    }

    /// An NSAID by an eye, ear or nose route, or in such a form, is never an analgesic trial; by mouth or on the
    /// skin it is.
    #[test]
    fn only_routes_that_treat_muscle_pain_count(route in 0usize..8) {
        let terms = &knowledge().terminology;
        let routes = [
            ("Ophthalmic route", false), ("Otic", false), ("Nasal route", false), ("Irrigation", false),
            ("Oral route", true), ("Topical route", true), ("Intramuscular route", true), ("Transdermal", true),
        ];
        let (name, counts) = routes[route];
        let r = record(vec![nsaid("ketorolac", Some(name), None)], vec![]);
        let check = check_care(&r, HeatRequirement::NotRequired, pain("thoracic spine"), date!(2026 - 10 - 01), date!(2026 - 11 - 23), terms);
        prop_assert_eq!(check.analgesic.evidence.iter().any(|e| e.not_counted.is_none()), counts, "{}", name);
    }
}

/// Whatever markup, controls or links a record's text carries, no summary carries them, and no quoted link
/// becomes a Markdown link in the detail.
#[tokio::test]
async fn no_summary_carries_caller_markup_or_controls() {
    let hostile = [
        "<b>Chronic</b> neck pain",
        "**Myofascial** pain\nof the __lower back__",
        "Low back pain \u{202E}kcab wol\u{202C} [click](https://evil.example) www.evil.example",
        "<img src=x onerror=alert(1)> myofascial pain, lumbar",
        "Myofascial pain `code` ~~struck~~ # heading | table",
    ];
    for text in hostile {
        let body = json!({
            "hook": "order-select",
            "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {
                "userId": "Practitioner/1", "patientId": "p1",
                "selections": ["ServiceRequest/dn"],
                "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
                    "resourceType": "ServiceRequest", "id": "dn", "status": "draft", "intent": "order",
                    "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "20560"}]},
                    "subject": {"reference": "Patient/p1"},
                    "reasonCode": [{"text": text}]
                }}]}
            },
            "prefetch": {"conditions": null, "medicationStatements": null, "medicationRequests": null, "procedures": null}
        });
        let reply = post("/cds-services/dry-needling-order-select", body.to_string()).await;
        assert_eq!(reply.status.as_u16(), 200, "{text}");
        let json = reply.json();
        for card in json["cards"].as_array().expect("cards") {
            let summary = card["summary"].as_str().unwrap_or_default();
            assert!(summary.chars().count() < 140, "{summary}");
            for bad in ["<", "**", "__", "`", "~~", "](", "\n", "\u{202E}"] {
                assert!(!summary.contains(bad), "{bad:?} in summary {summary:?}");
            }
            assert!(!summary.chars().any(char::is_control), "{summary:?}");
            let detail = card["detail"].as_str().unwrap_or_default();
            assert!(!detail.contains("](https://evil"), "{detail}");
            assert!(!detail.contains("<img"), "{detail}");
            assert!(
                !detail.contains("https://evil") && !detail.contains("www.evil"),
                "{detail}"
            );
        }
    }
}

/// A neck card for a patient whose manual therapy was done last week says so, does not tell the clinician to
/// order it, and offers only what is missing, under a label that says so.
#[tokio::test]
async fn the_neck_card_acknowledges_manual_therapy_already_done() {
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture("review/acute-cervicalgia-icd-full-care.json")).expect("json");
    let entry = json!({"resource": {"resourceType": "Procedure", "id": "mt1", "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97140",
            "display": "Manual therapy techniques"}]},
        "subject": {"reference": "Patient/x"}, "performedDateTime": "2026-11-16"}});
    let procedures = &mut body["prefetch"]["procedures"];
    match procedures["entry"].as_array_mut() {
        Some(entries) => entries.push(entry),
        None => procedures["entry"] = json!([entry]),
    }
    let reply = post("/cds-services/dry-needling-order-select", body.to_string()).await;
    let json = reply.json();
    let card = &json["cards"][0];
    assert_eq!(
        card["extension"]["dry-needling-cds-card"],
        "neck-pain-prefer-manual-therapy"
    );
    let detail = card["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("**Manual therapy is already drafted or was done"),
        "{detail}"
    );
    assert!(!detail.contains("Order manual therapy"), "{detail}");
    let labels: Vec<&str> = card["suggestions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert_eq!(
        labels,
        [
            "Replace dry needling with therapeutic exercise",
            "Remove the dry-needling order"
        ]
    );
}

/// However much text a record carries, an answer quotes a bounded amount of it: 20 orders whose reasons are
/// 30,000 characters long (half of them neck pain, whose cards suggest orders that carry the reason over), against 300 conditions of 2,000 characters each (about 1.2 MB of caller text),
/// give an answer of at most a few hundred KiB (it was 28 MB for a 710 KB record before quoting was bounded).
#[tokio::test]
async fn an_answer_quotes_a_bounded_amount_of_the_record() {
    let orders: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            json!({"resource": {"resourceType": "ServiceRequest", "id": format!("dn{i}"), "status": "draft",
                "intent": "order", "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "20560"}]},
                "reasonCode": [{"text": format!("{} pain {}", if i % 2 == 0 { "myofascial" } else { "neck" },
                    "x".repeat(30_000))}]}})
        })
        .collect();
    let conditions: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            json!({"resource": {"resourceType": "Condition", "id": format!("c{i}"),
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"text": format!("myofascial pain {i} {}", "y".repeat(2_000))},
                "onsetDateTime": "2026-11-01"}})
        })
        .collect();
    let body = json!({
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2eb",
        "context": {"userId": "Practitioner/1", "patientId": "p1",
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": orders}},
        "prefetch": {
            "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": conditions},
            "medicationStatements": null, "medicationRequests": null, "procedures": null}
    })
    .to_string();
    assert!(body.len() > 1_000_000, "{}", body.len());
    let reply = post("/cds-services/dry-needling-order-sign", body).await;
    assert_eq!(reply.status.as_u16(), 200);
    let answer = reply.json().to_string();
    assert_eq!(reply.json()["cards"].as_array().map(Vec::len), Some(20));
    assert!(answer.len() < 400 * 1024, "the answer is {} bytes", answer.len());
}
