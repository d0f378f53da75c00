//! How long a problem has lasted, from everything the record says about its dates.
//!
//! Why bounds and not one date: real records rarely say when pain began. A Condition may carry an onset (a day,
//! a month, a year, an age, a period, a phrase), only the date it was put on the problem list, or nothing; the
//! same problem is often recorded several times under different codes. Each fact here gives at most two
//! bounds: the earliest the pain can have begun (`onset_from`, known only from a real onset) and the date by
//! which it surely existed (`existed_by`: the end of the onset's span, a recorded date, an age, a year in a
//! typed onset). An episode is chronic when any fact says so or any `existed_by` is 12 weeks old; its duration
//! is *established* as shorter only when a real onset bounds it from below and no fact shows it existed before
//! that onset. Everything else is unknown, and unknown is never permission.

use time::{Date, Duration};

use crate::assess::vocabulary::Terminology;
use crate::record::{Age, AgeUnit, Condition, DateSpan, Onset};

/// Twelve weeks: from here on pain is chronic.
pub const CHRONIC_DAYS: i64 = 84;
/// Six weeks: from here on pain is subacute.
pub const SUBACUTE_DAYS: i64 = 42;

/// What one fact says about when its problem began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dating {
    /// A code, display, text or typed onset says chronic.
    pub says_chronic: bool,
    /// What says so, for the card ("why chronic").
    pub said_by: Option<SaidBy>,
    /// The earliest day the problem can have begun, from a real onset (day, span, age with a birth date).
    pub onset_from: Option<Date>,
    /// The day by which the problem surely existed.
    pub existed_by: Option<DateEvidence>,
}

/// What says a problem is chronic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaidBy {
    /// Its name: the text or a display ("Chronic low back pain").
    Name,
    /// A code whose own meaning is chronic (SNOMED CT 278860009).
    Code,
    /// Its typed onset (`onsetString`: "for years").
    OnsetText,
    /// A note on it or its evidence ("on and off since 2020").
    Note,
}

impl Dating {
    /// Marks the fact as said to be chronic by `by`, unless something said so already.
    pub fn say_chronic(&mut self, by: SaidBy) {
        self.says_chronic = true;
        self.said_by.get_or_insert(by);
    }
}

/// A day by which a problem existed, and what says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateEvidence {
    pub date: Date,
    pub source: DateSource,
    /// The date as the record wrote it (a partial date is its whole span), when it came from one field.
    pub shown: Option<DateSpan>,
}

/// What a date came from, for the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSource {
    Onset,
    Recorded,
    OnsetAge,
    OnsetText,
    /// A note or evidence text on the condition.
    Note,
}

impl Dating {
    fn existed(&mut self, date: Date, source: DateSource, shown: Option<DateSpan>) {
        if self.existed_by.is_none_or(|e| date < e.date) {
            self.existed_by = Some(DateEvidence { date, source, shown });
        }
    }
}

fn add_age(birth: Date, age: Age, extra_units: i64) -> Option<Date> {
    if !age.value.is_finite() || age.value < 0.0 || age.value > 150.0 * 366.0 {
        return None;
    }
    let whole = age.value.floor() as i64 + extra_units;
    let days = match age.unit {
        AgeUnit::Days => whole,
        AgeUnit::Weeks => whole * 7,
        AgeUnit::Months => {
            let months = birth.month() as i64 - 1 + whole;
            let year = birth.year() as i64 + months.div_euclid(12);
            let month = time::Month::try_from((months.rem_euclid(12) + 1) as u8).ok()?;
            let day = birth.day().min(month.length(year as i32));
            return Date::from_calendar_date(year as i32, month, day).ok();
        }
        AgeUnit::Years => {
            let year = birth.year() as i64 + whole;
            let day = birth.day().min(birth.month().length(year as i32));
            return Date::from_calendar_date(year as i32, birth.month(), day).ok();
        }
    };
    birth.checked_add(Duration::days(days))
}

/// Years written in a typed onset ("worse since 2019", "2015?"): four digits from 1900 on.
fn years_in(text: &str) -> impl Iterator<Item = i32> + '_ {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 4)
        .filter_map(|w| w.parse::<i32>().ok())
        .filter(|y| *y >= 1900)
}

/// "3 months", "two years", "6 wk": the longest such duration in a typed onset, in days (a lower bound).
fn duration_in(text: &str) -> Option<i64> {
    const NUMBERS: [(&str, i64); 12] = [
        ("one", 1),
        ("two", 2),
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("six", 6),
        ("seven", 7),
        ("eight", 8),
        ("nine", 9),
        ("ten", 10),
        ("several", 2),
        ("many", 2),
    ];
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut longest = None;
    for pair in words.windows(2) {
        let count = pair[0]
            .parse::<i64>()
            .ok()
            .or_else(|| NUMBERS.iter().find(|(w, _)| *w == pair[0]).map(|(_, n)| *n));
        let unit = match pair[1] {
            u if u.starts_with("year") || u == "yr" || u == "yrs" => 365,
            u if u.starts_with("month") || u == "mo" || u == "mos" => 28,
            u if u.starts_with("week") || u == "wk" || u == "wks" => 7,
            _ => continue,
        };
        if let Some(count) = count.filter(|n| (0..=200).contains(n)) {
            longest = longest.max(Some(count * unit));
        }
    }
    // "for years", "years ago": at least a year.
    if longest.is_none() && words.contains(&"years") {
        longest = Some(365);
    }
    longest
}

/// What a typed text says of a problem's age: "chronic" and its synonyms, a year ("since 2019": it existed by
/// the end of that year), a duration ("for 3 months": it existed that long ago).
fn typed_dating(text: &str, source: DateSource, dating: &mut Dating, today: Date, terms: &Terminology) {
    let lower = text.to_lowercase();
    if terms.keywords.chronic.matches(&lower) {
        dating.say_chronic(if source == DateSource::Note {
            SaidBy::Note
        } else {
            SaidBy::OnsetText
        });
    }
    if let Some(year) = years_in(&lower).filter(|y| *y <= today.year()).min()
        && let Ok(end) = Date::from_calendar_date(year, time::Month::December, 31)
    {
        dating.existed(end.min(today), source, None);
    }
    if let Some(days) = duration_in(&lower)
        && let Some(date) = today.checked_sub(Duration::days(days))
    {
        dating.existed(date, source, None);
    }
}

/// The dating of one Condition on `today`. Dates after today are no evidence (data errors or plans).
pub fn condition_dating(c: &Condition, birth: Option<DateSpan>, today: Date, terms: &Terminology) -> Dating {
    let mut dating = Dating::default();
    match &c.onset {
        Some(Onset::Date(span)) if span.first <= today => {
            dating.onset_from = Some(span.first);
            dating.existed(span.last.min(today), DateSource::Onset, Some(*span));
        }
        Some(Onset::NotAfter(span)) if span.first <= today => {
            dating.existed(span.last.min(today), DateSource::Onset, Some(*span));
        }
        Some(Onset::Age { low, high }) => {
            if let Some(birth) = birth {
                let from = low.and_then(|l| add_age(birth.first, l, 0));
                if let Some(from) = from.filter(|d| *d <= today) {
                    dating.onset_from = Some(from);
                }
                // An age of 40 years means before the 41st birthday.
                let by = high
                    .and_then(|h| add_age(birth.last, h, 1))
                    .and_then(|d| d.previous_day());
                if let Some(by) = by.filter(|by| from.is_none_or(|f| f <= today) && *by >= birth.first) {
                    dating.existed(by.min(today), DateSource::OnsetAge, None);
                }
            }
        }
        Some(Onset::Text(text)) => typed_dating(text, DateSource::OnsetText, &mut dating, today, terms),
        _ => {}
    }
    // Notes and evidence are read the same way: they can show the problem is older, never that it is recent.
    for note in &c.notes {
        typed_dating(note, DateSource::Note, &mut dating, today, terms);
    }
    if let Some(recorded) = c.recorded.filter(|r| r.first <= today) {
        dating.existed(recorded.last.min(today), DateSource::Recorded, Some(recorded));
    }
    dating
}

/// How long an episode has lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeLength {
    /// Twelve weeks or more, or said to be chronic.
    Chronic(ChronicBy),
    /// Established by an onset: the pain began at the earliest on `since`, `days` ago (under 12 weeks).
    Established { since: Date, days: i64 },
    /// Not established: no onset, or facts that allow both.
    Unknown,
}

/// What shows an episode is chronic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChronicBy {
    /// A code, display or text says so.
    Said,
    /// It existed by this date, 12 weeks or more ago.
    Date(DateEvidence),
}

/// The duration of an episode from the dating of all its facts.
pub fn episode_duration(facts: impl IntoIterator<Item = Dating>, today: Date) -> EpisodeLength {
    let mut said = false;
    let mut existed_by: Option<DateEvidence> = None;
    let mut onset_from: Option<Date> = None;
    for d in facts {
        said |= d.says_chronic;
        if let Some(e) = d.existed_by
            && existed_by.is_none_or(|x| e.date < x.date)
        {
            existed_by = Some(e);
        }
        if let Some(from) = d.onset_from {
            onset_from = Some(onset_from.map_or(from, |o: Date| o.min(from)));
        }
    }
    if said {
        return EpisodeLength::Chronic(ChronicBy::Said);
    }
    if let Some(e) = existed_by.filter(|e| (today - e.date).whole_days() >= CHRONIC_DAYS) {
        return EpisodeLength::Chronic(ChronicBy::Date(e));
    }
    match onset_from {
        // Established only if nothing shows the problem existed before the earliest onset.
        Some(since) if existed_by.is_none_or(|e| e.date >= since) => {
            let days = (today - since).whole_days();
            if days < CHRONIC_DAYS {
                EpisodeLength::Established { since, days }
            } else {
                EpisodeLength::Unknown
            }
        }
        _ => EpisodeLength::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Knowledge;
    use crate::record::{Concept, parse_fhir_span};
    use time::macros::date;

    const TODAY: Date = date!(2026 - 11 - 23);

    fn condition(onset: Option<Onset>, recorded: Option<&str>) -> Condition {
        Condition {
            id: None,
            code: Concept::default(),
            clinical_status: None,
            verification_status: None,
            onset,
            recorded: recorded.and_then(parse_fhir_span),
            abatement: None,
            body_sites: vec![],
            notes: vec![],
            full_url: None,
        }
    }

    fn duration(onset: Option<Onset>, recorded: Option<&str>, birth: Option<&str>) -> EpisodeLength {
        let k = Knowledge::embedded().unwrap();
        let c = condition(onset, recorded);
        let d = condition_dating(&c, birth.and_then(parse_fhir_span), TODAY, &k.terminology);
        episode_duration([d], TODAY)
    }

    fn on(s: &str) -> Option<Onset> {
        Some(Onset::Date(parse_fhir_span(s).unwrap()))
    }

    fn is_chronic(d: EpisodeLength) -> bool {
        matches!(d, EpisodeLength::Chronic(_))
    }

    #[test]
    fn recorded_dates_bound_the_onset_from_above_only() {
        // A years-old entry proves chronicity; a recent one proves nothing.
        assert!(is_chronic(duration(None, Some("2014-03-02"), None)));
        assert_eq!(duration(None, Some("2026-11-10"), None), EpisodeLength::Unknown);
        // With an onset, the recorded date only confirms it.
        assert_eq!(
            duration(on("2026-10-15"), Some("2026-11-10"), None),
            EpisodeLength::Established {
                since: date!(2026 - 10 - 15),
                days: 39
            }
        );
    }

    #[test]
    fn partial_dates_prove_only_what_all_their_days_prove() {
        assert!(matches!(
            duration(on("2026-10"), None, None),
            EpisodeLength::Established { days: 53, .. }
        ));
        // All of 2026: it may have begun in January (chronic) or last week.
        assert_eq!(duration(on("2026"), None, None), EpisodeLength::Unknown);
        assert!(is_chronic(duration(on("2025"), None, None)));
    }

    #[test]
    fn future_onsets_are_no_evidence() {
        assert_eq!(duration(on("2026-12-20"), None, None), EpisodeLength::Unknown);
        assert!(is_chronic(duration(on("2027-01-05"), Some("2019-05-01"), None)));
    }

    #[test]
    fn ages_need_a_birth_date() {
        let age = |v| {
            Some(Onset::Age {
                low: Some(Age {
                    value: v,
                    unit: AgeUnit::Years,
                }),
                high: Some(Age {
                    value: v,
                    unit: AgeUnit::Years,
                }),
            })
        };
        assert_eq!(duration(age(40.0), None, None), EpisodeLength::Unknown);
        assert!(is_chronic(duration(age(40.0), None, Some("1970-06-01"))));
        // Born 1986-11-01: at 40 means from 2026-11-01 to 2027-10-31, so begun at most 22 days ago but
        // maybe later: only a lower bound on the onset and no proof it existed earlier.
        assert!(matches!(
            duration(age(40.0), None, Some("1986-11-01")),
            EpisodeLength::Established { days: 22, .. }
        ));
        let range = Some(Onset::Age {
            low: Some(Age {
                value: 30.0,
                unit: AgeUnit::Years,
            }),
            high: None,
        });
        assert_eq!(duration(range, None, Some("1970-06-01")), EpisodeLength::Unknown);
    }

    #[test]
    fn typed_onsets() {
        let text = |s: &str| Some(Onset::Text(s.into()));
        assert!(is_chronic(duration(
            text("several years, worse since 2019"),
            None,
            None
        )));
        assert!(is_chronic(duration(text("4 months ago"), None, None)));
        assert!(is_chronic(duration(text("long-standing"), None, None)));
        assert_eq!(
            duration(text("after lifting a box"), None, None),
            EpisodeLength::Unknown
        );
        assert_eq!(duration(text("2 weeks ago"), None, None), EpisodeLength::Unknown);
    }

    #[test]
    fn the_earliest_evidence_of_an_episode_decides() {
        let k = Knowledge::embedded().unwrap();
        let facts = [
            condition(on("2026-11-01"), Some("2026-11-02")),
            condition(None, Some("2022-05-01")),
        ];
        let dating = facts.iter().map(|c| condition_dating(c, None, TODAY, &k.terminology));
        assert!(is_chronic(episode_duration(dating, TODAY)));
        // A duplicate recorded before the onset another entry gives: the onset is not the beginning.
        let facts = [condition(on("2026-11-01"), None), condition(None, Some("2026-10-01"))];
        let dating = facts.iter().map(|c| condition_dating(c, None, TODAY, &k.terminology));
        assert_eq!(episode_duration(dating, TODAY), EpisodeLength::Unknown);
    }
}
