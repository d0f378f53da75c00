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

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

use crate::record::{Coding, Concept, Condition, Medication, MedicationSource, Order, Procedure};

/// A lenient reader for one JSON shape. It takes the JSON kinds it knows; any other kind is consumed and sets
/// `bad` (the resource being read is malformed). `null` is absence, never malformed.
trait Shape<'de>: Copy {
    type Out;
    fn string(self, _text: &str, bad: &mut bool) -> Option<Self::Out> {
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
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        *self.bad = true;
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        *self.bad = true;
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        *self.bad = true;
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        *self.bad = true;
        Ok(None)
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
    recorded_date: Option<String>,
    date_recorded: Option<String>,
    body_site: Vec<RawConcept>,
    reason_code: Vec<RawConcept>,
    reason_codeable_concept: Option<RawConcept>,
    reason_reference: Vec<Option<String>>,
    medication_codeable_concept: Option<RawConcept>,
    authored_on: Option<String>,
    date_written: Option<String>,
    effective_date_time: Option<String>,
    effective_period: Option<RawPeriod>,
    date_asserted: Option<String>,
    performed_date_time: Option<String>,
    performed_period: Option<RawPeriod>,
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
                Key::RecordedDate => raw.recorded_date = value(&mut map, Text, bad)?,
                Key::DateRecorded => raw.date_recorded = value(&mut map, Text, bad)?,
                Key::BodySite => raw.body_site = value(&mut map, Many(ConceptShape), bad)?.unwrap_or_default(),
                Key::ReasonCode => raw.reason_code = value(&mut map, Many(ConceptShape), bad)?.unwrap_or_default(),
                Key::ReasonCodeableConcept => raw.reason_codeable_concept = value(&mut map, ConceptShape, bad)?,
                Key::ReasonReference => {
                    raw.reason_reference = value(&mut map, Many(FieldOf(Key::Reference)), bad)?.unwrap_or_default()
                }
                Key::MedicationCodeableConcept => raw.medication_codeable_concept = value(&mut map, ConceptShape, bad)?,
                Key::AuthoredOn => raw.authored_on = value(&mut map, Text, bad)?,
                Key::DateWritten => raw.date_written = value(&mut map, Text, bad)?,
                Key::EffectiveDateTime => raw.effective_date_time = value(&mut map, Text, bad)?,
                Key::EffectivePeriod => raw.effective_period = value(&mut map, PeriodShape, bad)?,
                Key::DateAsserted => raw.date_asserted = value(&mut map, Text, bad)?,
                Key::PerformedDateTime => raw.performed_date_time = value(&mut map, Text, bad)?,
                Key::PerformedPeriod => raw.performed_period = value(&mut map, PeriodShape, bad)?,
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

/// One Bundle entry: its `resource`, read.
#[derive(Clone, Copy)]
struct EntryShape;

impl<'de> Shape<'de> for EntryShape {
    type Out = Result<Resource, Unreadable>;
    fn map<A: MapAccess<'de>>(self, mut map: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut resource = Err(Unreadable::Invalid);
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Resource => {
                    if let Some((raw, bad)) = value(&mut map, ResourceShape { top: false }, &mut false)? {
                        resource = from_raw(raw, bad);
                    }
                }
                _ => skip(&mut map)?,
            }
        }
        Ok(Some(resource))
    }
}

fn first_span(candidates: &[Option<&str>]) -> Option<crate::record::DateSpan> {
    candidates
        .iter()
        .flatten()
        .find_map(|s| crate::record::parse_fhir_span(s))
}

fn period_start(p: &Option<RawPeriod>) -> Option<&str> {
    p.as_ref().and_then(|p| p.start.as_deref().or(p.end.as_deref()))
}

/// A resource of a type the service reads, after lenient parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Condition(Condition),
    Medication(Medication),
    Procedure(Procedure),
    Order(Order),
    /// An OperationOutcome: `failed` when it carries an error or fatal issue (a query failed), not when it is
    /// only informational (servers add those to successful searches).
    Outcome {
        failed: bool,
    },
    /// A resource type the rules do not use (Patient, Observation…).
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
const READ: [&str; 9] = [
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationOrder",
    "Procedure",
    "ServiceRequest",
    "ProcedureRequest",
    "OperationOutcome",
    "Bundle",
];

fn from_raw(raw: RawResource, bad: bool) -> Result<Resource, Unreadable> {
    let resource_type = raw.resource_type.ok_or(Unreadable::Invalid)?;
    if !READ.contains(&resource_type.as_str()) {
        return Ok(Resource::Other);
    }
    if bad {
        return Err(Unreadable::Invalid);
    }
    Ok(match resource_type.as_str() {
        "Condition" => Resource::Condition(Condition {
            id: raw.id,
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            clinical_status: raw.clinical_status,
            verification_status: raw.verification_status,
            onset: first_span(&[raw.onset_date_time.as_deref(), period_start(&raw.onset_period)])
                .map(crate::record::Onset::Date),
            recorded: first_span(&[raw.recorded_date.as_deref(), raw.date_recorded.as_deref()]),
            abatement: None,
            body_sites: raw.body_site.into_iter().map(RawConcept::into_concept).collect(),
        }),
        "MedicationStatement" | "MedicationRequest" | "MedicationOrder" => {
            let source = if resource_type == "MedicationStatement" {
                MedicationSource::Statement
            } else {
                MedicationSource::Request
            };
            let date = first_span(&[
                raw.effective_date_time.as_deref(),
                period_start(&raw.effective_period),
                raw.authored_on.as_deref(),
                raw.date_written.as_deref(),
                raw.date_asserted.as_deref(),
            ]);
            // A medicationReference is not resolved (searches rarely `_include` the Medication, and none of
            // the real fixtures use one): such an entry has no code or text and never counts as evidence.
            let code = raw
                .medication_codeable_concept
                .map(RawConcept::into_concept)
                .unwrap_or_default();
            Resource::Medication(Medication {
                id: raw.id,
                source,
                code,
                medication_reference: None,
                status: raw.status,
                intent: None,
                taken: None,
                not_taken: false,
                date,
            })
        }
        "Procedure" => Resource::Procedure(Procedure {
            id: raw.id,
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            status: raw.status,
            not_done: false,
            date: first_span(&[raw.performed_date_time.as_deref(), period_start(&raw.performed_period)]),
        }),
        "ServiceRequest" | "ProcedureRequest" => {
            let mut reason_codes: Vec<Concept> = raw.reason_code.into_iter().map(RawConcept::into_concept).collect();
            reason_codes.extend(raw.reason_codeable_concept.map(RawConcept::into_concept));
            Resource::Order(Order {
                resource_type,
                id: raw.id,
                code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
                reason_codes,
                reason_references: raw.reason_reference.into_iter().flatten().collect(),
                body_sites: raw.body_site.into_iter().map(RawConcept::into_concept).collect(),
            })
        }
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
        assert_eq!(
            c.onset,
            crate::record::parse_fhir_span("2020-01-02").map(crate::record::Onset::Date)
        );
        let Resource::Condition(c) = parse_resource(dstu2).unwrap() else {
            panic!()
        };
        assert_eq!(c.verification_status.as_deref(), Some("refuted"));
        assert_eq!(c.code.codings[0].code, "81680005");
        assert_eq!(c.recorded, crate::record::parse_fhir_span("2019"));
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
        assert_eq!(order.reason_references, ["Condition/1"]);
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
