//! Lenient, lean reading of FHIR JSON (R4, with STU3 and DSTU2 shapes tolerated) into [`crate::record`].
//!
//! Why not fhir-sdk's models here: they reject what real clients send (a Bundle without `type`, a
//! `reasonCode` object instead of an array, DSTU2 resources), one bad entry fails a whole Bundle, their error
//! messages can echo patient data, and building full models costs ~8× a lean parse (../shared/RUST-NOTES.md).
//! fhir-sdk's `r4b` models are used where they earn their place: validating the resources the cards suggest.
//!
//! Why hand-written visitors: a Bundle is read in one pass, straight into flat structs that keep only the
//! fields the rules use. Every reader here is lenient ([`Shape`]): a value of the wrong JSON kind is skipped
//! and marks its resource as malformed instead of failing the parse, so one bad entry costs only itself (it is
//! skipped and counted) and the Bundle need not be split into raw entries and scanned again. Only invalid JSON
//! stops the read. Profiling showed that splitting first (the Bundle, then each entry) scanned every byte of a
//! prefetched record three times (README "Performance").
//!
//! A resource's `contained` resources are read in the same pass, only for their Medications (a
//! `medicationReference` to `#id` is resolved when the resource ends), and nothing in them marks their
//! container malformed. Other references to Medications are kept for the record to resolve
//! ([`crate::record::PatientRecord::resolve_medication_references`]), with their `display` as the drug's text.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

use crate::record::{
    Abatement, Age, AgeUnit, Coding, Concept, Condition, DateSpan, Medication, MedicationSource, Onset, Order,
    Procedure, parse_fhir_span,
};

/// A lenient reader for one JSON shape. It takes the JSON kinds it knows; any other kind is consumed and sets
/// `bad` (the resource being read is malformed). `null` is absence, never malformed.
trait Shape<'de>: Copy {
    type Out;
    fn string(self, _text: &str, bad: &mut bool) -> Option<Self::Out> {
        *bad = true;
        None
    }
    fn boolean(self, _flag: bool, bad: &mut bool) -> Option<Self::Out> {
        *bad = true;
        None
    }
    fn number(self, _number: f64, bad: &mut bool) -> Option<Self::Out> {
        *bad = true;
        None
    }
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        *bad = true;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        *bad = true;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Reads one value with a [`Shape`]: `None` when it is null or of a kind the shape does not take.
struct Lenient<'b, S> {
    shape: S,
    bad: &'b mut bool,
}

impl<'de, S: Shape<'de>> DeserializeSeed<'de> for Lenient<'_, S> {
    type Value = Option<S::Out>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: Shape<'de>> Visitor<'de> for Lenient<'_, S> {
    type Value = Option<S::Out>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(self.shape.string(text, self.bad))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(self.shape.boolean(flag, self.bad))
    }
    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
        Ok(self.shape.number(number as f64, self.bad))
    }
    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
        Ok(self.shape.number(number as f64, self.bad))
    }
    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
        Ok(self.shape.number(number, self.bad))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.shape.map(map, self.bad)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.shape.seq(seq, self.bad)
    }
}

/// The object keys any shape here reads, so a key is matched once and never allocated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    System,
    Code,
    Display,
    Coding,
    Text,
    Start,
    End,
    Reference,
    Severity,
    Relation,
    Url,
    Resource,
    ResourceType,
    Id,
    Status,
    ClinicalStatus,
    VerificationStatus,
    OnsetDateTime,
    OnsetPeriod,
    RecordedDate,
    DateRecorded,
    BodySite,
    ReasonCode,
    ReasonCodeableConcept,
    ReasonReference,
    MedicationCodeableConcept,
    AuthoredOn,
    DateWritten,
    EffectiveDateTime,
    EffectivePeriod,
    DateAsserted,
    PerformedDateTime,
    PerformedPeriod,
    Issue,
    Entry,
    Link,
    Value,
    Unit,
    Comparator,
    Low,
    High,
    OnsetAge,
    OnsetQuantity,
    OnsetRange,
    OnsetString,
    AssertedDate,
    AbatementDateTime,
    AbatementPeriod,
    AbatementAge,
    AbatementQuantity,
    AbatementRange,
    AbatementBoolean,
    AbatementString,
    MedicationReference,
    Contained,
    Intent,
    Taken,
    WasNotTaken,
    NotTaken,
    DoNotPerform,
    NotDone,
    NotPerformed,
    BirthDate,
    FullUrl,
    Note,
    Evidence,
    Detail,
    Dosage,
    DosageInstruction,
    Route,
    Site,
    Form,
    Other,
}

impl Key {
    fn of(name: &str) -> Key {
        match name {
            "system" => Key::System,
            "code" => Key::Code,
            "display" => Key::Display,
            "coding" => Key::Coding,
            "text" => Key::Text,
            "start" => Key::Start,
            "end" => Key::End,
            "reference" => Key::Reference,
            "severity" => Key::Severity,
            "relation" => Key::Relation,
            "url" => Key::Url,
            "resource" => Key::Resource,
            "resourceType" => Key::ResourceType,
            "id" => Key::Id,
            "status" => Key::Status,
            "clinicalStatus" => Key::ClinicalStatus,
            "verificationStatus" => Key::VerificationStatus,
            "onsetDateTime" => Key::OnsetDateTime,
            "onsetPeriod" => Key::OnsetPeriod,
            "recordedDate" => Key::RecordedDate,
            "dateRecorded" => Key::DateRecorded,
            "bodySite" => Key::BodySite,
            "reasonCode" => Key::ReasonCode,
            "reasonCodeableConcept" => Key::ReasonCodeableConcept,
            "reasonReference" => Key::ReasonReference,
            "medicationCodeableConcept" => Key::MedicationCodeableConcept,
            "authoredOn" => Key::AuthoredOn,
            "dateWritten" => Key::DateWritten,
            "effectiveDateTime" => Key::EffectiveDateTime,
            "effectivePeriod" => Key::EffectivePeriod,
            "dateAsserted" => Key::DateAsserted,
            "performedDateTime" => Key::PerformedDateTime,
            "performedPeriod" => Key::PerformedPeriod,
            "issue" => Key::Issue,
            "entry" => Key::Entry,
            "link" => Key::Link,
            "value" => Key::Value,
            "unit" => Key::Unit,
            "comparator" => Key::Comparator,
            "low" => Key::Low,
            "high" => Key::High,
            "onsetAge" => Key::OnsetAge,
            "onsetQuantity" => Key::OnsetQuantity,
            "onsetRange" => Key::OnsetRange,
            "onsetString" => Key::OnsetString,
            "assertedDate" => Key::AssertedDate,
            "abatementDateTime" => Key::AbatementDateTime,
            "abatementPeriod" => Key::AbatementPeriod,
            "abatementAge" => Key::AbatementAge,
            "abatementQuantity" => Key::AbatementQuantity,
            "abatementRange" => Key::AbatementRange,
            "abatementBoolean" => Key::AbatementBoolean,
            "abatementString" => Key::AbatementString,
            "medicationReference" => Key::MedicationReference,
            "contained" => Key::Contained,
            "intent" => Key::Intent,
            "taken" => Key::Taken,
            "wasNotTaken" => Key::WasNotTaken,
            "notTaken" => Key::NotTaken,
            "doNotPerform" => Key::DoNotPerform,
            "notDone" => Key::NotDone,
            "notPerformed" => Key::NotPerformed,
            "birthDate" => Key::BirthDate,
            "fullUrl" => Key::FullUrl,
            "note" => Key::Note,
            "evidence" => Key::Evidence,
            "detail" => Key::Detail,
            "dosage" => Key::Dosage,
            "dosageInstruction" => Key::DosageInstruction,
            "route" => Key::Route,
            "site" => Key::Site,
            "form" => Key::Form,
            _ => Key::Other,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(Key::of(name))
    }
}

/// The next key of an object, `None` at its end.
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Key>, A::Error> {
    map.next_key_seed(Key::Other)
}

/// The value of the current key, read with `shape`.
fn value<'de, A: MapAccess<'de>, S: Shape<'de>>(
    map: &mut A,
    shape: S,
    bad: &mut bool,
) -> Result<Option<S::Out>, A::Error> {
    map.next_value_seed(Lenient { shape, bad })
}

/// Skips the value of the current key.
fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}

/// A string (codes, ids, dates).
#[derive(Clone, Copy)]
struct Text;

impl<'de> Shape<'de> for Text {
    type Out = String;
    fn string(self, text: &str, _: &mut bool) -> Option<String> {
        Some(text.to_owned())
    }
}

/// An array of items, or one item alone (R4 arrays sent as single objects, DSTU2 singles).
#[derive(Clone, Copy)]
struct Many<S>(S);

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
struct RawCoding {
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
}

#[derive(Clone, Copy)]
struct CodingShape;

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
struct RawConcept {
    coding: Vec<RawCoding>,
    text: Option<String>,
}

#[derive(Clone, Copy)]
struct ConceptShape;

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
    fn into_concept(self) -> Concept {
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
struct FieldOf(Key);

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
struct RawPeriod {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Clone, Copy)]
struct PeriodShape;

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
struct StatusShape;

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
struct Flag;

impl<'de> Shape<'de> for Flag {
    type Out = bool;
    fn boolean(self, flag: bool, _: &mut bool) -> Option<bool> {
        Some(flag)
    }
}

/// A JSON number (a Quantity's `value`).
#[derive(Clone, Copy)]
struct Number;

impl<'de> Shape<'de> for Number {
    type Out = f64;
    fn number(self, number: f64, _: &mut bool) -> Option<f64> {
        Some(number)
    }
}

/// The unit of an age: UCUM `a`, `mo`, `wk`, `d`, or the words senders spell out (`year(s)`, …).
fn age_unit(unit: &str) -> Option<AgeUnit> {
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
type AgeBounds = (Option<Age>, Option<Age>);

/// An `Age` (or a DSTU2 `Quantity` standing for one), read as [`AgeBounds`].
#[derive(Clone, Copy)]
struct AgeShape;

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
struct AgeRangeShape;

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
struct RawReference {
    reference: Option<String>,
    display: Option<String>,
}

#[derive(Clone, Copy)]
struct ReferenceShape;

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

/// A resource's `contained` resources, read like any resource: Medications (for a `medicationReference` to
/// `#id`) and Conditions (for an order's `reasonReference` to `#id`) are kept. Wholly lenient: nothing in
/// `contained` marks the containing resource malformed; a contained resource of the wrong shape is itself
/// dropped.
#[derive(Clone, Copy)]
struct Contained;

impl<'de> Shape<'de> for Contained {
    type Out = Vec<Resource>;
    fn string(self, _: &str, _: &mut bool) -> Option<Self::Out> {
        None
    }
    fn boolean(self, _: bool, _: &mut bool) -> Option<Self::Out> {
        None
    }
    fn number(self, _: f64, _: &mut bool) -> Option<Self::Out> {
        None
    }
    fn map<A: MapAccess<'de>>(self, map: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        Ok(Some(contained_one(ResourceShape { top: false }.map(map, &mut false)?)))
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut resources = Vec::new();
        while let Some(item) = seq.next_element_seed(Lenient {
            shape: ResourceShape { top: false },
            bad: &mut false,
        })? {
            resources.extend(contained_one(item));
        }
        Ok(Some(resources))
    }
}

/// A contained resource kept for a reference to it: a Medication or a Condition with an id, well formed.
fn contained_one(read: Option<(RawResource, bool)>) -> Vec<Resource> {
    match read.map(|(raw, bad)| from_raw(raw, bad)) {
        Some(Ok(resource @ (Resource::MedicationDefinition { id: Some(_), .. } | Resource::Condition(_)))) => {
            vec![resource]
        }
        _ => Vec::new(),
    }
}

/// A `dosage` or `dosageInstruction`: its `route` and `site`.
#[derive(Clone, Copy)]
struct DosageShape;

impl<'de> Shape<'de> for DosageShape {
    type Out = (Option<RawConcept>, Option<RawConcept>);
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let (mut route, mut site) = (None, None);
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Route => route = value(&mut map, ConceptShape, bad)?,
                Key::Site => site = value(&mut map, ConceptShape, bad)?,
                _ => skip(&mut map)?,
            }
        }
        Ok(Some((route, site)))
    }
}

/// A Condition's `evidence`: the text of its `code`s and the `display` of its `detail` references.
#[derive(Clone, Copy)]
struct EvidenceShape;

impl<'de> Shape<'de> for EvidenceShape {
    type Out = Vec<String>;
    fn map<A: MapAccess<'de>>(self, mut map: A, bad: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut texts = Vec::new();
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Code => {
                    for concept in value(&mut map, Many(ConceptShape), bad)?.unwrap_or_default() {
                        texts.extend(concept.text);
                        texts.extend(concept.coding.into_iter().filter_map(|c| c.display));
                    }
                }
                Key::Detail => texts.extend(
                    value(&mut map, Many(FieldOf(Key::Display)), bad)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten(),
                ),
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(texts))
    }
}

/// A Bundle link: (relation, url).
#[derive(Clone, Copy)]
struct LinkShape;

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

/// The union of the fields the rules read, across the resource types the service handles; for a Bundle, also
/// its entries and links. Unknown fields (there are hundreds) are skipped without being built.
#[derive(Debug, Default)]
struct RawResource {
    resource_type: Option<String>,
    id: Option<String>,
    status: Option<String>,
    code: Option<RawConcept>,
    clinical_status: Option<String>,
    verification_status: Option<String>,
    onset_date_time: Option<String>,
    onset_period: Option<RawPeriod>,
    /// `onsetAge`, or DSTU2 `onsetQuantity`.
    onset_age: Option<AgeBounds>,
    onset_range: Option<AgeBounds>,
    onset_string: Option<String>,
    recorded_date: Option<String>,
    asserted_date: Option<String>,
    date_recorded: Option<String>,
    abatement_date_time: Option<String>,
    abatement_period: Option<RawPeriod>,
    /// `abatementAge`, or DSTU2 `abatementQuantity`.
    abatement_age: Option<AgeBounds>,
    abatement_range: Option<AgeBounds>,
    abatement_boolean: Option<bool>,
    abatement_string: Option<String>,
    body_site: Vec<RawConcept>,
    reason_code: Vec<RawConcept>,
    reason_codeable_concept: Option<RawConcept>,
    reason_reference: Vec<RawReference>,
    medication_codeable_concept: Option<RawConcept>,
    medication_reference: Option<RawReference>,
    /// Contained Medications and Conditions.
    contained: Vec<Resource>,
    /// `note[].text` and the texts of `evidence` (a Condition's free text).
    notes: Vec<String>,
    /// `dosage[]`/`dosageInstruction[]`: (route, site).
    dosage: Vec<(Option<RawConcept>, Option<RawConcept>)>,
    /// A Medication's `form`.
    form: Option<RawConcept>,
    intent: Option<String>,
    taken: Option<String>,
    /// DSTU2 `wasNotTaken` or STU3 `notTaken` is true.
    not_taken: bool,
    authored_on: Option<String>,
    date_written: Option<String>,
    effective_date_time: Option<String>,
    effective_period: Option<RawPeriod>,
    date_asserted: Option<String>,
    performed_date_time: Option<String>,
    performed_period: Option<RawPeriod>,
    /// STU3 `notDone` or DSTU2 `notPerformed` is true.
    not_done: bool,
    birth_date: Option<String>,
    issue: Vec<Option<String>>,
    /// Read only at the top level: a Bundle's entries, each already read (`Err` when unreadable).
    entry: Vec<Result<Resource, Unreadable>>,
    /// `entry` was there but not an array: nothing in the Bundle can be trusted then.
    entry_not_array: bool,
    /// Read only at the top level; a malformed link is ignored (it must not spoil the entries).
    link: Vec<(Option<String>, Option<String>)>,
}

/// A resource, with `bad` set when a field the rules read has the wrong shape. `top`: the value a search or
/// prefetch key returned, which may be a Bundle whose entries are read here too.
#[derive(Clone, Copy)]
struct ResourceShape {
    top: bool,
}

impl<'de> Shape<'de> for ResourceShape {
    type Out = (RawResource, bool);
    fn map<A: MapAccess<'de>>(self, mut map: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut raw = RawResource::default();
        let mut bad = false;
        let bad = &mut bad;
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::ResourceType => raw.resource_type = value(&mut map, Text, bad)?,
                Key::Id => raw.id = value(&mut map, Text, bad)?,
                Key::Status => raw.status = value(&mut map, Text, bad)?,
                Key::Code => raw.code = value(&mut map, ConceptShape, bad)?,
                Key::ClinicalStatus => raw.clinical_status = value(&mut map, StatusShape, bad)?,
                Key::VerificationStatus => raw.verification_status = value(&mut map, StatusShape, bad)?,
                Key::OnsetDateTime => raw.onset_date_time = value(&mut map, Text, bad)?,
                Key::OnsetPeriod => raw.onset_period = value(&mut map, PeriodShape, bad)?,
                Key::OnsetAge | Key::OnsetQuantity => raw.onset_age = value(&mut map, AgeShape, bad)?,
                Key::OnsetRange => raw.onset_range = value(&mut map, AgeRangeShape, bad)?,
                Key::OnsetString => raw.onset_string = value(&mut map, Text, bad)?,
                Key::RecordedDate => raw.recorded_date = value(&mut map, Text, bad)?,
                Key::AssertedDate => raw.asserted_date = value(&mut map, Text, bad)?,
                Key::DateRecorded => raw.date_recorded = value(&mut map, Text, bad)?,
                Key::AbatementDateTime => raw.abatement_date_time = value(&mut map, Text, bad)?,
                Key::AbatementPeriod => raw.abatement_period = value(&mut map, PeriodShape, bad)?,
                Key::AbatementAge | Key::AbatementQuantity => raw.abatement_age = value(&mut map, AgeShape, bad)?,
                Key::AbatementRange => raw.abatement_range = value(&mut map, AgeRangeShape, bad)?,
                Key::AbatementBoolean => raw.abatement_boolean = value(&mut map, Flag, bad)?,
                Key::AbatementString => raw.abatement_string = value(&mut map, Text, bad)?,
                Key::BodySite => raw.body_site = value(&mut map, Many(ConceptShape), bad)?.unwrap_or_default(),
                Key::ReasonCode => raw.reason_code = value(&mut map, Many(ConceptShape), bad)?.unwrap_or_default(),
                Key::ReasonCodeableConcept => raw.reason_codeable_concept = value(&mut map, ConceptShape, bad)?,
                Key::ReasonReference => {
                    raw.reason_reference = value(&mut map, Many(ReferenceShape), bad)?.unwrap_or_default()
                }
                Key::MedicationCodeableConcept => raw.medication_codeable_concept = value(&mut map, ConceptShape, bad)?,
                Key::MedicationReference => raw.medication_reference = value(&mut map, ReferenceShape, bad)?,
                Key::Contained => raw.contained = value(&mut map, Contained, bad)?.unwrap_or_default(),
                Key::Note => raw.notes.extend(
                    value(&mut map, Many(FieldOf(Key::Text)), bad)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten(),
                ),
                Key::Evidence => {
                    raw.notes.extend(
                        value(&mut map, Many(EvidenceShape), bad)?
                            .unwrap_or_default()
                            .into_iter()
                            .flatten(),
                    );
                }
                Key::Dosage | Key::DosageInstruction => raw
                    .dosage
                    .extend(value(&mut map, Many(DosageShape), bad)?.unwrap_or_default()),
                Key::Form => raw.form = value(&mut map, ConceptShape, bad)?,
                Key::Intent => raw.intent = value(&mut map, Text, bad)?,
                Key::Taken => raw.taken = value(&mut map, Text, bad)?,
                Key::WasNotTaken | Key::NotTaken | Key::DoNotPerform => {
                    raw.not_taken |= value(&mut map, Flag, bad)?.unwrap_or(false)
                }
                Key::AuthoredOn => raw.authored_on = value(&mut map, Text, bad)?,
                Key::DateWritten => raw.date_written = value(&mut map, Text, bad)?,
                Key::EffectiveDateTime => raw.effective_date_time = value(&mut map, Text, bad)?,
                Key::EffectivePeriod => raw.effective_period = value(&mut map, PeriodShape, bad)?,
                Key::DateAsserted => raw.date_asserted = value(&mut map, Text, bad)?,
                Key::PerformedDateTime => raw.performed_date_time = value(&mut map, Text, bad)?,
                Key::PerformedPeriod => raw.performed_period = value(&mut map, PeriodShape, bad)?,
                Key::NotDone | Key::NotPerformed => raw.not_done |= value(&mut map, Flag, bad)?.unwrap_or(false),
                Key::BirthDate => raw.birth_date = value(&mut map, Text, bad)?,
                Key::Issue => raw.issue = value(&mut map, Many(FieldOf(Key::Severity)), bad)?.unwrap_or_default(),
                Key::Entry if self.top => {
                    let mut not_array = false;
                    raw.entry = value(&mut map, Entries, &mut not_array)?.unwrap_or_default();
                    raw.entry_not_array = not_array;
                }
                Key::Link if self.top => {
                    raw.link = value(&mut map, Many(LinkShape), &mut false)?.unwrap_or_default();
                }
                _ => skip(&mut map)?,
            }
        }
        Ok(Some((raw, *bad)))
    }
}

/// A Bundle's `entry` array: each entry read on its own, so that one bad entry is only itself skipped.
#[derive(Clone, Copy)]
struct Entries;

impl<'de> Shape<'de> for Entries {
    type Out = Vec<Result<Resource, Unreadable>>;
    fn seq<A: SeqAccess<'de>>(self, mut seq: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut entries = Vec::new();
        loop {
            let mut not_an_entry = false;
            let entry = seq.next_element_seed(Lenient {
                shape: EntryShape,
                bad: &mut not_an_entry,
            })?;
            match entry {
                None => return Ok(Some(entries)),
                Some(Some(resource)) => entries.push(resource),
                Some(None) => entries.push(Err(Unreadable::Invalid)),
            }
        }
    }
}

/// One Bundle entry: its `resource`, read. A Medication without an `id` takes the id its `fullUrl` gives
/// (`urn:uuid:…` in transaction and collection Bundles), since that is how the entries refer to it.
#[derive(Clone, Copy)]
struct EntryShape;

impl<'de> Shape<'de> for EntryShape {
    type Out = Result<Resource, Unreadable>;
    fn map<A: MapAccess<'de>>(self, mut map: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut resource = Err(Unreadable::Invalid);
        let mut full_url = None;
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Resource => {
                    if let Some((raw, bad)) = value(&mut map, ResourceShape { top: false }, &mut false)? {
                        resource = from_raw(raw, bad);
                    }
                }
                // Only a help for Medications without an id: a malformed one is ignored.
                Key::FullUrl => full_url = value(&mut map, Text, &mut false)?,
                _ => skip(&mut map)?,
            }
        }
        // A Condition of a draft-orders Bundle is referred to the same way (`urn:uuid:…`) by the order it is for.
        if let (Ok(Resource::Condition(c)), Some(url)) = (&mut resource, &full_url) {
            c.full_url = Some(url.clone());
        }
        let id = match &mut resource {
            Ok(Resource::MedicationDefinition { id, .. }) => Some(id),
            Ok(Resource::Condition(c)) => Some(&mut c.id),
            _ => None,
        };
        if let (Some(id @ None), Some(full_url)) = (id, full_url) {
            let local = full_url.strip_prefix("urn:uuid:").unwrap_or(&full_url);
            *id = local.rsplit('/').next().filter(|s| !s.is_empty()).map(str::to_owned);
        }
        Ok(Some(resource))
    }
}

/// The first of `candidates` that reads as a date (see [`parse_fhir_span`]).
fn first_span(candidates: &[Option<&str>]) -> Option<DateSpan> {
    candidates.iter().flatten().find_map(|s| parse_fhir_span(s))
}

/// A Period's start, else its end.
fn start_else_end(p: &Option<RawPeriod>) -> Option<DateSpan> {
    p.as_ref()
        .and_then(|p| first_span(&[p.start.as_deref(), p.end.as_deref()]))
}

/// A Period's end, when it has a start too: the care went on until then (a period with only an end is dated by
/// its end already).
fn period_end(p: &Option<RawPeriod>) -> Option<DateSpan> {
    let p = p.as_ref()?;
    first_span(&[p.start.as_deref()])?;
    first_span(&[p.end.as_deref()])
}

/// Text that says something: not empty or blank.
fn non_blank(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

/// `onset[x]`, in the order: `onsetDateTime`, `onsetPeriod` (its start; only an end: not after it),
/// `onsetAge`/`onsetQuantity`, `onsetRange`, `onsetString`. A value that cannot be read as such is passed over.
fn onset(raw: &mut RawResource) -> Option<Onset> {
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
fn abatement(raw: &mut RawResource) -> Option<Abatement> {
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

/// The drug of a medication resource, and its `medicationReference` while unresolved. A `medicationCodeableConcept`
/// names it; else a reference to a contained Medication (`#id`) gives that Medication's code; else the reference
/// is kept for [`crate::record::PatientRecord::resolve_medication_references`], with its `display` as the text.
fn medication_code(raw: &mut RawResource) -> (Concept, Option<String>) {
    if let Some(concept) = raw.medication_codeable_concept.take() {
        return (concept.into_concept(), None);
    }
    let Some(reference) = raw.medication_reference.take() else {
        return (Concept::default(), None);
    };
    let display = non_blank(reference.display);
    let Some(target) = non_blank(reference.reference) else {
        return (
            Concept {
                codings: Vec::new(),
                text: display,
            },
            None,
        );
    };
    if let Some(local) = target.strip_prefix('#')
        && let Some(at) = raw
            .contained
            .iter()
            .position(|r| matches!(r, Resource::MedicationDefinition { id: Some(id), .. } if id == local))
        && let Resource::MedicationDefinition { mut code, form, .. } = raw.contained.swap_remove(at)
    {
        if code.text.is_none() {
            code.text = display;
        }
        raw.form = form.map(|f| RawConcept {
            coding: f
                .codings
                .into_iter()
                .map(|c| RawCoding {
                    system: Some(c.system),
                    code: Some(c.code),
                    display: c.display,
                })
                .collect(),
            text: f.text,
        });
        return (code, None);
    }
    (
        Concept {
            codings: Vec::new(),
            text: display,
        },
        Some(target),
    )
}

/// A resource of a type the service reads, after lenient parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Condition(Condition),
    Medication(Medication),
    /// A Medication resource (`_include`d by a search, or any entry): what a `medicationReference` points to.
    /// `id` is the resource's id, else the last segment of its entry's `fullUrl`.
    MedicationDefinition {
        id: Option<String>,
        code: Concept,
        /// Its dose `form` (ophthalmic solution, oral tablet…).
        form: Option<Concept>,
    },
    Procedure(Procedure),
    Order(Order),
    /// A Patient: only its `birthDate` is read.
    Patient {
        birth_date: Option<DateSpan>,
    },
    /// An AllergyIntolerance: its substance (`code`), and whether it stands (`clinicalStatus`,
    /// `verificationStatus`).
    Allergy {
        code: Concept,
        current: bool,
    },
    /// An OperationOutcome: `failed` when it carries an error or fatal issue (a query failed), not when it is
    /// only informational (servers add those to successful searches).
    Outcome {
        failed: bool,
    },
    /// A resource type the rules do not use (Observation, Encounter…).
    Other,
}

/// Why a resource could not be read. Deliberately carries no detail: serde's messages can quote values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Not a resource, or a resource of a type the rules read whose fields have the wrong shapes.
    Invalid,
}

/// The resource types whose fields the rules read: only in these is a field of the wrong shape an error. Any
/// other type may use the same field names with other shapes.
const READ: [&str; 12] = [
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationOrder",
    "Medication",
    "Procedure",
    "ServiceRequest",
    "ProcedureRequest",
    "Patient",
    "OperationOutcome",
    "Bundle",
    "AllergyIntolerance",
];

fn from_raw(mut raw: RawResource, bad: bool) -> Result<Resource, Unreadable> {
    let resource_type = raw.resource_type.take().ok_or(Unreadable::Invalid)?;
    if !READ.contains(&resource_type.as_str()) {
        return Ok(Resource::Other);
    }
    if bad {
        return Err(Unreadable::Invalid);
    }
    Ok(match resource_type.as_str() {
        "Condition" => Resource::Condition(Condition {
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
        }),
        "MedicationStatement" | "MedicationRequest" | "MedicationOrder" => {
            let source = match resource_type.as_str() {
                "MedicationStatement" => MedicationSource::Statement,
                "MedicationRequest" => MedicationSource::Request,
                _ => MedicationSource::Order,
            };
            let effective = first_span(&[raw.effective_date_time.as_deref()]).or(start_else_end(&raw.effective_period));
            let until = period_end(&raw.effective_period);
            let asserted_only = effective.is_none() && raw.date_asserted.is_some();
            let date = effective.or(first_span(&[
                raw.date_asserted.as_deref(),
                raw.authored_on.as_deref(),
                raw.date_written.as_deref(),
            ]));
            let (code, medication_reference) = medication_code(&mut raw);
            let mut routes: Vec<Concept> = Vec::new();
            let mut sites: Vec<Concept> = Vec::new();
            for (route, site) in raw.dosage {
                routes.extend(route.map(RawConcept::into_concept));
                sites.extend(site.map(RawConcept::into_concept));
            }
            routes.extend(raw.form.map(RawConcept::into_concept));
            Resource::Medication(Medication {
                routes,
                sites,
                until,
                id: raw.id,
                source,
                code,
                medication_reference,
                status: raw.status,
                intent: raw.intent,
                taken: raw.taken,
                not_taken: raw.not_taken,
                date,
                asserted_only,
            })
        }
        "Medication" => Resource::MedicationDefinition {
            id: raw.id,
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            form: raw.form.map(RawConcept::into_concept),
        },
        "Procedure" => Resource::Procedure(Procedure {
            id: raw.id,
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            status: raw.status,
            not_done: raw.not_done,
            date: first_span(&[raw.performed_date_time.as_deref()]).or(start_else_end(&raw.performed_period)),
            until: period_end(&raw.performed_period),
            body_sites: raw.body_site.into_iter().map(RawConcept::into_concept).collect(),
        }),
        "ServiceRequest" | "ProcedureRequest" => {
            let mut reason_codes: Vec<Concept> = raw.reason_code.into_iter().map(RawConcept::into_concept).collect();
            reason_codes.extend(raw.reason_codeable_concept.map(RawConcept::into_concept));
            Resource::Order(Order {
                resource_type,
                id: raw.id,
                code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
                reason_codes,
                reason_references: raw
                    .reason_reference
                    .into_iter()
                    .filter(|r| r.reference.is_some() || r.display.is_some())
                    .map(|r| crate::record::Reference {
                        reference: r.reference,
                        display: r.display,
                    })
                    .collect(),
                body_sites: raw.body_site.into_iter().map(RawConcept::into_concept).collect(),
                contained_conditions: raw
                    .contained
                    .into_iter()
                    .filter_map(|r| match r {
                        Resource::Condition(c) => Some(c),
                        _ => None,
                    })
                    .collect(),
            })
        }
        "Patient" => Resource::Patient {
            birth_date: first_span(&[raw.birth_date.as_deref()]),
        },
        // Only an allergy that stands: not refuted, entered in error, inactive or resolved.
        "AllergyIntolerance" => Resource::Allergy {
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            current: !matches!(
                raw.verification_status
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("refuted" | "entered-in-error")
            ) && !matches!(
                raw.clinical_status.as_deref().map(str::to_ascii_lowercase).as_deref(),
                Some("inactive" | "resolved")
            ),
        },
        "OperationOutcome" => Resource::Outcome {
            failed: raw
                .issue
                .iter()
                .any(|severity| matches!(severity.as_deref(), Some("error" | "fatal"))),
        },
        // A Bundle inside a Bundle: its entries are not read.
        _ => Resource::Other,
    })
}

/// Reads one JSON value with `shape`; `None` when it is not valid JSON or not of a kind the shape takes.
fn read_json<'de, S: Shape<'de>>(json: &'de str, shape: S) -> Option<S::Out> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let out = Lenient { shape, bad: &mut false }
        .deserialize(&mut deserializer)
        .ok()??;
    deserializer.end().ok()?;
    Some(out)
}

/// Reads one resource. Only structure is checked; missing fields are fine.
pub fn parse_resource(json: &str) -> Result<Resource, Unreadable> {
    let (raw, bad) = read_json(json, ResourceShape { top: false }).ok_or(Unreadable::Invalid)?;
    from_raw(raw, bad)
}

/// The contents of a Bundle or a single resource, read entry by entry.
#[derive(Debug, Default)]
pub struct Contents {
    pub resources: Vec<Resource>,
    /// Entries that were present but unreadable.
    pub skipped: usize,
    /// The value was a Bundle (not a single resource).
    pub bundle: bool,
    /// The Bundle's `next` page: there is more than this.
    pub next: Option<String>,
}

impl Contents {
    /// An OperationOutcome with an error came instead of, or among, the resources: a search failed.
    pub fn outcome_error(&self) -> bool {
        self.resources.contains(&Resource::Outcome { failed: true })
    }
}

/// Reads a value that should be a Bundle (any `type`, or none) or a single resource, in one pass. `Err` when
/// the value is not valid JSON, not an object with a `resourceType`, a single resource that is unreadable, or
/// a Bundle whose `entry` is not an array: nothing in it can be trusted then.
pub fn parse_contents(json: &str) -> Result<Contents, Unreadable> {
    let (raw, bad) = read_json(json, ResourceShape { top: true }).ok_or(Unreadable::Invalid)?;
    contents(raw, bad)
}

/// A prefetch value: `None` for `null` (the EHR has no such data), else as [`parse_contents`].
pub fn parse_prefetch_value(json: &str) -> Option<Result<Contents, Unreadable>> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let Ok(read) = PrefetchSeed.deserialize(&mut deserializer) else {
        return Some(Err(Unreadable::Invalid));
    };
    match deserializer.end() {
        Ok(()) => read,
        Err(_) => Some(Err(Unreadable::Invalid)),
    }
}

/// Reads a prefetch value where it stands, inside the parse of the whole hook request (see
/// [`crate::wire`]), so that a prefetched record is scanned once. Its value is [`parse_prefetch_value`]'s.
/// Never fails on valid JSON.
pub struct PrefetchSeed;

impl<'de> DeserializeSeed<'de> for PrefetchSeed {
    type Value = Option<Result<Contents, Unreadable>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let mut not_an_object = false;
        let read = Lenient {
            shape: ResourceShape { top: true },
            bad: &mut not_an_object,
        }
        .deserialize(deserializer)?;
        Ok(match read {
            Some((raw, bad)) => Some(contents(raw, bad)),
            None if not_an_object => Some(Err(Unreadable::Invalid)),
            None => None,
        })
    }
}

fn contents(mut raw: RawResource, bad: bool) -> Result<Contents, Unreadable> {
    if raw.resource_type.as_deref() != Some("Bundle") {
        return Ok(Contents {
            resources: vec![from_raw(raw, bad)?],
            ..Contents::default()
        });
    }
    if raw.entry_not_array {
        return Err(Unreadable::Invalid);
    }
    let next = std::mem::take(&mut raw.link)
        .into_iter()
        .find(|(relation, _)| relation.as_deref() == Some("next"))
        .and_then(|(_, url)| url);
    let mut contents = Contents {
        bundle: true,
        next,
        ..Contents::default()
    };
    for entry in raw.entry {
        match entry {
            Ok(resource) => contents.resources.push(resource),
            Err(Unreadable::Invalid) => contents.skipped += 1,
        }
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    use crate::record::{Abatement, Age, AgeUnit, DateSpan, MedicationSource, Onset};

    fn span(text: &str) -> DateSpan {
        parse_fhir_span(text).unwrap()
    }

    /// Reads `fields` (the inside of a JSON object) as a resource of `resource_type`.
    fn read(resource_type: &str, fields: &str) -> Resource {
        let json = format!(
            r#"{{"resourceType":"{resource_type}"{}{fields}}}"#,
            if fields.is_empty() { "" } else { "," }
        );
        parse_resource(&json).unwrap_or_else(|_| panic!("unreadable: {json}"))
    }

    fn condition(fields: &str) -> Condition {
        match read("Condition", fields) {
            Resource::Condition(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn medication(resource_type: &str, fields: &str) -> Medication {
        match read(resource_type, fields) {
            Resource::Medication(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn procedure(fields: &str) -> Procedure {
        match read("Procedure", fields) {
            Resource::Procedure(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn age(value: f64, unit: AgeUnit) -> Option<Age> {
        Some(Age { value, unit })
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
    fn medication_sources_intents_and_what_was_not_taken() {
        // R4 MedicationRequest.
        let m = medication(
            "MedicationRequest",
            r#""status":"draft","intent":"proposal","authoredOn":"2026-11-01T09:00:00Z",
            "medicationCodeableConcept":{"text":"ibuprofen"}"#,
        );
        assert_eq!(m.source, MedicationSource::Request);
        assert_eq!(
            (m.status.as_deref(), m.intent.as_deref()),
            (Some("draft"), Some("proposal"))
        );
        assert_eq!(m.date, Some(span("2026-11-01")));
        assert!(!m.not_taken);
        // STU3 MedicationStatement: taken, notTaken.
        let m = medication(
            "MedicationStatement",
            r#""status":"intended","taken":"n","effectivePeriod":{"end":"2025-05"},"dateAsserted":"2025-06-01""#,
        );
        assert_eq!(m.source, MedicationSource::Statement);
        assert_eq!(m.taken.as_deref(), Some("n"));
        assert_eq!(m.date, Some(span("2025-05")));
        let m = medication("MedicationStatement", r#""notTaken":true"#);
        assert!(m.not_taken);
        // DSTU2 MedicationStatement wasNotTaken; DSTU2 MedicationOrder.
        let m = medication("MedicationStatement", r#""wasNotTaken":true,"dateAsserted":"2015""#);
        assert!(m.not_taken);
        assert_eq!(m.date, Some(span("2015")));
        let m = medication("MedicationStatement", r#""wasNotTaken":false,"notTaken":null"#);
        assert!(!m.not_taken);
        let m = medication(
            "MedicationOrder",
            r#""status":"draft","dateWritten":"2015-03-04","medicationCodeableConcept":{"text":"naproxen"}"#,
        );
        assert_eq!(m.source, MedicationSource::Order);
        assert_eq!(m.date, Some(span("2015-03-04")));
        assert_eq!(m.status.as_deref(), Some("draft"));
    }

    #[test]
    fn medication_dates_in_order_of_preference() {
        let all = r#""dateWritten":"2011","authoredOn":"2012","dateAsserted":"2013",
            "effectivePeriod":{"start":"2014"},"effectiveDateTime":"2015""#;
        assert_eq!(medication("MedicationStatement", all).date, Some(span("2015")));
        for (fields, expected) in [
            (r#""effectivePeriod":{"start":"2014"},"dateAsserted":"2013""#, "2014"),
            (
                r#""effectivePeriod":{"end":"2014-02"},"dateAsserted":"2013""#,
                "2014-02",
            ),
            (
                r#""effectiveDateTime":"?","dateAsserted":"2013","authoredOn":"2012""#,
                "2013",
            ),
            (r#""authoredOn":"2012","dateWritten":"2011""#, "2012"),
            (r#""dateWritten":"2011""#, "2011"),
        ] {
            assert_eq!(
                medication("MedicationStatement", fields).date,
                Some(span(expected)),
                "{fields}"
            );
        }
        assert_eq!(medication("MedicationRequest", "").date, None);
    }

    #[test]
    fn medication_references_contained_before_or_after() {
        let contained = r#""contained":[{"resourceType":"Organization","id":"org","name":7,"code":"x"},
            {"resourceType":"Medication","id":"med1","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm",
            "code":"197806","display":"ibuprofen 600 MG Oral Tablet"}]}}]"#;
        let reference = r##""medicationReference":{"reference":"#med1","display":"Ibuprofen 600"}"##;
        for fields in [format!("{contained},{reference}"), format!("{reference},{contained}")] {
            for resource_type in ["MedicationStatement", "MedicationRequest", "MedicationOrder"] {
                let m = medication(resource_type, &fields);
                assert_eq!(m.code.codings.len(), 1, "{resource_type} {fields}");
                assert_eq!(m.code.codings[0].code, "197806");
                // The display names the drug where the Medication's code has no text.
                assert_eq!(m.code.text.as_deref(), Some("Ibuprofen 600"));
                assert_eq!(m.medication_reference, None);
            }
        }
        // A single contained object, and a contained Medication with its own text.
        let m = medication(
            "MedicationRequest",
            r##""medicationReference":{"reference":"#m"},
            "contained":{"resourceType":"Medication","id":"m","code":{"text":"Aspirin EC 81 mg"}}"##,
        );
        assert_eq!(m.code.text.as_deref(), Some("Aspirin EC 81 mg"));
        // A contained Medication of another id leaves the reference open.
        let m = medication(
            "MedicationRequest",
            r##""medicationReference":{"reference":"#other","display":"Tylenol"},
            "contained":[{"resourceType":"Medication","id":"m","code":{"text":"Aspirin"}}]"##,
        );
        assert_eq!(m.code.text.as_deref(), Some("Tylenol"));
        assert!(m.code.codings.is_empty());
        assert_eq!(m.medication_reference.as_deref(), Some("#other"));
    }

    #[test]
    fn medication_references_kept_named_by_their_display() {
        let m = medication(
            "MedicationStatement",
            r#""medicationReference":{"reference":"Medication/42","display":"Naproxen sodium 220 MG"}"#,
        );
        assert_eq!(m.medication_reference.as_deref(), Some("Medication/42"));
        assert_eq!(m.code.text.as_deref(), Some("Naproxen sodium 220 MG"));
        // A display alone names the drug; there is nothing to resolve.
        let m = medication(
            "MedicationRequest",
            r#""medicationReference":{"display":"Aspirin EC 81 mg"}"#,
        );
        assert_eq!(
            (m.code.text.as_deref(), m.medication_reference),
            (Some("Aspirin EC 81 mg"), None)
        );
        // No display: an empty code until resolved.
        let m = medication(
            "MedicationOrder",
            r#""medicationReference":{"reference":"urn:uuid:abc"}"#,
        );
        assert_eq!(m.code, Concept::default());
        assert_eq!(m.medication_reference.as_deref(), Some("urn:uuid:abc"));
        // A medicationCodeableConcept wins over a reference (only one is allowed).
        let m = medication(
            "MedicationRequest",
            r#""medicationReference":{"reference":"Medication/1"},"medicationCodeableConcept":{"text":"ibuprofen"}"#,
        );
        assert_eq!(
            (m.code.text.as_deref(), m.medication_reference),
            (Some("ibuprofen"), None)
        );
    }

    #[test]
    fn contained_resources_never_spoil_their_container() {
        // Odd shapes anywhere in `contained` cost at most the contained Medication itself.
        for contained in [
            r#""x""#,
            "17",
            "true",
            r#"[1,"a",null,[],{"resourceType":5},{"resourceType":"Practitioner","id":{"a":1},"code":[1]}]"#,
            r#"[{"resourceType":"Medication","id":"med1","code":"not a concept"}]"#,
            r#"[{"resourceType":"Medication","id":7,"code":{"text":"ibuprofen"}}]"#,
            r#"{"resourceType":"Medication","code":{"text":"no id"}}"#,
        ] {
            let m = medication(
                "MedicationStatement",
                &format!(
                    r##""contained":{contained},"medicationReference":{{"reference":"#med1","display":"Advil"}}"##
                ),
            );
            assert_eq!(m.code.text.as_deref(), Some("Advil"), "{contained}");
            assert!(m.code.codings.is_empty(), "{contained}");
            assert_eq!(m.medication_reference.as_deref(), Some("#med1"), "{contained}");
        }
    }

    #[test]
    fn procedures_not_done_and_dates() {
        let r4 = procedure(r#""status":"not-done","performedDateTime":"2026-11-30""#);
        assert_eq!((r4.status.as_deref(), r4.not_done), (Some("not-done"), false));
        assert_eq!(r4.date, Some(span("2026-11-30")));
        let stu3 = procedure(r#""status":"completed","notDone":true,"performedPeriod":{"start":"2026-10"}"#);
        assert!(stu3.not_done);
        assert_eq!(stu3.date, Some(span("2026-10")));
        let dstu2 = procedure(r#""notPerformed":true,"performedPeriod":{"end":"2015-01-02"}"#);
        assert!(dstu2.not_done);
        assert_eq!(dstu2.date, Some(span("2015-01-02")));
        let done = procedure(r#""notDone":false,"notPerformed":null"#);
        assert_eq!((done.not_done, done.date), (false, None));
    }

    #[test]
    fn wrong_kinds_mark_only_their_own_resource() {
        let good = r#"{"resource":{"resourceType":"Procedure","id":"ok","code":{"text":"Heat"}}}"#;
        for (resource_type, field) in [
            ("Condition", r#""onsetAge":"42 years""#),
            ("Condition", r#""onsetAge":{"value":"42","code":"a"}"#),
            ("Condition", r#""onsetRange":{"low":{"value":1,"code":7}}"#),
            ("Condition", r#""onsetString":["a"]"#),
            ("Condition", r#""assertedDate":20190101"#),
            ("Condition", r#""abatementBoolean":"true""#),
            ("Condition", r#""abatementPeriod":"2019""#),
            ("MedicationStatement", r#""medicationReference":"Medication/1""#),
            (
                "MedicationStatement",
                r#""medicationReference":{"reference":{"id":"1"}}"#,
            ),
            ("MedicationStatement", r#""wasNotTaken":"true""#),
            ("MedicationStatement", r#""taken":false"#),
            ("MedicationRequest", r#""intent":{"code":"order"}"#),
            ("MedicationOrder", r#""dateWritten":2015"#),
            ("Procedure", r#""notDone":1"#),
            ("Procedure", r#""notPerformed":"yes""#),
            ("Medication", r#""id":"m","code":"ibuprofen""#),
            ("Patient", r#""birthDate":19700101"#),
        ] {
            let bundle = format!(
                r#"{{"resourceType":"Bundle","entry":[{good},{{"resource":{{"resourceType":"{resource_type}",{field}}}}},{good}]}}"#
            );
            let contents = parse_contents(&bundle).unwrap();
            assert_eq!(contents.skipped, 1, "{resource_type} {field}");
            assert_eq!(contents.resources.len(), 2, "{resource_type} {field}");
            assert!(parse_resource(&format!(r#"{{"resourceType":"{resource_type}",{field}}}"#)).is_err());
        }
    }

    #[test]
    fn medication_and_patient_resources() {
        let bundle = r#"{"resourceType":"Bundle","entry":[
            {"fullUrl":"https://ehr.example.org/fhir/Medication/m1","resource":{"resourceType":"Medication","id":"m1",
              "code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"198013"}]},
              "ingredient":[{"itemReference":{"reference":"Substance/x"}}],"status":"active"},
             "search":{"mode":"include"}},
            {"fullUrl":"urn:uuid:7c1e","resource":{"resourceType":"Medication","code":{"text":"Tylenol"}}},
            {"resource":{"resourceType":"Medication","code":{"text":"no id anywhere"}}},
            {"resource":{"resourceType":"Patient","id":"p","birthDate":"1970-03","link":[{"other":{"reference":"Patient/q"},"type":"seealso"}]}}
        ]}"#;
        let contents = parse_contents(bundle).unwrap();
        assert_eq!(contents.skipped, 0);
        let definition = |id: Option<&str>, code: Concept| Resource::MedicationDefinition {
            form: None,
            id: id.map(str::to_owned),
            code,
        };
        let rxnorm = Concept {
            codings: vec![Coding {
                system: "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
                code: "198013".into(),
                display: None,
            }],
            text: None,
        };
        let text = |t: &str| Concept {
            codings: vec![],
            text: Some(t.into()),
        };
        assert_eq!(
            contents.resources,
            [
                definition(Some("m1"), rxnorm),
                definition(Some("7c1e"), text("Tylenol")),
                definition(None, text("no id anywhere")),
                Resource::Patient {
                    birth_date: Some(span("1970-03"))
                },
            ]
        );
        // A Patient read alone, as the `patient` prefetch key sends it.
        assert_eq!(
            parse_resource(r#"{"resourceType":"Patient","birthDate":null,"gender":"female"}"#),
            Ok(Resource::Patient { birth_date: None })
        );
    }

    /// A prefetch as [`crate::service::record_from_prefetch`] takes it: (key, JSON).
    fn prefetch(keys: &[(&str, &str)]) -> crate::record::PatientRecord {
        let keys = keys
            .iter()
            .map(|(key, json)| {
                let value = crate::wire::PrefetchValue::Read(parse_prefetch_value(json));
                (key.to_string(), value)
            })
            .collect();
        crate::service::record_from_prefetch(Some(keys), &crate::service::Limits::default())
            .unwrap()
            .0
    }

    #[test]
    fn references_to_medications_in_the_same_bundle_resolve() {
        let requests = r#"{"resourceType":"Bundle","type":"searchset","entry":[
            {"resource":{"resourceType":"MedicationRequest","id":"r1","status":"active","intent":"order",
              "medicationReference":{"reference":"Medication/med-ibu","display":"Ibuprofen"}},"search":{"mode":"match"}},
            {"resource":{"resourceType":"MedicationRequest","id":"r2",
              "medicationReference":{"reference":"https://ehr.example.org/fhir/Medication/med-nap"}}},
            {"resource":{"resourceType":"MedicationRequest","id":"r3",
              "medicationReference":{"reference":"urn:uuid:0a1b","display":"Tylenol"}}},
            {"resource":{"resourceType":"MedicationRequest","id":"r4",
              "medicationReference":{"reference":"Medication/elsewhere","display":"Aspirin EC 81 mg"}}},
            {"fullUrl":"https://ehr.example.org/fhir/Medication/med-ibu",
             "resource":{"resourceType":"Medication","id":"med-ibu","code":{"coding":[{"system":
              "http://www.nlm.nih.gov/research/umls/rxnorm","code":"197806","display":"ibuprofen 600 MG Oral Tablet"}]}},
             "search":{"mode":"include"}},
            {"fullUrl":"urn:uuid:0a1b","resource":{"resourceType":"Medication","code":{"text":"acetaminophen 500 MG"}}}
        ]}"#;
        // A Medication sent under another key resolves references just the same.
        let statements = r#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"MedicationStatement","id":"s1","medicationReference":{"reference":"Medication/med-ibu"}}},
            {"resource":{"resourceType":"Medication","id":"med-nap","code":{"text":"naproxen"}}}
        ]}"#;
        let mut record = prefetch(&[("medicationRequests", requests), ("medicationStatements", statements)]);
        assert_eq!(record.medication_definitions.len(), 3);
        assert_eq!(record.skipped, 0);
        // As service::finish does before assessing.
        record.resolve_medication_references();
        let by_id = |id: &str| record.medications.iter().find(|m| m.id.as_deref() == Some(id)).unwrap();
        let ibuprofen = by_id("r1");
        assert_eq!(ibuprofen.code.codings[0].code, "197806");
        assert_eq!(ibuprofen.code.text.as_deref(), Some("Ibuprofen"));
        assert_eq!(ibuprofen.medication_reference, None);
        assert_eq!(by_id("r2").code.text.as_deref(), Some("naproxen"));
        assert_eq!(by_id("r3").code.text.as_deref(), Some("acetaminophen 500 MG"));
        assert_eq!(by_id("s1").code.codings[0].code, "197806");
        // Not in the record: still named by its display, the reference kept.
        let aspirin = by_id("r4");
        assert_eq!(aspirin.code.text.as_deref(), Some("Aspirin EC 81 mg"));
        assert_eq!(aspirin.medication_reference.as_deref(), Some("Medication/elsewhere"));
    }

    #[test]
    fn the_patient_key_gives_the_birth_date_and_nothing_else() {
        use crate::record::{Availability, DataKind};
        let patient = r#"{"resourceType":"Patient","id":"p1","birthDate":"1961-07-04","gender":"male"}"#;
        let record = prefetch(&[("patient", patient)]);
        assert_eq!(record.birth_date, Some(span("1961-07-04")));
        assert_eq!(record.skipped, 0);
        // It is not a kind of data: every kind is still missing, so nothing is settled by it.
        for kind in DataKind::ALL {
            assert_eq!(record.availability(kind), Availability::Missing);
        }
        // A Bundle with one (as a search would answer), DSTU2's partial birth dates.
        let bundle =
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","birthDate":"1961"}}]}"#;
        assert_eq!(prefetch(&[("patient", bundle)]).birth_date, Some(span("1961")));
        // null, no birth date, an OperationOutcome: no birth date, nothing skipped.
        for value in [
            "null",
            r#"{"resourceType":"Patient","birthDate":"unknown"}"#,
            r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error"}]}"#,
        ] {
            let record = prefetch(&[("patient", value)]);
            assert_eq!((record.birth_date, record.skipped), (None, 0), "{value}");
        }
        // Malformed or unreadable: skipped and counted, like any entry, and nothing else changes.
        for value in [
            r#"{"resourceType":"Patient","birthDate":1961}"#,
            "17",
            r#"{"resourceType":"Bundle","entry":5}"#,
        ] {
            let record = prefetch(&[("patient", value), ("procedures", "null")]);
            assert_eq!((record.birth_date, record.skipped), (None, 1), "{value}");
            assert_eq!(record.availability(DataKind::Procedures), Availability::NoData);
        }
    }

    #[test]
    fn the_fast_path_is_unaffected() {
        use crate::wire::PrefetchValue;
        let knowledge = crate::Knowledge::embedded().unwrap();
        let request = |code: &str| {
            format!(
                r#"{{"hook":"order-select","hookInstance":"x","context":{{"patientId":"p1","selections":["ServiceRequest/o1"],
                "draftOrders":{{"resourceType":"Bundle","entry":[{{"resource":{{"resourceType":"ServiceRequest","id":"o1",
                "code":{{"coding":[{{"system":"http://www.ama-assn.org/go/cpt","code":"{code}"}}]}}}}}}]}}}},
                "prefetch":{{"patient":{{"resourceType":"Patient","birthDate":"1961-07-04"}},
                "medicationRequests":{{"resourceType":"Bundle","entry":[{{"resource":{{"resourceType":"MedicationRequest",
                "medicationReference":{{"reference":"Medication/m"}}}}}},{{"resource":{{"resourceType":"Medication","id":"m",
                "code":{{"text":"ibuprofen"}}}}}}]}}}}}}"#
            )
        };
        // Therapeutic exercise: no dry-needling order, so the prefetch (the patient key too) is only scanned.
        let body = request("97110");
        let prepared = crate::service::prepare(
            &knowledge,
            &crate::service::Limits::default(),
            "dry-needling-order-select",
            body.as_bytes(),
        )
        .unwrap();
        assert!(prepared.orders.is_empty());
        assert!(prepared.wanted().is_empty());
        assert_eq!(prepared.record.birth_date, None);
        assert!(prepared.record.medications.is_empty());
        let prefetch = prepared.request.prefetch.as_ref().unwrap();
        assert_eq!(prefetch.len(), 2);
        assert!(prefetch.iter().all(|(_, value)| matches!(value, PrefetchValue::Raw(_))));
        let (cards, _) = crate::service::finish(
            prepared,
            &knowledge,
            time::macros::date!(2026 - 11 - 23),
            &crate::service::MissingDataPolicy::default(),
        )
        .unwrap();
        assert!(cards.cards.is_empty());
        // Dry needling: the same prefetch is read, in the request's own pass.
        let body = request("20560");
        let prepared = crate::service::prepare(
            &knowledge,
            &crate::service::Limits::default(),
            "dry-needling-order-select",
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(prepared.orders.len(), 1);
        assert_eq!(prepared.record.birth_date, Some(span("1961-07-04")));
        assert_eq!(prepared.record.medication_definitions.len(), 1);
        assert_eq!(
            prepared.record.medications[0].medication_reference.as_deref(),
            Some("Medication/m")
        );
    }

    #[test]
    fn one_bad_entry_does_not_spoil_the_bundle() {
        let bundle = r#"{"resourceType":"Bundle","entry":[
            {"resource":{"resourceType":"Procedure","code":{"text":"Heat"},"status":"completed"}},
            {"resource":{"resourceType":"Procedure","code":"not a concept"}},
            {"resource":17},
            {"fullUrl":"no resource"},
            {"resource":{"resourceType":"Observation","code":"a type we do not read, with odd shapes"}},
            {"resource":{"resourceType":"MedicationRequest","medicationCodeableConcept":{"text":"ibuprofen"},
              "reasonCode":{"text":"single object, as the sandbox sends"}}}
        ]}"#;
        let contents = parse_contents(bundle).unwrap();
        assert_eq!(contents.skipped, 3);
        assert_eq!(contents.resources.len(), 3);
    }

    #[test]
    fn next_links_are_read_leniently() {
        let bundle = |link: &str| {
            format!(
                r#"{{"resourceType":"Bundle","link":{link},"entry":[{{"resource":{{"resourceType":"Procedure"}}}}]}}"#
            )
        };
        let next = parse_contents(&bundle(
            r#"[{"relation":"self","url":"a"},{"relation":"next","url":"b"}]"#,
        ));
        assert_eq!(next.unwrap().next.as_deref(), Some("b"));
        for malformed in [r#""x""#, r#"[{"relation":"next","url":7}]"#, "17"] {
            let contents = parse_contents(&bundle(malformed)).unwrap();
            assert_eq!((contents.resources.len(), contents.next), (1, None), "{malformed}");
        }
    }

    #[test]
    fn operation_outcomes_fail_only_on_errors() {
        let info = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}"#;
        let error = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#;
        assert_eq!(parse_resource(info).unwrap(), Resource::Outcome { failed: false });
        assert_eq!(parse_resource(error).unwrap(), Resource::Outcome { failed: true });
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
        let contents = parse_contents(&bundle).unwrap();
        assert!(contents.bundle);
        assert_eq!(contents.resources.len(), 1);
    }

    #[test]
    fn a_malformed_entry_costs_only_itself() {
        // A valid Bundle of 40 Conditions, then the same with every third entry broken in a different way: the
        // broken ones are skipped and counted, and every other entry reads exactly as before.
        let breakages: [(&str, serde_json::Value); 8] = [
            ("code", serde_json::json!(17)),
            ("code", serde_json::json!(["a", "b"])),
            ("clinicalStatus", serde_json::json!(true)),
            ("bodySite", serde_json::json!("left knee")),
            ("onsetPeriod", serde_json::json!([])),
            ("id", serde_json::json!({"value": "x"})),
            ("resourceType", serde_json::json!(5)),
            ("code", serde_json::json!({"coding": [{"code": 81680005}]})),
        ];
        let condition = |i: usize| {
            serde_json::json!({"resourceType": "Condition", "id": format!("c{i}"),
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "81680005"}], "text": "Neck pain"},
                "onsetDateTime": "2020-01-02", "bodySite": [{"text": "neck"}]})
        };
        let bundle = |entries: Vec<serde_json::Value>| {
            let entries: Vec<_> = entries
                .into_iter()
                .map(|r| serde_json::json!({"resource": r}))
                .collect();
            serde_json::json!({"resourceType": "Bundle", "entry": entries}).to_string()
        };
        let clean = parse_contents(&bundle((0..40).map(condition).collect())).unwrap();
        assert_eq!((clean.resources.len(), clean.skipped), (40, 0));
        let mut broken_count = 0;
        let broken: Vec<_> = (0..40)
            .map(|i| {
                let mut resource = condition(i);
                if i % 3 == 1 {
                    let (field, value) = &breakages[broken_count % breakages.len()];
                    resource[*field] = value.clone();
                    broken_count += 1;
                }
                resource
            })
            .collect();
        let read = parse_contents(&bundle(broken)).unwrap();
        assert_eq!(read.skipped, broken_count);
        let kept: Vec<_> = clean
            .resources
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 1)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(read.resources, kept);
    }

    #[test]
    fn odd_shapes_matter_only_in_types_the_rules_read() {
        let observation = r#"{"resourceType":"Observation","code":"x","status":{"a":1},"issue":7}"#;
        assert_eq!(parse_resource(observation), Ok(Resource::Other));
        let outcome = r#"{"resourceType":"OperationOutcome","issue":"error"}"#;
        assert_eq!(parse_resource(outcome), Err(Unreadable::Invalid));
        // Nulls are absence, not errors; a single object stands for an array of one.
        let order = r#"{"resourceType":"ServiceRequest","code":null,"reasonCode":{"text":"neck pain"},
            "bodySite":null,"reasonReference":[{"reference":"Condition/1"},null]}"#;
        let Resource::Order(order) = parse_resource(order).unwrap() else {
            panic!()
        };
        assert_eq!(order.reason_codes.len(), 1);
        let references: Vec<_> = order.reason_references.iter().map(|r| r.reference.as_deref()).collect();
        assert_eq!(references, [Some("Condition/1")]);
    }

    #[test]
    fn not_a_resource() {
        for json in [
            "[]",
            "3",
            r#"{"entry":[]}"#,
            r#"{"resourceType":"Bundle","entry":{}}"#,
            "{",
            r#"{"resourceType":"Condition"} trailing"#,
            r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Condition","code":tru}}]}"#,
        ] {
            assert!(parse_contents(json).is_err(), "{json}");
        }
    }
}
