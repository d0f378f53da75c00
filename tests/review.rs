//! The clinical review sets (`fixtures/review/`, `second/`, `third/`): requests shaped like real EHR exports,
//! each with the verdict the guideline calls for written in `expected.csv` before the service was run on it,
//! by reviewers who had not read the code. One test runs them all and reports every disagreement, marking those
//! that err toward permitting dry needling. The third set adds a `checks` column: text the cards must (`has:`)
//! or must not (`not:`, `summary-not:`) say.

mod common;

use common::*;
use dry_needling_cds::assess::vocabulary::CardId;
use dry_needling_cds::assess::{self, Stance};

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
    // Three independent sets, each with its own answer key.
    let mut rows = Vec::new();
    for set in ["review", "review/second", "review/third"] {
        let path = format!("{}/fixtures/{set}/expected.csv", env!("CARGO_MANIFEST_DIR"));
        let table = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(table.as_bytes());
        for row in reader.records() {
            let row = row.expect("a CSV row");
            let checks = row.get(4).unwrap_or("").to_string();
            rows.push((
                format!("{set}/{}", &row[0]),
                row[1].to_string(),
                row[3].to_string(),
                checks,
            ));
        }
    }
    for (file, expected, why, checks) in &rows {
        cases += 1;
        let body = fixture(file);
        let reply = post(path_for(&body), body).await;
        let mut text = String::new();
        let mut summaries = String::new();
        let got: Vec<String> = match reply.status.as_u16() {
            200 => {
                let json = reply.json();
                let cards = json["cards"].as_array().cloned().unwrap_or_default();
                for card in &cards {
                    let summary = card["summary"].as_str().unwrap_or_default().to_lowercase();
                    text.push_str(&summary);
                    text.push(' ');
                    text.push_str(&card["detail"].as_str().unwrap_or_default().to_lowercase());
                    for s in card["suggestions"].as_array().into_iter().flatten() {
                        text.push(' ');
                        text.push_str(&s["label"].as_str().unwrap_or_default().to_lowercase());
                    }
                    summaries.push_str(&summary);
                    summaries.push(' ');
                }
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
        for check in checks.split('|').filter(|c| !c.is_empty()) {
            let (kind, wanted) = check.split_once(':').unwrap_or((check, ""));
            let wanted = wanted.to_lowercase();
            let holds = match kind {
                "has" => text.contains(&wanted),
                "not" => !text.contains(&wanted),
                "summary-not" => !summaries.contains(&wanted),
                _ => false,
            };
            if !holds {
                failures.push(format!("{file}: card text check `{check}` does not hold ({why})"));
            }
        }
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
