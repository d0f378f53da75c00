//! Every guideline rule, through the real router: a fixture that makes it fire and one that shows it does not.
//! Expectations come from the guideline summary (../shared/clinical-source), not from the code.

mod common;

use common::*;
use serde_json::Value;

/// What one card must say.
struct Expect {
    indicator: &'static str,
    summary: &'static str,
    /// Phrases the detail must contain (evidence, notes).
    detail: &'static [&'static str],
    /// Phrases the detail must not contain.
    not_in_detail: &'static [&'static str],
}

const fn card(indicator: &'static str, summary: &'static str, detail: &'static [&'static str]) -> Expect {
    Expect {
        indicator,
        summary,
        detail,
        not_in_detail: &[],
    }
}

const AGAINST_CLBP: &str = "not recommended for chronic low back pain";
const NOT_FIRST_LINE: &str = "not first line";
const MYOFASCIAL_MISSING: &str = "not yet documented";
const MAY_CONSIDER: &str = "may be considered";

#[allow(clippy::too_many_lines)] // a table of cases, one per rule branch, read row by row
fn cases() -> Vec<(&'static str, Vec<Expect>)> {
    vec![
        // Rule 2: chronic low back pain / degenerative lumbar disease, whatever was tried (care is documented here).
        (
            "rules/clbp-reason-code.json",
            vec![card(
                "warning",
                AGAINST_CLBP,
                &["p = 0.09", "Grade B", "exercise therapy", "278860009"],
            )],
        ),
        (
            "rules/lumbar-degenerative-icd.json",
            vec![card("warning", AGAINST_CLBP, &["ICD-10-CM M51.36"])],
        ),
        (
            "rules/low-back-chronic-by-onset.json",
            vec![card(
                "warning",
                AGAINST_CLBP,
                &["onset 2025-01-10", "chronic (12 weeks or more)"],
            )],
        ),
        // …and does not fire for acute low back pain, which gets the first-line options including massage.
        (
            "rules/low-back-acute.json",
            vec![Expect {
                indicator: "warning",
                summary: NOT_FIRST_LINE,
                detail: &[
                    "massage, acupuncture or spinal manipulation",
                    "acute (under 6 weeks)",
                    "Acetaminophen or an NSAID",
                    "Heat therapy",
                ],
                not_in_detail: &["p = 0.09"],
            }],
        ),
        // Rule 3.
        (
            "rules/osteoarthritis.json",
            vec![card(
                "warning",
                "not recommended for osteoarthritis",
                &["Several guidelines"],
            )],
        ),
        (
            "rules/patellofemoral.json",
            vec![card(
                "warning",
                "not recommended for patellofemoral pain",
                &["no benefit"],
            )],
        ),
        (
            "rules/headache.json",
            vec![card("warning", "not recommended for headache", &["VA/DoD"])],
        ),
        // Rule 4.
        (
            "rules/neck-pain.json",
            vec![card(
                "warning",
                "manual therapy plus exercise",
                &[
                    "0.27",
                    "0.36",
                    "0.43",
                    "minimal clinically important difference",
                    "trigger-point manual therapy",
                ],
            )],
        ),
        // Rule 5: myofascial pain.
        (
            "rules/myofascial-care-documented.json",
            vec![card(
                "info",
                MAY_CONSIDER,
                &[
                    "60 hours",
                    "Ultrasound",
                    "80 %",
                    "12 weeks or less",
                    "ibuprofen 600 MG Oral Tablet (RxNorm 197806)",
                    "Pain management education",
                ],
            )],
        ),
        (
            "rules/myofascial-no-analgesic.json",
            vec![Expect {
                indicator: "warning",
                summary: MYOFASCIAL_MISSING,
                detail: &[
                    "**Not documented**\n\n- Acetaminophen or an NSAID",
                    "Pain management education",
                ],
                not_in_detail: &["- Heat therapy\n"],
            }],
        ),
        (
            "rules/myofascial-low-back-no-heat.json",
            vec![card(
                "warning",
                MYOFASCIAL_MISSING,
                &["**Not documented**\n\n- Heat therapy"],
            )],
        ),
        (
            "rules/myofascial-low-back-with-heat.json",
            vec![card("info", MAY_CONSIDER, &["Heat therapy: Heating pad at home"])],
        ),
        (
            "rules/myofascial-chronic.json",
            vec![card(
                "warning",
                "not recommended for chronic pain",
                &["acute or subacute myofascial pain"],
            )],
        ),
        (
            "rules/medications-that-do-not-count.json",
            vec![Expect {
                indicator: "warning",
                summary: MYOFASCIAL_MISSING,
                detail: &["**Not documented**\n\n- Acetaminophen or an NSAID"],
                not_in_detail: &["oxycodone", "dextromethorphan", "aspirin", "Hydrocodone"],
            }],
        ),
        // Rule 6.
        (
            "rules/no-indication-no-care.json",
            vec![card(
                "warning",
                NOT_FIRST_LINE,
                &[
                    "Conservative care to try first",
                    "No condition on the order or in the record",
                ],
            )],
        ),
        (
            // No indication at all is not permission, whatever care is documented.
            "rules/no-indication-care-documented.json",
            vec![card(
                "warning",
                "no qualifying indication recorded",
                &["acetaminophen 500 MG Oral Tablet (RxNorm 198440), on the medication list"],
            )],
        ),
        // Several candidates: the most restrictive wins and every candidate is named; resolved and refuted ones are not.
        (
            "rules/most-restrictive-wins.json",
            vec![Expect {
                indicator: "warning",
                summary: "not recommended for osteoarthritis",
                detail: &["Osteoarthritis of knee", "Neck pain"],
                not_in_detail: &["Chronic low back pain"],
            }],
        ),
        (
            "rules/refuted-condition-ignored.json",
            vec![Expect {
                indicator: "warning",
                summary: "manual therapy plus exercise",
                detail: &[],
                not_in_detail: &["Chronic low back pain"],
            }],
        ),
        (
            "rules/reason-reference.json",
            vec![Expect {
                indicator: "warning",
                summary: AGAINST_CLBP,
                detail: &["reason on the order"],
                not_in_detail: &["Neck pain"],
            }],
        ),
        (
            "rules/body-site-low-back.json",
            vec![Expect {
                indicator: "warning",
                summary: NOT_FIRST_LINE,
                detail: &["Low back pain, unspecified", "massage"],
                not_in_detail: &["Neck pain"],
            }],
        ),
        // Which orders count, and which are assessed.
        // A local orderable named for the trapezius is dry needling of the neck: the knee osteoarthritis on the
        // problem list is another region and does not decide it.
        (
            "rules/local-code-text.json",
            vec![Expect {
                indicator: "warning",
                summary: "manual therapy plus exercise",
                detail: &["trapezius"],
                not_in_detail: &["Osteoarthritis"],
            }],
        ),
        ("rules/not-dry-needling-exercise.json", vec![]),
        ("rules/not-dry-needling-acupuncture.json", vec![]),
        ("rules/not-dry-needling-trigger-point-injection.json", vec![]),
        ("rules/unselected-dry-needling.json", vec![]),
        (
            "rules/order-sign-two-orders.json",
            vec![
                card("warning", "manual therapy plus exercise", &[]),
                card("warning", AGAINST_CLBP, &[]),
            ],
        ),
        // Prefetch states that still allow a verdict.
        (
            "rules/prefetch-absent-reason-decides.json",
            vec![card("warning", AGAINST_CLBP, &["could not be checked"])],
        ),
        (
            "rules/prefetch-nulls.json",
            vec![card("warning", NOT_FIRST_LINE, &["None found in the record"])],
        ),
        (
            "rules/prefetch-medications-missing-but-decided.json",
            vec![card(
                "warning",
                MYOFASCIAL_MISSING,
                &[
                    "- Self-care education and activity modification\n",
                    "medication lists, prescriptions unavailable",
                ],
            )],
        ),
        (
            "rules/prefetch-malformed-entry.json",
            vec![card("warning", AGAINST_CLBP, &["2 record entries could not be read"])],
        ),
        // Older versions and the sandbox's shapes.
        (
            "rules/dstu2-shapes.json",
            vec![card("warning", "not recommended for osteoarthritis", &[])],
        ),
        ("rules/sandbox-shapes.json", vec![card("warning", AGAINST_CLBP, &[])]),
        ("rules/sandbox-reclick.json", vec![]),
        // Real public patients (../shared/fhir-samples), converted by fixtures/tools/make_real_fixtures.py.
        (
            "real/clbp-neck-ibuprofen.order-select.json",
            vec![card("warning", AGAINST_CLBP, &["Chronic neck pain"])],
        ),
        (
            "real/clbp-neck-ibuprofen.order-sign.json",
            vec![card("warning", AGAINST_CLBP, &[])],
        ),
        (
            "real/clbp-neck-tylenol.order-select.json",
            vec![card("warning", AGAINST_CLBP, &["2020-09-03"])],
        ),
        (
            "real/oa-knee-naproxen.order-select.json",
            vec![card("warning", "not recommended for osteoarthritis", &[])],
        ),
        (
            "real/chauncey-johnston-oa-knee.order-sign.json",
            vec![card("warning", "not recommended for osteoarthritis", &[])],
        ),
        (
            "real/jacob-larson-migraine.order-select.json",
            vec![card("warning", "not recommended for headache", &["migraine"])],
        ),
        (
            "real/brenda-jackson-low-back.order-select.json",
            vec![card(
                "warning",
                AGAINST_CLBP,
                &["ICD-10-CM M54.5", "on the problem list since 2013-02-27"],
            )],
        ),
        (
            "real/jacki-feil-chronic-pain.order-sign.json",
            vec![card("warning", "not recommended for chronic pain", &[])],
        ),
    ]
}

#[tokio::test]
async fn every_rule_fires_where_it_should_and_nowhere_else() {
    let mut failures = Vec::new();
    for (file, expected) in cases() {
        let body = fixture(file);
        let reply = post(path_for(&body), body).await;
        if reply.status != 200 {
            failures.push(format!("{file}: status {}", reply.status));
            continue;
        }
        let json = reply.json();
        let cards = json["cards"].as_array().expect("cards array");
        if cards.len() != expected.len() {
            failures.push(format!("{file}: {} cards, expected {}", cards.len(), expected.len()));
            continue;
        }
        for (card, expect) in cards.iter().zip(&expected) {
            let summary = card["summary"].as_str().unwrap_or_default();
            let detail = card["detail"].as_str().unwrap_or_default();
            if card["indicator"] != expect.indicator {
                failures.push(format!(
                    "{file}: indicator {}, expected {}",
                    card["indicator"], expect.indicator
                ));
            }
            if !summary.contains(expect.summary) {
                failures.push(format!("{file}: summary {summary:?} lacks {:?}", expect.summary));
            }
            for phrase in expect.detail {
                if !detail.contains(phrase) {
                    failures.push(format!("{file}: detail lacks {phrase:?}\n{detail}"));
                }
            }
            for phrase in expect.not_in_detail {
                if detail.contains(phrase) {
                    failures.push(format!("{file}: detail should not mention {phrase:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Missing data that the verdict needs: 412 with an OperationOutcome naming it.
#[tokio::test]
async fn missing_data_answers_412_naming_it() {
    let cases: [(&str, &[&str]); 4] = [
        ("rules/prefetch-absent-no-reason.json", &["Condition", "`conditions`"]),
        ("rules/prefetch-conditions-outcome.json", &["Condition"]),
        ("rules/prefetch-conditions-outcome-entry.json", &["Condition"]),
        (
            "rules/prefetch-medications-missing-undecided.json",
            &["MedicationStatement", "MedicationRequest"],
        ),
    ];
    for (file, names) in cases {
        let body = fixture(file);
        let reply = post(path_for(&body), body).await;
        assert_eq!(reply.status, 412, "{file}");
        let json = reply.json();
        assert_eq!(json["resourceType"], "OperationOutcome", "{file}");
        let text = json["issue"].to_string();
        for name in names {
            assert!(text.contains(name), "{file}: {text}");
        }
        assert!(
            !text.contains("Procedure data"),
            "{file}: procedures were available: {text}"
        );
    }
}

/// The structure the CDS Hooks 2.0 spec requires of every card the service can produce.
#[tokio::test]
async fn every_card_is_conformant() {
    let mut seen_summaries = std::collections::BTreeSet::new();
    for (file, _) in cases() {
        let body = fixture(file);
        let json = post(path_for(&body), body).await.json();
        for card in json["cards"].as_array().unwrap() {
            check_card(file, card);
            seen_summaries.insert(
                card["summary"]
                    .as_str()
                    .unwrap()
                    .split(" (")
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    // Nearly every card template is reachable from the rule fixtures (the review set reaches the rest).
    assert!(seen_summaries.len() >= 10, "{seen_summaries:#?}");
}

fn check_card(file: &str, card: &Value) {
    let uuid = card["uuid"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{file}: uuid");
    assert!(
        card["summary"].as_str().unwrap().chars().count() < 140,
        "{file}: summary too long"
    );
    assert!(
        ["info", "warning", "critical"].contains(&card["indicator"].as_str().unwrap()),
        "{file}"
    );
    assert!(
        card["source"]["label"].as_str().is_some_and(|l| !l.is_empty()),
        "{file}: source.label"
    );
    assert!(card["source"]["topic"]["code"].is_string(), "{file}: source.topic");
    no_empty_values(file, card);
    if let Some(suggestions) = card["suggestions"].as_array() {
        assert_eq!(card["selectionBehavior"], "at-most-one", "{file}");
        for s in suggestions {
            assert!(
                uuid::Uuid::parse_str(s["uuid"].as_str().unwrap()).is_ok(),
                "{file}: suggestion uuid"
            );
            assert!(s["label"].is_string(), "{file}");
            for action in s["actions"].as_array().unwrap() {
                assert!(action["description"].is_string(), "{file}");
                match action["type"].as_str().unwrap() {
                    "delete" => assert!(
                        action["resourceId"].as_str().unwrap().starts_with("ServiceRequest/")
                            || action["resourceId"].as_str().unwrap().starts_with("ProcedureRequest/"),
                        "{file}"
                    ),
                    "create" => assert_eq!(action["resource"]["resourceType"], "ServiceRequest", "{file}"),
                    other => panic!("{file}: unexpected action {other}"),
                }
            }
        }
    } else {
        assert!(card.get("selectionBehavior").is_none(), "{file}");
    }
    if card["indicator"] == "warning" {
        for reason in card["overrideReasons"].as_array().unwrap() {
            assert_eq!(
                reason["system"],
                "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
            );
            assert!(reason["display"].is_string());
        }
    }
    assert!(
        !card["detail"].as_str().unwrap().contains("http"),
        "{file}: no links in detail"
    );
}

/// CDS Hooks: absent optional values are omitted, never null, "" , [] or {}.
fn no_empty_values(file: &str, value: &Value) {
    match value {
        Value::Null => panic!("{file}: null in card"),
        Value::String(s) => assert!(!s.is_empty(), "{file}: empty string"),
        Value::Array(items) => {
            assert!(!items.is_empty(), "{file}: empty array");
            items.iter().for_each(|v| no_empty_values(file, v));
        }
        Value::Object(map) => {
            assert!(!map.is_empty(), "{file}: empty object");
            map.values().for_each(|v| no_empty_values(file, v));
        }
        _ => {}
    }
}

/// The neck-pain card offers the guideline's alternative as real orders for this patient.
#[tokio::test]
async fn neck_pain_suggests_manual_therapy_and_exercise_orders() {
    let body = fixture("rules/neck-pain.json");
    let json = post(SELECT, body).await.json();
    let suggestion = &json["cards"][0]["suggestions"][0];
    assert_eq!(suggestion["isRecommended"], true);
    let actions = suggestion["actions"].as_array().unwrap();
    assert_eq!(actions[0]["type"], "delete");
    assert_eq!(actions[0]["resourceId"], "ServiceRequest/dn-1");
    let codes: Vec<&str> = actions[1..]
        .iter()
        .map(|a| a["resource"]["code"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["97140", "97110"]);
    for action in &actions[1..] {
        assert_eq!(action["resource"]["subject"]["reference"], "Patient/rule-patient");
        assert_eq!(action["resource"]["reasonCode"][0]["coding"][0]["code"], "81680005");
        // fhir-sdk's R4 model accepts what we suggest.
        serde_json::from_value::<fhir_sdk::r4b::resources::ServiceRequest>(action["resource"].clone())
            .expect("valid R4");
    }
}

/// The prefetch is read in the request's own pass when `context` (with a dry-needling order) comes before it,
/// and afterwards otherwise. Both paths must give the same answer for every fixture, 412s and notes included.
#[tokio::test]
async fn prefetch_before_or_after_context_gives_the_same_answer() {
    let mut compared = 0;
    for dir in ["rules", "real"] {
        let full = format!("{}/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(full).unwrap() {
            let file = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            if !file.ends_with(".json") {
                continue;
            }
            let body = fixture(&file);
            let Value::Object(mut request) = serde_json::from_slice::<Value>(&body).unwrap() else {
                panic!("{file}")
            };
            let Some(prefetch) = request.remove("prefetch") else {
                continue;
            };
            let rest = Value::Object(request.clone()).to_string();
            let prefetch_first = format!(r#"{{"prefetch":{prefetch},{}"#, &rest[1..]);
            let prefetch_last = format!(r#"{},"prefetch":{prefetch}}}"#, &rest[..rest.len() - 1]);
            assert!(prefetch_last.find("\"context\"") < prefetch_last.find("\"prefetch\""));
            let path = path_for(&body);
            let (first, last) = (post(path, prefetch_first).await, post(path, prefetch_last).await);
            assert_eq!(first.status, last.status, "{file}");
            assert_eq!(without_uuids(first.json()), without_uuids(last.json()), "{file}");
            compared += 1;
        }
    }
    assert!(compared > 40, "{compared}");
}

/// The suggested orders carry the condition that decided the card when the dry-needling order has no reason
/// codes, and an alternative already drafted beside the order (order-sign) is not suggested again.
#[tokio::test]
async fn suggestions_keep_the_indication_and_skip_what_is_already_drafted() {
    let mut request: Value = serde_json::from_slice(&fixture("rules/neck-pain.json")).unwrap();
    let order = &mut request["context"]["draftOrders"]["entry"][0]["resource"];
    order.as_object_mut().unwrap().remove("reasonCode");
    order["reasonReference"] = serde_json::json!([{"reference": "Condition/neck"}]);
    let json = post(SELECT, request.to_string()).await.json();
    let actions = json["cards"][0]["suggestions"][0]["actions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 3, "{actions:#?}");
    for action in &actions[1..] {
        assert_eq!(action["resource"]["reasonReference"][0]["reference"], "Condition/neck");
    }

    // order-sign with manual therapy already drafted: only exercise is suggested with the replacement.
    request["hook"] = "order-sign".into();
    let manual_therapy = serde_json::json!({"resource": {"resourceType": "ServiceRequest", "id": "mt", "status": "draft",
        "intent": "order", "subject": {"reference": "Patient/rule-patient"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97140", "display": "Manual therapy"}]}}});
    request["context"]["draftOrders"]["entry"]
        .as_array_mut()
        .unwrap()
        .push(manual_therapy);
    let json = post(SIGN, request.to_string()).await.json();
    let codes: Vec<&str> = json["cards"][0]["suggestions"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["resource"]["code"]["coding"][0]["code"].as_str())
        .collect();
    assert_eq!(codes, ["97110"]);
}
