//! The clinical review set (`fixtures/review/`): requests shaped like real EHR exports, each with the verdict
//! the guideline calls for written in `expected.csv` before the service was run on it. One test runs them all
//! and reports every disagreement, marking those that err toward permitting dry needling.

mod common;

use common::*;
use dry_needling_cds::assess::{self, Stance};
use dry_needling_cds::knowledge::CardId;

/// How far a card goes toward allowing dry needling (`assess::stance`), from its template id; `None` for "none"
/// and "412", which permit nothing.
fn stance(card: &str) -> Option<Stance> {
    CardId::ALL
        .into_iter()
        .find(|id| id.file_stem() == card)
        .map(assess::stance)
}

#[tokio::test]
async fn the_review_set_gets_the_guideline_answers() {
    let mut failures = Vec::new();
    let mut harmful = 0;
    let mut cases = 0;
    // Two independent sets, each with its own answer key: `review/` and `review/second/`.
    let mut rows = Vec::new();
    for set in ["review", "review/second"] {
        let path = format!("{}/fixtures/{set}/expected.csv", env!("CARGO_MANIFEST_DIR"));
        let table = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for row in csv::Reader::from_reader(table.as_bytes()).records() {
            let row = row.expect("a CSV row");
            rows.push((format!("{set}/{}", &row[0]), row[1].to_string(), row[3].to_string()));
        }
    }
    for (file, expected, why) in &rows {
        cases += 1;
        let body = fixture(file);
        let reply = post(path_for(&body), body).await;
        let got: Vec<String> = match reply.status.as_u16() {
            200 => {
                let json = reply.json();
                let cards = json["cards"].as_array().cloned().unwrap_or_default();
                if cards.is_empty() {
                    vec!["none".to_string()]
                } else {
                    cards
                        .iter()
                        .map(|c| {
                            c["extension"]["dry-needling-cds-card"]
                                .as_str()
                                .unwrap_or("?")
                                .to_string()
                        })
                        .collect()
                }
            }
            status => vec![status.to_string()],
        };
        let expected: Vec<&str> = expected.split(';').map(str::trim).collect();
        let why = why.as_str();
        if got != expected {
            let toward_harm = got
                .iter()
                .zip(&expected)
                .any(|(g, e)| stance(e).is_some_and(|e| stance(g).is_some_and(|g| g > e)));
            if toward_harm {
                harmful += 1;
            }
            failures.push(format!(
                "{}{file}: got {got:?}, expected {expected:?} ({why})",
                if toward_harm { "HARM " } else { "" }
            ));
        }
    }
    assert!(cases >= 100, "the review sets have {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} review cases disagree with the guideline, {harmful} toward harm:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
