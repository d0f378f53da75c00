//! A whole hook call's synchronous path on arbitrary bytes, for every service: `service::prepare` (UTF-8,
//! JSON, the request's shape, the draft orders read as FHIR, the prefetch read in the same pass or later) and,
//! when the request is good, `service::finish` (medication references, the assessment, the cards), then the
//! response's JSON, with the default `Limits` and with tiny ones, and with every missing-data answer a 412 (the
//! default) and a card (so the data-unavailable card meets arbitrary input too). Only the FHIR fetch (I/O) is
//! left out.
//!
//! Beyond "no panic", every card must be well formed: a summary of 1 to 140 characters and a known indicator.
#![no_main]

use std::sync::LazyLock;

use dry_needling_cds::Knowledge;
use dry_needling_cds::service::{Limits, MissingDataAnswer, MissingDataPolicy, finish, prepare};
use libfuzzer_sys::fuzz_target;
use time::Date;

/// The date the fixtures are written against.
const TODAY: Date = time::macros::date!(2026 - 11 - 23);

static KNOWLEDGE: LazyLock<Knowledge> = LazyLock::new(|| Knowledge::embedded().expect("embedded content"));
/// The default limits, and limits so small that the fuzzer meets them too.
static LIMITS: LazyLock<[Limits; 2]> = LazyLock::new(|| {
    [
        Limits::default(),
        Limits {
            max_draft_orders: 2,
            max_cards: 1,
            max_prefetch_entries: 3,
        },
    ]
});
/// Every missing-data answer a 412, and every one a card.
static POLICIES: LazyLock<[MissingDataPolicy; 2]> = LazyLock::new(|| {
    [
        MissingDataPolicy::default(),
        MissingDataPolicy::all(MissingDataAnswer::Card),
    ]
});
static SERVICES: LazyLock<Vec<String>> = LazyLock::new(|| KNOWLEDGE.services.iter().map(|s| s.id.clone()).collect());

fuzz_target!(|body: &[u8]| {
    let runs = SERVICES
        .iter()
        .flat_map(|s| LIMITS.iter().map(move |l| (s, l)))
        .flat_map(|(s, l)| POLICIES.iter().map(move |p| (s, l, p)));
    for (service, limits, policy) in runs {
        let Ok(prepared) = prepare(&KNOWLEDGE, limits, service, body) else {
            continue;
        };
        let Ok((response, summary)) = finish(prepared, &KNOWLEDGE, TODAY, policy) else {
            continue;
        };
        assert_eq!(summary.cards, response.cards.len());
        assert!(response.cards.len() <= limits.max_cards);
        for card in &response.cards {
            let length = card.summary.chars().count();
            assert!(length > 0 && length <= 140, "summary of {length} characters");
            assert!(
                matches!(card.indicator, "info" | "warning" | "critical"),
                "indicator {}",
                card.indicator
            );
        }
        serde_json::to_vec(&response).expect("cards serialise");
    }
});
