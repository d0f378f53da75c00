//! Lenient, lean reading of FHIR JSON (R4, with STU3 and DSTU2 shapes tolerated) into [`crate::record`].
//!
//! Why not fhir-sdk's models here: they reject what real clients send (a Bundle without `type`, a
//! `reasonCode` object instead of an array, DSTU2 resources), one bad entry fails a whole Bundle, their error
//! messages can echo patient data, and building full models costs ~8× a lean parse (../shared/RUST-NOTES.md).
//! So a Bundle is split into raw entries first and each entry is read on its own into a flat struct that keeps
//! only the fields the rules use; an entry that still fails is skipped and counted, never fatal.
//! fhir-sdk's `r4b` models are used where they earn their place: validating the resources the cards suggest.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::marker::PhantomData;

use crate::record::{Coding, Concept, Condition, Medication, MedicationSource, Order, Procedure, parse_fhir_date};

/// A JSON value that may be one item or an array of items (R4 arrays sent as single objects, DSTU2 singles).
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or an array of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let item = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(OneOrMany(vec![item]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OneOrMany(Vec::new()))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCoding {
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConcept {
    coding: OneOrMany<RawCoding>,
    text: Option<String>,
}

impl RawConcept {
    fn into_concept(self) -> Concept {
        let codings = self
            .coding
            .0
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawReference {
    reference: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPeriod {
    start: Option<String>,
    end: Option<String>,
}

/// R4 uses a CodeableConcept for Condition statuses; STU3 and DSTU2 use a plain code. Read with a visitor that
/// picks the shape from the first token: serde's `untagged` would buffer every status before trying each shape.
#[derive(Debug)]
enum RawStatus {
    Code(String),
    Concept(RawConcept),
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl<'de> Visitor<'de> for StatusVisitor {
            type Value = RawStatus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a code or a CodeableConcept")
            }
            fn visit_str<E: de::Error>(self, code: &str) -> Result<Self::Value, E> {
                Ok(RawStatus::Code(code.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawConcept::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawStatus::Concept)
            }
        }
        deserializer.deserialize_any(StatusVisitor)
    }
}

impl RawStatus {
    fn code(self) -> Option<String> {
        match self {
            RawStatus::Code(code) => Some(code),
            RawStatus::Concept(concept) => concept.coding.0.into_iter().find_map(|c| c.code),
        }
    }
}

/// The union of the fields the rules read, across the resource types the service handles. Unknown fields
/// (there are hundreds) are skipped by serde without being built.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawResource {
    resource_type: Option<String>,
    id: Option<String>,
    status: Option<String>,
    code: Option<RawConcept>,
    clinical_status: Option<RawStatus>,
    verification_status: Option<RawStatus>,
    onset_date_time: Option<String>,
    onset_period: Option<RawPeriod>,
    recorded_date: Option<String>,
    date_recorded: Option<String>,
    body_site: OneOrMany<RawConcept>,
    reason_code: OneOrMany<RawConcept>,
    reason_codeable_concept: Option<RawConcept>,
    reason_reference: OneOrMany<RawReference>,
    medication_codeable_concept: Option<RawConcept>,
    authored_on: Option<String>,
    date_written: Option<String>,
    effective_date_time: Option<String>,
    effective_period: Option<RawPeriod>,
    date_asserted: Option<String>,
    performed_date_time: Option<String>,
    performed_period: Option<RawPeriod>,
    issue: OneOrMany<RawIssue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawIssue {
    severity: Option<String>,
}

fn first_date(candidates: &[Option<&str>]) -> Option<time::Date> {
    candidates.iter().flatten().find_map(|s| parse_fhir_date(s))
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
    /// A resource of a type the rules do not read; not worth counting.
    IgnoredType,
}

/// Reads one resource. Only structure is checked; missing fields are fine.
pub fn parse_resource(json: &str) -> Result<Resource, Unreadable> {
    match serde_json::from_str(json) {
        Ok(raw) => from_raw(raw),
        Err(_) => Err(unreadable_or_other(json)),
    }
}

fn from_raw(raw: RawResource) -> Result<Resource, Unreadable> {
    let resource_type = raw.resource_type.clone().ok_or(Unreadable::Invalid)?;
    Ok(match resource_type.as_str() {
        "Condition" => Resource::Condition(Condition {
            id: raw.id,
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            clinical_status: raw.clinical_status.and_then(RawStatus::code),
            verification_status: raw.verification_status.and_then(RawStatus::code),
            onset: first_date(&[raw.onset_date_time.as_deref(), period_start(&raw.onset_period)]),
            recorded: first_date(&[raw.recorded_date.as_deref(), raw.date_recorded.as_deref()]),
            body_sites: raw.body_site.0.into_iter().map(RawConcept::into_concept).collect(),
        }),
        "MedicationStatement" | "MedicationRequest" | "MedicationOrder" => {
            let source = if resource_type == "MedicationStatement" {
                MedicationSource::Statement
            } else {
                MedicationSource::Request
            };
            let date = first_date(&[
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
                status: raw.status,
                date,
            })
        }
        "Procedure" => Resource::Procedure(Procedure {
            id: raw.id,
            code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
            status: raw.status,
            date: first_date(&[raw.performed_date_time.as_deref(), period_start(&raw.performed_period)]),
        }),
        "ServiceRequest" | "ProcedureRequest" => {
            let mut reason_codes: Vec<Concept> = raw.reason_code.0.into_iter().map(RawConcept::into_concept).collect();
            reason_codes.extend(raw.reason_codeable_concept.map(RawConcept::into_concept));
            Resource::Order(Order {
                resource_type,
                id: raw.id,
                code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
                reason_codes,
                reason_references: raw.reason_reference.0.into_iter().filter_map(|r| r.reference).collect(),
                body_sites: raw.body_site.0.into_iter().map(RawConcept::into_concept).collect(),
            })
        }
        "OperationOutcome" => Resource::Outcome {
            failed: raw
                .issue
                .0
                .iter()
                .any(|i| matches!(i.severity.as_deref(), Some("error" | "fatal"))),
        },
        _ => Resource::Other,
    })
}

/// A resource of a type the rules do not read may use our field names with other shapes (that is not an
/// error in it); only a resource of a type we read, or no resource at all, is unreadable.
fn unreadable_or_other(json: &str) -> Unreadable {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "resourceType")]
        resource_type: String,
    }
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
    match serde_json::from_str::<Head>(json) {
        Ok(head) if !READ.contains(&head.resource_type.as_str()) => Unreadable::IgnoredType,
        _ => Unreadable::Invalid,
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(borrow, default)]
    entry: Option<Vec<&'a RawValue>>,
    /// Read leniently on its own: a malformed `link` must not spoil the entries.
    #[serde(borrow, default)]
    link: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLink {
    relation: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow, default)]
    resource: Option<&'a RawValue>,
}

/// An entry and its resource read in one pass: the common case. Only when this fails is the entry read again,
/// in two steps, to tell an unreadable resource from one of a type the rules do not read.
#[derive(Deserialize)]
struct ReadEntry {
    #[serde(default)]
    resource: Option<RawResource>,
}

fn read_entry(entry: &str) -> Result<Resource, Unreadable> {
    if let Ok(ReadEntry { resource: Some(raw) }) = serde_json::from_str(entry) {
        return from_raw(raw);
    }
    match serde_json::from_str::<RawEntry>(entry) {
        Ok(RawEntry {
            resource: Some(resource),
        }) => parse_resource(resource.get()),
        _ => Err(Unreadable::Invalid),
    }
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

/// Reads a value that should be a Bundle (any `type`, or none) or a single resource. `Err` when the value
/// is not even a JSON object with a `resourceType`, or a Bundle whose `entry` is not an array: nothing in it
/// can be trusted then.
pub fn parse_contents(json: &str) -> Result<Contents, Unreadable> {
    let envelope: RawEnvelope = serde_json::from_str(json).map_err(|_| Unreadable::Invalid)?;
    let Some(resource_type) = envelope.resource_type else {
        return Err(Unreadable::Invalid);
    };
    if resource_type != "Bundle" {
        return Ok(Contents {
            resources: vec![parse_resource(json)?],
            ..Contents::default()
        });
    }
    let next = envelope
        .link
        .and_then(|raw| serde_json::from_str::<OneOrMany<RawLink>>(raw.get()).ok())
        .unwrap_or_default()
        .0
        .into_iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url);
    let mut contents = Contents {
        bundle: true,
        next,
        ..Contents::default()
    };
    for entry in envelope.entry.unwrap_or_default() {
        match read_entry(entry.get()) {
            Ok(resource) => contents.resources.push(resource),
            Err(Unreadable::IgnoredType) => contents.resources.push(Resource::Other),
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
        assert_eq!(c.onset, parse_fhir_date("2020-01-02"));
        let Resource::Condition(c) = parse_resource(dstu2).unwrap() else {
            panic!()
        };
        assert_eq!(c.verification_status.as_deref(), Some("refuted"));
        assert_eq!(c.code.codings[0].code, "81680005");
        assert_eq!(c.recorded, parse_fhir_date("2019-01-01"));
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
    fn not_a_resource() {
        for json in [
            "[]",
            "3",
            r#"{"entry":[]}"#,
            r#"{"resourceType":"Bundle","entry":{}}"#,
            "{",
        ] {
            assert!(parse_contents(json).is_err(), "{json}");
        }
    }
}
