//! A Condition read into the record: its code, statuses, body sites and notes, and the dates the rules count
//! an episode's duration from.
//!
//! Why its dates are read here with care: whether pain is chronic is decided by when it began, and FHIR says
//! that in many ways (`onset[x]` as a date, a period, an age, a range or text; `abatement[x]` likewise; the
//! recorded date under three names across versions). Each is read in a fixed order of preference, and a value
//! that cannot be read is passed over rather than guessed.

use super::resource::RawResource;
use super::shapes::{RawConcept, first_span, non_blank, start_else_end};
use crate::record::{Abatement, Condition, Onset};

/// `onset[x]`, in the order: `onsetDateTime`, `onsetPeriod` (its start; only an end: not after it),
/// `onsetAge`/`onsetQuantity`, `onsetRange`, `onsetString`. A value that cannot be read as such is passed over.
pub(super) fn onset(raw: &mut RawResource) -> Option<Onset> {
    if let Some(span) = first_span(&[raw.onset_date_time.as_deref()]) {
        return Some(Onset::Date(span));
    }
    if let Some(period) = &raw.onset_period {
        if let Some(start) = first_span(&[period.start.as_deref()]) {
            return Some(Onset::Date(start));
        }
        if let Some(end) = first_span(&[period.end.as_deref()]) {
            return Some(Onset::NotAfter(end));
        }
    }
    let ages = [raw.onset_age, raw.onset_range];
    if let Some((low, high)) = ages
        .into_iter()
        .flatten()
        .find(|(low, high)| low.is_some() || high.is_some())
    {
        return Some(Onset::Age { low, high });
    }
    non_blank(raw.onset_string.take()).map(Onset::Text)
}

/// `abatement[x]`, in the order: `abatementDateTime`, `abatementPeriod` (its start, else its end),
/// `abatementAge`/`abatementQuantity`, `abatementRange` (its low end, else its high end), `abatementBoolean`,
/// `abatementString`.
pub(super) fn abatement(raw: &mut RawResource) -> Option<Abatement> {
    if let Some(span) = first_span(&[raw.abatement_date_time.as_deref()]).or(start_else_end(&raw.abatement_period)) {
        return Some(Abatement::Date(span));
    }
    let ages = [raw.abatement_age, raw.abatement_range];
    if let Some(age) = ages.into_iter().flatten().find_map(|(low, high)| low.or(high)) {
        return Some(Abatement::Age(age));
    }
    if let Some(flag) = raw.abatement_boolean {
        return Some(Abatement::Flag(flag));
    }
    non_blank(raw.abatement_string.take()).map(Abatement::Text)
}

/// A Condition: its code and statuses, when it began (`onset[x]`, else nothing), when it was recorded,
/// when it ended (`abatement[x]`), its body sites and its notes.
pub(super) fn from_raw(mut raw: RawResource) -> Condition {
    Condition {
        onset: onset(&mut raw),
        recorded: first_span(&[
            raw.recorded_date.as_deref(),
            raw.asserted_date.as_deref(),
            raw.date_recorded.as_deref(),
        ]),
        abatement: abatement(&mut raw),
        id: raw.id,
        code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
        clinical_status: raw.clinical_status,
        verification_status: raw.verification_status,
        body_sites: raw.body_site.into_iter().map(RawConcept::into_concept).collect(),
        notes: raw.notes.into_iter().filter(|n| !n.trim().is_empty()).collect(),
        full_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::tests::{age, condition, span};
    use crate::fhir::{Resource, parse_resource};
    use crate::record::{Age, AgeUnit, parse_fhir_span};

    #[test]
    fn reads_r4_stu3_and_dstu2_condition_statuses() {
        let r4 = r#"{"resourceType":"Condition","clinicalStatus":{"coding":[{"code":"active"}]},
            "verificationStatus":{"coding":[{"code":"confirmed"}]},"code":{"text":"Neck pain"},
            "onsetDateTime":"2020-01-02T10:00:00"}"#;
        let dstu2 = r#"{"resourceType":"Condition","clinicalStatus":"active","verificationStatus":"refuted",
            "code":{"coding":{"system":"http://snomed.info/sct","code":"81680005"}},"dateRecorded":"2019"}"#;
        let Resource::Condition(c) = parse_resource(r4).unwrap() else {
            panic!()
        };
        assert_eq!(c.clinical_status.as_deref(), Some("active"));
        assert_eq!(c.onset, parse_fhir_span("2020-01-02").map(Onset::Date));
        let Resource::Condition(c) = parse_resource(dstu2).unwrap() else {
            panic!()
        };
        assert_eq!(c.verification_status.as_deref(), Some("refuted"));
        assert_eq!(c.code.codings[0].code, "81680005");
        assert_eq!(c.recorded, parse_fhir_span("2019"));
    }

    #[test]
    fn onset_dates_and_periods() {
        // R4/STU3/DSTU2 share these shapes.
        let c = condition(r#""onsetDateTime":"2014-01-31T13:45:24-05:00""#);
        assert_eq!(c.onset, Some(Onset::Date(span("2014-01-31"))));
        let c = condition(r#""onsetDateTime":"2019""#);
        assert_eq!(c.onset, Some(Onset::Date(span("2019"))));
        let c = condition(r#""onsetPeriod":{"start":"2020-03","end":"2020-06-01"}"#);
        assert_eq!(c.onset, Some(Onset::Date(span("2020-03"))));
        // Only an end: it began on or before it.
        let c = condition(r#""onsetPeriod":{"end":"2021-05-04"}"#);
        assert_eq!(c.onset, Some(Onset::NotAfter(span("2021-05-04"))));
        let c = condition(r#""onsetPeriod":{"start":"not a date","end":"2021"}"#);
        assert_eq!(c.onset, Some(Onset::NotAfter(span("2021"))));
        // Unreadable dates and empty periods are no onset; null is absence.
        for fields in [
            r#""onsetDateTime":"unknown""#,
            r#""onsetPeriod":{}"#,
            r#""onsetDateTime":null"#,
            r#""onsetString":"  ""#,
            "",
        ] {
            assert_eq!(condition(fields).onset, None, "{fields}");
        }
    }

    #[test]
    fn onset_ages_ranges_and_text() {
        // R4/STU3 onsetAge, with the UCUM code.
        let c = condition(r#""onsetAge":{"value":42,"unit":"yr","system":"http://unitsofmeasure.org","code":"a"}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: age(42.0, AgeUnit::Years),
                high: age(42.0, AgeUnit::Years)
            })
        );
        // DSTU2 onsetQuantity, a unit spelled out and no code.
        let c = condition(r#""onsetQuantity":{"value":3.5,"unit":"Months"}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: age(3.5, AgeUnit::Months),
                high: age(3.5, AgeUnit::Months)
            })
        );
        // A comparator bounds one end only.
        let c = condition(r#""onsetAge":{"value":5,"comparator":"<","code":"a"}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: None,
                high: age(5.0, AgeUnit::Years)
            })
        );
        let c = condition(r#""onsetAge":{"value":60,"comparator":">=","unit":"years"}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: age(60.0, AgeUnit::Years),
                high: None
            })
        );
        // onsetRange: both ends, one end missing, one end unreadable.
        let c = condition(r#""onsetRange":{"low":{"value":30,"code":"a"},"high":{"value":35,"unit":"years"}}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: age(30.0, AgeUnit::Years),
                high: age(35.0, AgeUnit::Years)
            })
        );
        let c = condition(r#""onsetRange":{"low":{"value":2,"unit":"wk","code":"wk"}}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: age(2.0, AgeUnit::Weeks),
                high: None
            })
        );
        let c = condition(r#""onsetRange":{"low":null,"high":{"value":10,"unit":"days"}}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: None,
                high: age(10.0, AgeUnit::Days)
            })
        );
        let c = condition(r#""onsetRange":{"low":{"value":30},"high":{"value":35,"code":"a"}}"#);
        assert_eq!(
            c.onset,
            Some(Onset::Age {
                low: None,
                high: age(35.0, AgeUnit::Years)
            })
        );
        // A quantity with no readable unit or value is no age, and a range of none is no onset.
        for fields in [
            r#""onsetAge":{"value":42}"#,
            r#""onsetAge":{"value":42,"unit":"lightyears"}"#,
            r#""onsetAge":{"unit":"a","code":"a"}"#,
            r#""onsetAge":{"value":-1,"code":"a"}"#,
            r#""onsetRange":{"low":{"unit":"years"},"high":{"value":3}}"#,
            r#""onsetRange":{}"#,
        ] {
            assert_eq!(condition(fields).onset, None, "{fields}");
        }
        let c = condition(r#""onsetString":"several years, worse since 2019""#);
        assert_eq!(c.onset, Some(Onset::Text("several years, worse since 2019".into())));
    }

    #[test]
    fn recorded_dates_in_every_version() {
        // R4 recordedDate, STU3 assertedDate, DSTU2 dateRecorded; never taken as the onset.
        for (field, version) in [
            ("recordedDate", "R4"),
            ("assertedDate", "STU3"),
            ("dateRecorded", "DSTU2"),
        ] {
            let c = condition(&format!(r#""{field}":"2014-06-02T10:00:00Z""#));
            assert_eq!(c.recorded, Some(span("2014-06-02")), "{version}");
            assert_eq!(c.onset, None, "{version}");
        }
        // The first that reads, in that order.
        let c = condition(r#""dateRecorded":"2010","recordedDate":"2012-02","assertedDate":"2011""#);
        assert_eq!(c.recorded, Some(span("2012-02")));
        let c = condition(r#""recordedDate":"garbage","assertedDate":"2011""#);
        assert_eq!(c.recorded, Some(span("2011")));
    }

    #[test]
    fn abatement_in_every_shape() {
        let cases = [
            (
                r#""abatementDateTime":"2020-02-02""#,
                Some(Abatement::Date(span("2020-02-02"))),
            ),
            (
                r#""abatementPeriod":{"start":"2020-01","end":"2020-03"}"#,
                Some(Abatement::Date(span("2020-01"))),
            ),
            (
                r#""abatementPeriod":{"end":"2020-03"}"#,
                Some(Abatement::Date(span("2020-03"))),
            ),
            (
                r#""abatementAge":{"value":12,"code":"a"}"#,
                Some(Abatement::Age(Age {
                    value: 12.0,
                    unit: AgeUnit::Years,
                })),
            ),
            (
                r#""abatementQuantity":{"value":6,"unit":"months"}"#,
                Some(Abatement::Age(Age {
                    value: 6.0,
                    unit: AgeUnit::Months,
                })),
            ),
            (
                r#""abatementRange":{"low":{"value":20,"code":"a"},"high":{"value":25,"code":"a"}}"#,
                Some(Abatement::Age(Age {
                    value: 20.0,
                    unit: AgeUnit::Years,
                })),
            ),
            (
                r#""abatementRange":{"high":{"value":25,"code":"a"}}"#,
                Some(Abatement::Age(Age {
                    value: 25.0,
                    unit: AgeUnit::Years,
                })),
            ),
            // STU3 and DSTU2 abatementBoolean.
            (r#""abatementBoolean":true"#, Some(Abatement::Flag(true))),
            (r#""abatementBoolean":false"#, Some(Abatement::Flag(false))),
            (
                r#""abatementString":"in childhood""#,
                Some(Abatement::Text("in childhood".into())),
            ),
            (r#""abatementString":"""#, None),
            (r#""abatementAge":{"value":3}"#, None),
            (r#""abatementDateTime":null"#, None),
        ];
        for (fields, abatement) in cases {
            assert_eq!(condition(fields).abatement, abatement, "{fields}");
        }
    }
}
