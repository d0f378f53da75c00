//! Writes docs/storage.md's sample analytics (`docs/analytics/`): a made-up, deterministic twelve weeks of cards and
//! feedback, stored in a temporary SQLite store through the real [`Store`], then rendered by the same code as
//! `GET /analytics.html`.
//!
//! ```text
//! cargo run --example analytics-sample [OUT_DIR]     # default docs/analytics
//! ```
//!
//! Writes `outcomes.svg`, `weekly.svg` and `analytics.html`. The data are invented (no patient, no real
//! clinician): the pattern is what a CDS team might see, with the "may consider" card mostly accepted and the
//! "not recommended" cards often overridden.

use std::path::PathBuf;

use dry_needling_cds::store::{CardRecord, FeedbackRecord, Outcome, Store, StoreConfig};
use dry_needling_cds::web::analytics::{self, ReasonNames};
use time::Duration;
use time::macros::datetime;

const SERVICE: &str = "dry-needling-order-sign";
const REASONS: &str = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes";

/// Template, stance, cards per week, chance of acceptance and of override (in percent), the usual reason.
const TEMPLATES: [(&str, &str, u64, u64, u64, &str); 5] = [
    (
        "against-chronic-low-back-pain",
        "not_recommended",
        14,
        35,
        45,
        "recipient-disagrees-evidence",
    ),
    (
        "neck-pain-prefer-manual-therapy",
        "prefer_alternative",
        9,
        55,
        30,
        "does-not-align-preferences",
    ),
    ("myofascial-care-missing", "not_yet", 6, 60, 25, "cds-not-applicable"),
    (
        "myofascial-may-consider",
        "may_consider",
        4,
        80,
        5,
        "cds-not-applicable",
    ),
    (
        "against-osteoarthritis",
        "not_recommended",
        5,
        40,
        40,
        "recipient-concerns-outcomes",
    ),
];

/// A small deterministic generator (64-bit LCG): the same file every run.
struct Lcg(u64);

impl Lcg {
    fn percent(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % 100
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("docs/analytics"));
    let dir = std::env::temp_dir().join(format!("dn-analytics-sample-{}", std::process::id()));
    let store = Store::open(&StoreConfig::sqlite_in(&dir)).await?;
    let since = datetime!(2026-09-07 0:00 UTC);
    let until = datetime!(2026-11-30 0:00 UTC);
    let mut random = Lcg(2026);
    let (mut cards, mut feedback) = (Vec::new(), Vec::new());
    for week in 0..12i64 {
        for (template, stance, per_week, accept, over, reason) in TEMPLATES {
            // A gentle trend: more cards as the rule is used more.
            let count = per_week + (week as u64 * per_week) / 12;
            for n in 0..count {
                let issued_at = since + Duration::days(week * 7 + (n as i64 % 5)) + Duration::hours(9 + n as i64 % 8);
                let uuid = format!("{template}-{week}-{n}");
                cards.push(CardRecord {
                    uuid: uuid.clone(),
                    service_id: SERVICE.to_string(),
                    card: template.to_string(),
                    indicator: if stance == "may_consider" { "info" } else { "warning" }.to_string(),
                    stance: stance.to_string(),
                    suggestion_uuids: vec![format!("{uuid}-s")],
                    issued_at,
                    client_issuer: Some("https://ehr.example.org".to_string()),
                    tenant: None,
                    hook_instance: format!("hook-{uuid}"),
                    // An edit of the content half-way through the quarter.
                    content_version: Some(
                        if week < 6 {
                            "2026.09.0+5d1e0c9a4b27"
                        } else {
                            "2026.10.0+a83f61c2e905"
                        }
                        .to_string(),
                    ),
                });
                let roll = random.percent();
                let outcome_at = issued_at + Duration::minutes(2);
                let item = |outcome, reason: Option<&str>| FeedbackRecord {
                    card_uuid: uuid.clone(),
                    service_id: SERVICE.to_string(),
                    outcome,
                    accepted_suggestions: if outcome == Outcome::Accepted {
                        vec![format!("{uuid}-s")]
                    } else {
                        vec![]
                    },
                    override_reason_code: reason.map(str::to_string),
                    override_reason_system: reason.map(|_| REASONS.to_string()),
                    user_comment: None,
                    outcome_at,
                    received_at: outcome_at,
                    client_issuer: Some("https://ehr.example.org".to_string()),
                };
                if roll < accept {
                    feedback.push(item(Outcome::Accepted, None));
                } else if roll < accept + over {
                    // Most overrides give the template's usual reason; some give another or none.
                    let given = match random.percent() {
                        0..70 => Some(reason),
                        70..90 => Some("recipient-concerns-outcomes"),
                        _ => None,
                    };
                    feedback.push(item(Outcome::Overridden, given));
                }
            }
        }
    }
    store.insert_cards(&cards).await?;
    store.insert_feedback(&feedback).await?;
    let result = store.analytics(since, until).await?;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let knowledge = dry_needling_cds::Knowledge::embedded()?;
    let names: ReasonNames = knowledge
        .override_reasons
        .iter()
        .map(|r| ((r.system.clone(), r.code.clone()), r.display.clone()))
        .collect();
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("outcomes.svg"), analytics::outcomes_chart(&result))?;
    std::fs::write(out.join("weekly.svg"), analytics::weekly_chart(&result))?;
    std::fs::write(
        out.join("analytics.html"),
        analytics::page(&result, &names, "since=2026-09-07&until=2026-11-30"),
    )?;
    let shown: u64 = result.templates.iter().map(|t| t.shown).sum();
    println!(
        "{} cards, {} feedback items ({} to {}); wrote {}",
        shown,
        feedback.len(),
        since.date(),
        until.date(),
        out.display()
    );
    Ok(())
}
