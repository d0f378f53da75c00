//! Shapes for FHIR's generic data types: strings, arrays (or one item alone), Codings and CodeableConcepts,
//! Periods, statuses, flags, numbers, Ages and Ranges of them, References and Bundle links; and the dates read
//! from them.
//!
//! Why apart from the resources: these types are the same in every resource and every FHIR version the
//! service reads, and their leniency (an array sent as one object, a status as a code or a concept, an age's
//! unit spelt out) is decided once here. Each keeps only the parts the rules use.

use serde::de::{MapAccess, SeqAccess};

use super::key::{Key, next_key, skip, value};
use super::{Lenient, Shape};
use crate::record::{Age, AgeUnit, Coding, Concept, DateSpan, parse_fhir_span};

/// A string (codes, ids, dates).
#[derive(Clone, Copy)]
pub(super) struct Text;

impl<'de> Shape<'de> for Text {
    type Out = String;
    fn string(self, text: &str, _: &mut bool) -> Option<String> {
        Some(text.to_owned())
    }
}

/// An array of items, or one item alone (R4 arrays sent as single objects, DSTU2 singles).
#[derive(Clone, Copy)]
pub(super) struct Many<S>(pub(super) S);

impl<'de, S: Shape<'de>> Shape<'de> for Many<S> {
    type Out = Vec<S::Out>;
    fn map<A: MapAccess<'de>>(self, map: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        Ok(Some(self.0.map(map, bad)?.into_iter().collect()))
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Lenient {
            shape: self.0,
            bad: &mut *bad,
        })? {
            items.extend(item);
        }
        Ok(Some(items))
    }
}

#[derive(Debug, Default)]
pub(super) struct RawCoding {
    pub(super) system: Option<String>,
    pub(super) code: Option<String>,
    pub(super) display: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) struct CodingShape;

impl<'de> Shape<'de> for CodingShape {
    type Out = RawCoding;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<RawCoding>, A::Error> {
        let mut coding = RawCoding::default();
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::System => coding.system = value(&mut map, Text, bad)?,
                Key::Code => coding.code = value(&mut map, Text, bad)?,
                Key::Display => coding.display = value(&mut map, Text, bad)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(coding))
    }
}

#[derive(Debug, Default)]
pub(super) struct RawConcept {
    pub(super) coding: Vec<RawCoding>,
    pub(super) text: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) struct ConceptShape;

impl<'de> Shape<'de> for ConceptShape {
    type Out = RawConcept;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<RawConcept>, A::Error> {
        let mut concept = RawConcept::default();
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Coding => concept.coding = value(&mut map, Many(CodingShape), bad)?.unwrap_or_default(),
                Key::Text => concept.text = value(&mut map, Text, bad)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(concept))
    }
}

impl RawConcept {
    pub(super) fn into_concept(self) -> Concept {
        let codings = self
            .coding
            .into_iter()
            .filter_map(|c| {
                Some(Coding {
                    system: c.system.unwrap_or_default(),
                    code: c.code?,
                    display: c.display,
                })
            })
            .collect();
        Concept {
            codings,
            text: self.text,
        }
    }
}

/// One string field of an object: a Reference's `reference`, an OperationOutcome issue's `severity`.
#[derive(Clone, Copy)]
pub(super) struct FieldOf(pub(super) Key);

impl<'de> Shape<'de> for FieldOf {
    type Out = Option<String>;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<Option<String>>, A::Error> {
        let mut found = None;
        while let Some(key) = next_key(&mut map)? {
            if key == self.0 {
                found = value(&mut map, Text, bad)?;
            } else {
                skip(&mut map)?;
            }
        }
        Ok(Some(found))
    }
}

#[derive(Debug, Default)]
pub(super) struct RawPeriod {
    pub(super) start: Option<String>,
    pub(super) end: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) struct PeriodShape;

impl<'de> Shape<'de> for PeriodShape {
    type Out = RawPeriod;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<RawPeriod>, A::Error> {
        let mut period = RawPeriod::default();
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Start => period.start = value(&mut map, Text, bad)?,
                Key::End => period.end = value(&mut map, Text, bad)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(period))
    }
}

/// A Condition status: a CodeableConcept in R4, a plain code in STU3 and DSTU2. Either way, its code.
#[derive(Clone, Copy)]
pub(super) struct StatusShape;

impl<'de> Shape<'de> for StatusShape {
    type Out = String;
    fn string(self, code: &str, _: &mut bool) -> Option<String> {
        Some(code.to_owned())
    }
    fn map<A: MapAccess<'de>>(self, map: A, bad: &mut bool) -> Result<Option<String>, A::Error> {
        let concept = ConceptShape.map(map, bad)?;
        Ok(concept.and_then(|c| c.coding.into_iter().find_map(|c| c.code)))
    }
}

/// A boolean (`notDone`, `wasNotTaken`, `abatementBoolean`).
#[derive(Clone, Copy)]
pub(super) struct Flag;

impl<'de> Shape<'de> for Flag {
    type Out = bool;
    fn boolean(self, flag: bool, _: &mut bool) -> Option<bool> {
        Some(flag)
    }
}

/// A JSON number (a Quantity's `value`).
#[derive(Clone, Copy)]
pub(super) struct Number;

impl<'de> Shape<'de> for Number {
    type Out = f64;
    fn number(self, number: f64, _: &mut bool) -> Option<f64> {
        Some(number)
    }
}

/// The unit of an age: UCUM `a`, `mo`, `wk`, `d`, or the words senders spell out (`year(s)`, …).
pub(super) fn age_unit(unit: &str) -> Option<AgeUnit> {
    let unit = unit.trim();
    Some(match unit {
        "a" => AgeUnit::Years,
        "mo" => AgeUnit::Months,
        "wk" => AgeUnit::Weeks,
        "d" => AgeUnit::Days,
        _ => match unit.to_ascii_lowercase().as_str() {
            "year" | "years" | "yr" | "yrs" | "y" | "ys" => AgeUnit::Years,
            "month" | "months" | "mos" | "mth" | "mths" => AgeUnit::Months,
            "week" | "weeks" | "wks" | "w" => AgeUnit::Weeks,
            "day" | "days" => AgeUnit::Days,
            _ => return None,
        },
    })
}

/// What an age Quantity bounds: (low, high). An exact age bounds both ends; `<`/`<=` only the high end, `>`/`>=`
/// only the low one. A quantity without a readable unit (by `code`, else `unit`) or without a finite,
/// non-negative `value` bounds nothing.
pub(super) type AgeBounds = (Option<Age>, Option<Age>);

/// An `Age` (or a DSTU2 `Quantity` standing for one), read as [`AgeBounds`].
#[derive(Clone, Copy)]
pub(super) struct AgeShape;

impl<'de> Shape<'de> for AgeShape {
    type Out = AgeBounds;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<AgeBounds>, A::Error> {
        let (mut number, mut unit, mut code, mut comparator) = (None, None, None, None);
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Value => number = value(&mut map, Number, bad)?,
                Key::Unit => unit = value(&mut map, Text, bad)?,
                Key::Code => code = value(&mut map, Text, bad)?,
                Key::Comparator => comparator = value(&mut map, Text, bad)?,
                _ => skip(&mut map)?,
            }
        }
        let unit = code
            .as_deref()
            .and_then(age_unit)
            .or_else(|| unit.as_deref().and_then(age_unit));
        let age = match (number, unit) {
            (Some(value), Some(unit)) if value.is_finite() && value >= 0.0 => Age { value, unit },
            _ => return Ok(Some((None, None))),
        };
        Ok(Some(match comparator.as_deref() {
            Some("<" | "<=") => (None, Some(age)),
            Some(">" | ">=") => (Some(age), None),
            _ => (Some(age), Some(age)),
        }))
    }
}

/// A `Range` of ages: its `low` and `high` ends, each an age or nothing.
#[derive(Clone, Copy)]
pub(super) struct AgeRangeShape;

impl<'de> Shape<'de> for AgeRangeShape {
    type Out = AgeBounds;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<AgeBounds>, A::Error> {
        let (mut low, mut high) = (None, None);
        while let Some(key) = next_key(&mut map)? {
            match key {
                // A Range's ends take no comparator: each is the age it states.
                Key::Low => low = value(&mut map, AgeShape, bad)?.and_then(|(low, high)| low.or(high)),
                Key::High => high = value(&mut map, AgeShape, bad)?.and_then(|(low, high)| low.or(high)),
                _ => skip(&mut map)?,
            }
        }
        Ok(Some((low, high)))
    }
}

/// A Reference: its `reference` and `display`.
#[derive(Debug, Default)]
pub(super) struct RawReference {
    pub(super) reference: Option<String>,
    pub(super) display: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) struct ReferenceShape;

impl<'de> Shape<'de> for ReferenceShape {
    type Out = RawReference;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<RawReference>, A::Error> {
        let mut reference = RawReference::default();
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Reference => reference.reference = value(&mut map, Text, bad)?,
                Key::Display => reference.display = value(&mut map, Text, bad)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(reference))
    }
}

/// A Bundle link: (relation, url).
#[derive(Clone, Copy)]
pub(super) struct LinkShape;

impl<'de> Shape<'de> for LinkShape {
    type Out = (Option<String>, Option<String>);
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let (mut relation, mut url) = (None, None);
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Relation => relation = value(&mut map, Text, bad)?,
                Key::Url => url = value(&mut map, Text, bad)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some((relation, url)))
    }
}

/// The first of `candidates` that reads as a date (see [`parse_fhir_span`]).
pub(super) fn first_span(candidates: &[Option<&str>]) -> Option<DateSpan> {
    candidates.iter().flatten().find_map(|s| parse_fhir_span(s))
}

/// A Period's start, else its end.
pub(super) fn start_else_end(p: &Option<RawPeriod>) -> Option<DateSpan> {
    p.as_ref()
        .and_then(|p| first_span(&[p.start.as_deref(), p.end.as_deref()]))
}

/// A Period's end, when it has a start too: the care went on until then (a period with only an end is dated by
/// its end already).
pub(super) fn period_end(p: &Option<RawPeriod>) -> Option<DateSpan> {
    let p = p.as_ref()?;
    first_span(&[p.start.as_deref()])?;
    first_span(&[p.end.as_deref()])
}

/// Text that says something: not empty or blank.
pub(super) fn non_blank(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use crate::fhir::tests::condition;
    use crate::fhir::{Resource, parse_contents, parse_resource};
    use crate::record::{AgeUnit, Onset};

    #[test]
    fn age_units_by_code_else_unit() {
        for (quantity, unit) in [
            (r#"{"value":1,"code":"a"}"#, Some(AgeUnit::Years)),
            (r#"{"value":1,"code":"mo"}"#, Some(AgeUnit::Months)),
            (r#"{"value":1,"code":"wk"}"#, Some(AgeUnit::Weeks)),
            (r#"{"value":1,"code":"d"}"#, Some(AgeUnit::Days)),
            (r#"{"value":1,"unit":"year"}"#, Some(AgeUnit::Years)),
            (r#"{"value":1,"unit":"years"}"#, Some(AgeUnit::Years)),
            (r#"{"value":1,"unit":"month"}"#, Some(AgeUnit::Months)),
            (r#"{"value":1,"unit":"Weeks"}"#, Some(AgeUnit::Weeks)),
            (r#"{"value":1,"unit":" day "}"#, Some(AgeUnit::Days)),
            (r#"{"value":1,"unit":"days"}"#, Some(AgeUnit::Days)),
            (r#"{"value":1,"unit":"a"}"#, Some(AgeUnit::Years)),
            // The code wins over the unit; an unknown code leaves the unit to decide.
            (r#"{"value":1,"unit":"years","code":"mo"}"#, Some(AgeUnit::Months)),
            (r#"{"value":1,"unit":"weeks","code":"258707000"}"#, Some(AgeUnit::Weeks)),
            (r#"{"value":1,"unit":"min","code":"min"}"#, None),
            (r#"{"value":1,"code":"A"}"#, None),
        ] {
            let c = condition(&format!(r#""onsetAge":{quantity}"#));
            let read = match c.onset {
                Some(Onset::Age { low, .. }) => low.map(|a| a.unit),
                _ => None,
            };
            assert_eq!(read, unit, "{quantity}");
        }
    }

    #[test]
    fn statuses_as_codeable_concepts_or_codes() {
        let r4 = condition(
            r#""clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code":"resolved"}]},"verificationStatus":{"coding":[{"code":"provisional"}],"text":"?"}"#,
        );
        assert_eq!(
            (r4.clinical_status.as_deref(), r4.verification_status.as_deref()),
            (Some("resolved"), Some("provisional"))
        );
        let stu3 = condition(r#""clinicalStatus":"remission","verificationStatus":"differential""#);
        assert_eq!(
            (stu3.clinical_status.as_deref(), stu3.verification_status.as_deref()),
            (Some("remission"), Some("differential"))
        );
    }

    #[test]
    fn keys_in_any_order_escaped_or_repeated() {
        // resourceType last, a key spelled with an escape, a repeated key (the last wins), unknown keys of every
        // JSON kind, and a Bundle in which the entries come before resourceType.
        let condition = r#"{"code":{"text":"Neck pain","extra":[1,{"a":null}]},"clinicalStatus":"active",
            "verificationStatus":"refuted","verificationStatus":"confirmed","meta":{"tag":[true,false,1.5e3]},
            "resource\u0054ype":"Condition"}"#;
        let Resource::Condition(c) = parse_resource(condition).unwrap() else {
            panic!()
        };
        assert_eq!(c.code.text.as_deref(), Some("Neck pain"));
        assert_eq!(c.verification_status.as_deref(), Some("confirmed"));
        let bundle = format!(r#"{{"entry":[{{"resource":{condition}}}],"type":"searchset","resourceType":"Bundle"}}"#);
        let contents = parse_contents(&bundle, usize::MAX).unwrap();
        assert!(contents.bundle);
        assert_eq!(contents.resources.len(), 1);
    }
}
