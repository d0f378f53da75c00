//! Invariants of the guideline that must hold whatever the record says, checked on generated records
//! (proptest): more evidence of chronicity, less evidence of care, or older dates never make an answer more
//! permissive; the same meaning in another code system gives the same answer; an unknown duration never
//! reaches a permissive card; every card meets CDS Hooks 2.0; and whatever the missing-data policy, the card it
//! gives instead of a 412 is never more permissive than the 412.
//!
//! Generated dates are never after today: a future date is no evidence at all, so moving it into the past
//! can rightly add evidence, and the "earlier" invariant is about the record seen later, not about plans.

use dry_needling_cds::Knowledge;
use dry_needling_cds::assess::{EpisodeLength, Stance, Verdict, assess, stance};
use dry_needling_cds::record::{
    Availability, Coding, Concept, Condition, DataKind, DateSpan, Medication, MedicationSource, Onset, Order,
    PatientRecord, Procedure,
};
use dry_needling_cds::render::{RequestFacts, render_card};
use dry_needling_cds::service::{HookError, MissingDataAnswer, MissingDataPolicy, answer};
use proptest::prelude::*;
use std::sync::LazyLock;
use time::{Date, Duration};

const TODAY: Date = time::macros::date!(2026 - 11 - 23);
static KNOWLEDGE: LazyLock<Knowledge> = LazyLock::new(|| Knowledge::embedded().expect("embedded content"));

const SCT: &str = "http://snomed.info/sct";
const ICD: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const RX: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const CPT: &str = "http://www.ama-assn.org/go/cpt";

fn coded(system: &str, code: &str, display: &str) -> Concept {
    Concept {
        codings: vec![Coding {
            system: system.into(),
            code: code.into(),
            display: Some(display.into()),
        }],
        text: None,
    }
}

fn typed(text: &str) -> Concept {
    Concept {
        codings: vec![],
        text: Some(text.into()),
    }
}

/// Meanings, each as SNOMED CT, ICD-10-CM (where one code means exactly that) and typed text.
fn meanings() -> Vec<Vec<Concept>> {
    vec![
        vec![
            coded(SCT, "279039007", "Low back pain (finding)"),
            coded(ICD, "M54.50", "Low back pain, unspecified"),
            typed("low back pain"),
        ],
        vec![
            coded(SCT, "278860009", "Chronic low back pain (finding)"),
            typed("Chronic low back pain"),
        ],
        vec![
            coded(SCT, "726531007", "Myofascial pain syndrome (disorder)"),
            typed("myofascial pain syndrome"),
        ],
        vec![
            coded(SCT, "279041008", "Myofascial pain syndrome of lower back (disorder)"),
            typed("myofascial pain syndrome of lower back"),
        ],
        vec![
            coded(SCT, "81680005", "Neck pain (finding)"),
            coded(ICD, "M54.2", "Cervicalgia"),
            typed("neck pain"),
        ],
        vec![
            coded(SCT, "239873007", "Osteoarthritis of knee (disorder)"),
            typed("osteoarthritis of knee"),
        ],
        vec![coded(SCT, "37796009", "Migraine (disorder)"), typed("migraine")],
        vec![
            coded(SCT, "203082005", "Fibromyalgia (disorder)"),
            coded(ICD, "M79.7", "Fibromyalgia"),
            typed("fibromyalgia"),
        ],
        vec![
            coded(SCT, "38341003", "Hypertensive disorder (disorder)"),
            typed("hypertension"),
        ],
    ]
}

fn day(days_ago: i64) -> DateSpan {
    DateSpan::day(TODAY - Duration::days(days_ago))
}

#[derive(Debug, Clone)]
struct ConditionSpec {
    meaning: usize,
    variant: usize,
    onset_days_ago: Option<i64>,
    recorded_days_ago: Option<i64>,
    status: Option<&'static str>,
}

fn condition_spec() -> impl Strategy<Value = ConditionSpec> {
    (
        0..meanings().len(),
        0usize..3,
        prop::option::of(0i64..2000),
        prop::option::of(0i64..2000),
        prop::option::of(prop::sample::select(vec!["active", "resolved", "recurrence"])),
    )
        .prop_map(|(meaning, variant, onset, recorded, status)| ConditionSpec {
            meaning,
            variant,
            onset_days_ago: onset,
            recorded_days_ago: recorded,
            status,
        })
}

fn condition(spec: &ConditionSpec, id: usize) -> Condition {
    let variants = &meanings()[spec.meaning];
    Condition {
        id: Some(format!("c{id}")),
        code: variants[spec.variant % variants.len()].clone(),
        clinical_status: spec.status.map(str::to_string),
        verification_status: None,
        onset: spec.onset_days_ago.map(|d| Onset::Date(day(d))),
        recorded: spec.recorded_days_ago.map(day),
        abatement: None,
        body_sites: vec![],
        notes: vec![],
        full_url: None,
    }
}

fn medication_strategy() -> impl Strategy<Value = Medication> {
    let drugs = vec![
        coded(RX, "197806", "ibuprofen 600 MG Oral Tablet"),
        coded(RX, "313782", "acetaminophen 325 MG Oral Tablet"),
        coded(
            RX,
            "1049621",
            "oxycodone hydrochloride 5 MG / acetaminophen 325 MG Oral Tablet",
        ),
        typed("Aspirin EC 81 mg"),
        typed("naproxen 500 mg"),
    ];
    (
        prop::sample::select(drugs),
        prop::sample::select(vec!["active", "completed", "stopped", "draft", "intended", "cancelled"]),
        prop::sample::select(vec![Some("order"), Some("plan"), Some("proposal"), None]),
        prop::option::of(0i64..400),
        any::<bool>(),
    )
        .prop_map(|(code, status, intent, days_ago, statement)| Medication {
            id: None,
            source: if statement {
                MedicationSource::Statement
            } else {
                MedicationSource::Request
            },
            code,
            medication_reference: None,
            status: Some(status.into()),
            intent: intent.map(str::to_string),
            taken: None,
            not_taken: false,
            date: days_ago.map(day),
            asserted_only: false,
            until: None,
            routes: vec![],
            sites: vec![],
        })
}

fn procedure_strategy() -> impl Strategy<Value = Procedure> {
    let procedures = vec![
        coded(SCT, "370848006", "Pain management education (procedure)"),
        typed("Heating pad at home"),
        coded(
            CPT,
            "97010",
            "Application of a modality to 1 or more areas; hot or cold packs",
        ),
        Concept {
            text: Some("Cold pack".into()),
            ..coded(
                CPT,
                "97010",
                "Application of a modality to 1 or more areas; hot or cold packs",
            )
        },
        typed("Activity modification counselling"),
    ];
    (
        prop::sample::select(procedures),
        prop::sample::select(vec!["completed", "in-progress", "preparation", "not-done"]),
        prop::option::of(0i64..400),
    )
        .prop_map(|(code, status, days_ago)| Procedure {
            id: None,
            code,
            status: Some(status.into()),
            not_done: false,
            date: days_ago.map(day),
            until: None,
            body_sites: vec![],
        })
}

#[derive(Debug, Clone)]
struct Case {
    conditions: Vec<ConditionSpec>,
    medications: Vec<Medication>,
    procedures: Vec<Procedure>,
    reason: Option<(usize, usize)>,
    site: Option<&'static str>,
    care_known: bool,
}

/// Complete conservative care a few weeks old: generated records start from it half of the time, so that the
/// permissive branch (which needs every element) is reached often and the invariants are tested there too.
fn complete_care() -> (Vec<Medication>, Vec<Procedure>) {
    let ibuprofen = Medication {
        id: None,
        source: MedicationSource::Request,
        code: coded(RX, "197806", "ibuprofen 600 MG Oral Tablet"),
        medication_reference: None,
        status: Some("completed".into()),
        intent: Some("order".into()),
        taken: None,
        not_taken: false,
        date: Some(day(10)),
        asserted_only: false,
        until: None,
        routes: vec![],
        sites: vec![],
    };
    let procedure = |code: Concept| Procedure {
        id: None,
        code,
        status: Some("completed".into()),
        not_done: false,
        date: Some(day(8)),
        until: None,
        body_sites: vec![],
    };
    (
        vec![ibuprofen],
        vec![
            procedure(coded(SCT, "370848006", "Pain management education (procedure)")),
            procedure(typed("Heating pad at home")),
        ],
    )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(condition_spec(), 0..4),
        prop::collection::vec(medication_strategy(), 0..4),
        prop::collection::vec(procedure_strategy(), 0..4),
        prop::option::of((0..meanings().len(), 0usize..3)),
        prop::option::of(prop::sample::select(vec![
            "Lumbar paraspinals",
            "Upper trapezius",
            "Right knee",
        ])),
        prop::bool::weighted(0.9),
        any::<bool>(),
        (0i64..60, 0usize..3),
    )
        .prop_map(
            |(
                mut conditions,
                mut medications,
                mut procedures,
                reason,
                site,
                care_known,
                baseline,
                (onset, variant),
            )| {
                if baseline {
                    // An acute myofascial pain with complete care: the permissive starting point.
                    conditions.insert(
                        0,
                        ConditionSpec {
                            meaning: 2,
                            variant,
                            onset_days_ago: Some(onset + 15),
                            recorded_days_ago: Some(onset + 14),
                            status: Some("active"),
                        },
                    );
                    let (m, p) = complete_care();
                    medications.splice(0..0, m);
                    procedures.splice(0..0, p);
                }
                Case {
                    conditions,
                    medications,
                    procedures,
                    reason,
                    site,
                    care_known,
                }
            },
        )
}

fn record(case: &Case) -> PatientRecord {
    let mut record = PatientRecord {
        conditions: case
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| condition(c, i))
            .collect(),
        medications: case.medications.clone(),
        procedures: case.procedures.clone(),
        ..PatientRecord::default()
    };
    for kind in DataKind::ALL {
        let known = kind == DataKind::Conditions || case.care_known;
        record.set_availability(
            kind,
            if known {
                Availability::Present
            } else {
                Availability::Missing
            },
        );
    }
    record
}

fn order(case: &Case) -> Order {
    Order {
        resource_type: "ServiceRequest".into(),
        id: Some("dn-1".into()),
        code: coded(
            CPT,
            "20560",
            "Needle insertion(s) without injection(s); 1 or 2 muscle(s)",
        ),
        reason_codes: case
            .reason
            .map(|(m, v)| {
                let variants = &meanings()[m];
                variants[v % variants.len()].clone()
            })
            .into_iter()
            .collect(),
        reason_references: vec![],
        body_sites: case.site.map(typed).into_iter().collect(),
        contained_conditions: vec![],
    }
}

/// The answer's place on the permissiveness scale (a 412 is "not yet": it never permits).
fn rank(case: &Case) -> Stance {
    let k = &*KNOWLEDGE;
    match assess(&order(case), &record(case), TODAY, &k.terminology, &k.policy) {
        Verdict::Card(a) => stance(a.card),
        Verdict::NeedsData(_) => Stance::NotYet,
    }
}

fn card_id(case: &Case) -> Option<&'static str> {
    let k = &*KNOWLEDGE;
    match assess(&order(case), &record(case), TODAY, &k.terminology, &k.policy) {
        Verdict::Card(a) => Some(a.card.file_stem()),
        Verdict::NeedsData(_) => None,
    }
}

fn shift(span: &mut Option<DateSpan>, days: i64) {
    if let Some(s) = span {
        *s = DateSpan {
            first: s.first - Duration::days(days),
            last: s.last - Duration::days(days),
        };
    }
}

/// The generator reaches every stance often enough for the invariants to mean something there.
#[test]
fn generated_records_reach_every_stance() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(Config::default().rng_algorithm),
    );
    let strategy = case_strategy();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        *counts.entry(rank(&case)).or_insert(0) += 1;
    }
    for stance in [
        Stance::NotRecommended,
        Stance::PreferAlternative,
        Stance::NotYet,
        Stance::MayConsider,
    ] {
        assert!(counts.get(&stance).copied().unwrap_or(0) >= 30, "{counts:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_chronic_condition_of_the_same_region_never_permits_more(case in case_strategy(), variant in 0usize..3, which in 0usize..3) {
        // Chronic low back pain, chronic myofascial pain of the low back (by its onset), or fibromyalgia.
        let chronic = [
            ConditionSpec { meaning: 1, variant, onset_days_ago: None, recorded_days_ago: Some(400), status: Some("active") },
            ConditionSpec { meaning: 3, variant, onset_days_ago: Some(200), recorded_days_ago: None, status: None },
            ConditionSpec { meaning: 7, variant, onset_days_ago: None, recorded_days_ago: None, status: Some("active") },
        ];
        let mut more = case.clone();
        more.conditions.push(chronic[which].clone());
        prop_assert!(rank(&more) <= rank(&case), "{:?} -> {:?}", card_id(&case), card_id(&more));
    }

    #[test]
    fn removing_evidence_of_care_never_permits_more(case in case_strategy(), pick in any::<prop::sample::Index>()) {
        let mut less = case.clone();
        let total = less.medications.len() + less.procedures.len();
        prop_assume!(total > 0);
        let i = pick.index(total);
        if i < less.medications.len() {
            less.medications.remove(i);
        } else {
            less.procedures.remove(i - less.medications.len());
        }
        prop_assert!(rank(&less) <= rank(&case), "{:?} -> {:?}", card_id(&case), card_id(&less));
    }

    #[test]
    fn moving_every_date_earlier_never_permits_more(case in case_strategy(), days in 0i64..400) {
        let mut older = case.clone();
        for c in &mut older.conditions {
            c.onset_days_ago = c.onset_days_ago.map(|d| d + days);
            c.recorded_days_ago = c.recorded_days_ago.map(|d| d + days);
        }
        for m in &mut older.medications {
            shift(&mut m.date, days);
        }
        for p in &mut older.procedures {
            shift(&mut p.date, days);
        }
        prop_assert!(rank(&older) <= rank(&case), "{:?} -> {:?}", card_id(&case), card_id(&older));
    }

    #[test]
    fn the_same_meaning_in_another_code_system_gives_the_same_answer(case in case_strategy(), pick in any::<prop::sample::Index>(), to in 0usize..3) {
        prop_assume!(!case.conditions.is_empty());
        let mut recoded = case.clone();
        let i = pick.index(recoded.conditions.len());
        recoded.conditions[i].variant = to;
        prop_assert_eq!(card_id(&recoded), card_id(&case));
        // The order's reason too.
        let mut reason = case.clone();
        if let Some((m, _)) = reason.reason {
            reason.reason = Some((m, to));
            prop_assert_eq!(card_id(&reason), card_id(&case));
        }
    }

    #[test]
    fn an_unknown_duration_never_permits(case in case_strategy()) {
        let mut undated = case.clone();
        for c in &mut undated.conditions {
            c.onset_days_ago = None;
        }
        prop_assert!(rank(&undated) < Stance::MayConsider, "{:?}", card_id(&undated));
        // And whatever the dates, a permissive card always rests on an established duration.
        let k = &*KNOWLEDGE;
        if let Verdict::Card(a) = assess(&order(&case), &record(&case), TODAY, &k.terminology, &k.policy)
            && stance(a.card) == Stance::MayConsider
        {
            let decisive = a.decisive.expect("a permissive card has an indication");
            let established = matches!(decisive.length, EpisodeLength::Established { days, .. } if days < 84);
            prop_assert!(established, "{:?}", decisive.length);
        }
    }

    #[test]
    fn every_card_meets_cds_hooks(case in case_strategy()) {
        let k = &*KNOWLEDGE;
        let order = order(&case);
        if let Verdict::Card(a) = assess(&order, &record(&case), TODAY, &k.terminology, &k.policy) {
            let facts = RequestFacts { patient_id: Some("p".into()), ..RequestFacts::default() };
            let card = serde_json::to_value(render_card(&a, &order, &facts, k)).unwrap();
            prop_assert!(uuid::Uuid::parse_str(card["uuid"].as_str().unwrap()).is_ok());
            let summary = card["summary"].as_str().unwrap();
            prop_assert!(!summary.is_empty() && summary.chars().count() < 140, "{}", summary);
            prop_assert!(["info", "warning", "critical"].contains(&card["indicator"].as_str().unwrap()));
            prop_assert!(card["source"]["label"].as_str().is_some_and(|l| !l.is_empty()));
            prop_assert!(card["detail"].as_str().is_some_and(|d| !d.contains("{{")));
            prop_assert_eq!(card["suggestions"].is_array(), card["selectionBehavior"] == "at-most-one");
            for s in card["suggestions"].as_array().into_iter().flatten() {
                prop_assert!(uuid::Uuid::parse_str(s["uuid"].as_str().unwrap()).is_ok());
                prop_assert!(s["actions"].as_array().is_some_and(|a| !a.is_empty()));
            }
            fn no_empty(v: &serde_json::Value) -> bool {
                match v {
                    serde_json::Value::Null => false,
                    serde_json::Value::String(s) => !s.is_empty(),
                    serde_json::Value::Array(a) => !a.is_empty() && a.iter().all(no_empty),
                    serde_json::Value::Object(o) => !o.is_empty() && o.values().all(no_empty),
                    _ => true,
                }
            }
            prop_assert!(no_empty(&card), "{}", card);
        }
    }
}

fn availability_strategy() -> impl Strategy<Value = Availability> {
    prop::sample::select(vec![
        Availability::Present,
        Availability::NoData,
        Availability::Failed,
        Availability::Missing,
    ])
}

/// A policy per kind: `true` is a card. Everything a card half of the time, so the card path is met often.
fn policy_strategy() -> impl Strategy<Value = MissingDataPolicy> {
    prop_oneof![Just([true; 4]), prop::array::uniform4(any::<bool>())].prop_map(|cards| {
        let mut policy = MissingDataPolicy::default();
        for (kind, card) in DataKind::ALL.into_iter().zip(cards) {
            if card {
                policy.set(kind, MissingDataAnswer::Card);
            }
        }
        policy
    })
}

/// The missing-data generator reaches all three answers often: a decided card, the 412, the data-unavailable card.
#[test]
fn generated_policies_reach_every_answer() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(Config::default().rng_algorithm),
    );
    let strategy = (
        case_strategy(),
        prop::array::uniform4(availability_strategy()),
        policy_strategy(),
    );
    let k = &*KNOWLEDGE;
    let facts = RequestFacts::default();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let (case, availability, policy) = strategy.new_tree(&mut runner).unwrap().current();
        let mut record = record(&case);
        for (kind, a) in DataKind::ALL.into_iter().zip(availability) {
            record.set_availability(kind, a);
        }
        let answered = answer(&[order(&case)], &record, &facts, k, TODAY, &policy);
        let what = match answered {
            Err(_) => "412",
            Ok(answered) if answered.unavailable.is_empty() => "decided",
            Ok(_) => "data-unavailable",
        };
        *counts.entry(what).or_insert(0) += 1;
    }
    for what in ["412", "decided", "data-unavailable"] {
        assert!(counts.get(what).copied().unwrap_or(0) >= 30, "{counts:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// For any record (any kind of data present, empty, failed or missing) and any policy: an order the rules
    /// decide gets the same card whatever the policy; an undecided one gets either the very 412 of the default
    /// policy or a warning data-unavailable card that permits nothing, and the card only when every kind it
    /// lacks is set to `card`.
    #[test]
    fn a_card_for_missing_data_is_never_more_permissive_than_the_412(
        case in case_strategy(),
        availability in prop::array::uniform4(availability_strategy()),
        policy in policy_strategy(),
    ) {
        let k = &*KNOWLEDGE;
        let mut record = record(&case);
        for (kind, a) in DataKind::ALL.into_iter().zip(availability) {
            record.set_availability(kind, a);
        }
        let order = order(&case);
        let orders = [order.clone()];
        let facts = RequestFacts { patient_id: Some("p".into()), ..RequestFacts::default() };
        let strict = answer(&orders, &record, &facts, k, TODAY, &MissingDataPolicy::default());
        let chosen = answer(&orders, &record, &facts, k, TODAY, &policy);
        match assess(&order, &record, TODAY, &k.terminology, &k.policy) {
            Verdict::Card(a) => {
                for answered in [strict, chosen] {
                    let answered = answered.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    let (cards, unavailable) = (answered.cards, answered.unavailable);
                    prop_assert_eq!(cards.len(), 1);
                    prop_assert_eq!(cards[0].extension.card, a.card.file_stem());
                    prop_assert!(unavailable.is_empty());
                }
            }
            Verdict::NeedsData(mut kinds) => {
                kinds.sort();
                let is_the_412 = |answered: &Result<_, HookError>| {
                    matches!(answered, Err(HookError::MissingData(named, _)) if *named == kinds)
                };
                prop_assert!(is_the_412(&strict), "{:?}", strict.map(|a| a.unavailable));
                if is_the_412(&chosen) {
                    return Ok(());
                }
                let chosen = chosen.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let (cards, unavailable) = (chosen.cards, chosen.unavailable);
                prop_assert_eq!(cards.len(), 1);
                prop_assert!(kinds.iter().all(|k| unavailable.contains(k)), "{:?} {:?}", kinds, unavailable);
                prop_assert!(
                    unavailable.iter().all(|k| policy.answer(*k) == MissingDataAnswer::Card),
                    "a kind set to 412 was answered with a card: {:?}",
                    unavailable
                );
                prop_assert!(unavailable.iter().all(|k| !record.availability(*k).is_known()));
                let card = serde_json::to_value(&cards[0]).unwrap();
                prop_assert_eq!(&card["extension"]["dry-needling-cds-card"], "data-unavailable");
                prop_assert_eq!(&card["indicator"], "warning");
                let stance_of_card = dry_needling_cds::assess::vocabulary::CardId::ALL
                    .into_iter()
                    .find(|id| id.file_stem() == "data-unavailable")
                    .map(stance);
                prop_assert_eq!(stance_of_card, Some(Stance::NotYet));
                let summary = card["summary"].as_str().unwrap();
                prop_assert!(!summary.is_empty() && summary.chars().count() < 140, "{}", summary);
                let detail = card["detail"].as_str().unwrap();
                prop_assert!(!detail.contains("{{"));
                for text in [summary, detail] {
                    prop_assert!(!text.to_lowercase().contains("may be considered"), "{}", text);
                }
            }
        }
    }
}
