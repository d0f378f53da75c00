//! Override analytics: what clinicians did with each card template's cards.
//!
//! The counting rule: **a card counts once, by its latest feedback** (the greatest `outcomeTimestamp`; at the
//! same instant, `overridden` wins over `accepted`, so the rule is total and both backends agree). A card with
//! no feedback is "no feedback". A card belongs to the window by when it was issued, and all of its feedback
//! counts whenever it arrived; override reasons are those of the cards whose latest outcome is an override.
//!
//! Why this rule: a rule's quality is judged per card shown, so one card must not count twice (an EHR may send
//! `accepted` and later `overridden` for the same card, or resend); the latest action is what the clinician
//! finally did.
//!
//! SQL does the work that grows with the data (the latest feedback per card, window, grouping by template,
//! ISO week, outcome and reason); [`fold`] only arranges the few grouped rows into this shape and sorts them
//! by byte order, so collation differences between the backends cannot change the order.

use std::collections::BTreeMap;

use time::{Date, OffsetDateTime};

/// The analytics for cards issued in `[since, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analytics {
    pub since: OffsetDateTime,
    pub until: OffsetDateTime,
    /// One row per (service, card template) with at least one card issued in the window, sorted by service
    /// then template.
    pub templates: Vec<TemplateStats>,
    /// One row per (ISO week, service, template) with cards issued that week, sorted by week, service,
    /// template. [`Analytics::weekly_totals`] sums the templates.
    pub weekly: Vec<WeekStats>,
    /// One row per (service, card template, content version) with cards issued in the window, sorted by service,
    /// template, then version (cards logged before content versions, `None`, first): whether an edit of the
    /// content changed what clinicians did with a template's cards.
    pub versions: Vec<VersionStats>,
    /// Feedback items received in the window for card uuids the card log does not have (kept and flagged
    /// by [`super::Store::insert_feedback`]).
    pub unknown_card_feedback: u64,
}

/// One template's cards written by one version of the guidance content (counted by the same rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStats {
    pub service_id: String,
    pub card: String,
    /// `declared+digest` (see [`crate::content::ContentVersion`]); `None` for cards logged before the card log
    /// recorded versions.
    pub content_version: Option<String>,
    /// Cards issued; always `accepted + overridden + no_feedback`.
    pub shown: u64,
    pub accepted: u64,
    pub overridden: u64,
    pub no_feedback: u64,
}

impl VersionStats {
    /// `overridden / (accepted + overridden)`; `None` when no card had feedback.
    pub fn override_rate(&self) -> Option<f64> {
        override_rate(self.accepted, self.overridden)
    }
}

/// `overridden / (accepted + overridden)`: the share of the cards acted on that were overridden; `None` when no
/// card had feedback. The one definition every table of analytics uses.
pub fn override_rate(accepted: u64, overridden: u64) -> Option<f64> {
    let acted = accepted + overridden;
    (acted > 0).then(|| overridden as f64 / acted as f64)
}

/// What happened to one template's cards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateStats {
    pub service_id: String,
    /// The card template id, e.g. `neck-pain-prefer-manual-therapy`.
    pub card: String,
    /// Cards issued; always `accepted + overridden + no_feedback`.
    pub shown: u64,
    pub accepted: u64,
    pub overridden: u64,
    pub no_feedback: u64,
    /// Why the overridden cards were overridden, most frequent first (then by system and code);
    /// `code: None` counts overrides without a reason. The counts add up to `overridden`.
    pub override_reasons: Vec<ReasonCount>,
}

impl TemplateStats {
    /// `overridden / (accepted + overridden)`: the share of the cards acted on that were overridden; `None`
    /// when no card had feedback.
    pub fn override_rate(&self) -> Option<f64> {
        override_rate(self.accepted, self.overridden)
    }
}

/// One override reason (a Coding's `system` and `code`) and how many cards it was given for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReasonCount {
    pub system: Option<String>,
    pub code: Option<String>,
    pub count: u64,
}

/// One template's cards issued in one ISO week (Monday to Sunday, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekStats {
    /// The Monday that starts the week.
    pub week_start: Date,
    pub service_id: String,
    pub card: String,
    pub shown: u64,
    pub accepted: u64,
    pub overridden: u64,
}

/// A week's cards over every template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekTotal {
    pub week_start: Date,
    pub shown: u64,
    pub accepted: u64,
    pub overridden: u64,
}

impl Analytics {
    /// The weekly trend over all templates, sorted by week.
    pub fn weekly_totals(&self) -> Vec<WeekTotal> {
        let mut weeks: BTreeMap<Date, WeekTotal> = BTreeMap::new();
        for w in &self.weekly {
            let total = weeks.entry(w.week_start).or_insert(WeekTotal {
                week_start: w.week_start,
                shown: 0,
                accepted: 0,
                overridden: 0,
            });
            total.shown += w.shown;
            total.accepted += w.accepted;
            total.overridden += w.overridden;
        }
        weeks.into_values().collect()
    }

    /// One template's row.
    pub fn template(&self, service_id: &str, card: &str) -> Option<&TemplateStats> {
        self.templates
            .iter()
            .find(|t| t.service_id == service_id && t.card == card)
    }
}

/// One grouped row of the analytics query: cards of one template, issued in one week, whose latest feedback
/// had this outcome and reason (`outcome: None`: no feedback).
#[derive(Debug)]
pub(super) struct GroupRow {
    pub service_id: String,
    pub card: String,
    pub content_version: Option<String>,
    /// Days since 1970-01-01 of the week's Monday.
    pub week_day: i64,
    pub outcome: Option<String>,
    pub reason_code: Option<String>,
    pub reason_system: Option<String>,
    pub count: i64,
}

/// Days since 1970-01-01 → date.
pub(super) fn epoch_day(day: i64) -> Date {
    // 2440588 is the Julian day of 1970-01-01; out-of-range days clamp (they cannot come from real times).
    let julian = i32::try_from(day.saturating_add(2_440_588)).unwrap_or(i32::MAX);
    Date::from_julian_day(julian).unwrap_or(Date::MAX)
}

/// (service, template) → (reason system, reason code) → cards.
type ReasonsByTemplate = BTreeMap<(String, String), BTreeMap<(Option<String>, Option<String>), u64>>;

pub(super) fn fold(since: OffsetDateTime, until: OffsetDateTime, rows: Vec<GroupRow>, unknown: i64) -> Analytics {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut templates: BTreeMap<(String, String), TemplateStats> = BTreeMap::new();
    let mut reasons = ReasonsByTemplate::new();
    let mut weekly: BTreeMap<(i64, String, String), WeekStats> = BTreeMap::new();
    let mut versions: BTreeMap<(String, String, Option<String>), VersionStats> = BTreeMap::new();
    for row in rows {
        let n = count(row.count);
        let v = versions
            .entry((row.service_id.clone(), row.card.clone(), row.content_version.clone()))
            .or_insert_with(|| VersionStats {
                service_id: row.service_id.clone(),
                card: row.card.clone(),
                content_version: row.content_version,
                shown: 0,
                accepted: 0,
                overridden: 0,
                no_feedback: 0,
            });
        v.shown += n;
        let key = (row.service_id.clone(), row.card.clone());
        let t = templates.entry(key.clone()).or_insert_with(|| TemplateStats {
            service_id: row.service_id.clone(),
            card: row.card.clone(),
            shown: 0,
            accepted: 0,
            overridden: 0,
            no_feedback: 0,
            override_reasons: Vec::new(),
        });
        let w = weekly
            .entry((row.week_day, row.service_id.clone(), row.card.clone()))
            .or_insert_with(|| WeekStats {
                week_start: epoch_day(row.week_day),
                service_id: row.service_id,
                card: row.card,
                shown: 0,
                accepted: 0,
                overridden: 0,
            });
        t.shown += n;
        w.shown += n;
        match row.outcome.as_deref() {
            Some("accepted") => {
                t.accepted += n;
                w.accepted += n;
                v.accepted += n;
            }
            Some("overridden") => {
                t.overridden += n;
                w.overridden += n;
                v.overridden += n;
                *reasons
                    .entry(key)
                    .or_default()
                    .entry((row.reason_system, row.reason_code))
                    .or_default() += n;
            }
            // The schema's CHECK allows only the two outcomes, so anything else is no feedback.
            _ => {
                t.no_feedback += n;
                v.no_feedback += n;
            }
        }
    }
    for (key, by_reason) in reasons {
        if let Some(t) = templates.get_mut(&key) {
            let mut list: Vec<ReasonCount> = by_reason
                .into_iter()
                .map(|((system, code), count)| ReasonCount { system, code, count })
                .collect();
            // Most frequent first; ties by (system, code), `None` first (BTreeMap order, then a stable sort).
            list.sort_by_key(|r| std::cmp::Reverse(r.count));
            t.override_reasons = list;
        }
    }
    Analytics {
        since,
        until,
        templates: templates.into_values().collect(),
        weekly: weekly.into_values().collect(),
        versions: versions.into_values().collect(),
        unknown_card_feedback: count(unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn epoch_days() {
        assert_eq!(epoch_day(0), date!(1970 - 01 - 01));
        assert_eq!(epoch_day(20_000), date!(2024 - 10 - 04));
    }
}
