//! Lenient, lean reading of FHIR JSON (R4, with STU3 and DSTU2 shapes tolerated) into [`crate::record`].
//!
//! Why not fhir-sdk's models here: they reject what real clients send (a Bundle without `type`, a
//! `reasonCode` object instead of an array, DSTU2 resources), one bad entry fails a whole Bundle, their error
//! messages can echo patient data, and building full models costs ~8× a lean parse (../shared/RUST-NOTES.md).
//! fhir-sdk's `r4b` models are used where they earn their place: validating the resources the cards suggest.
//!
//! Why hand-written visitors: a Bundle is read in one pass, straight into flat structs that keep only the
//! fields the rules use. Every reader here is lenient (`Shape`): a value of the wrong JSON kind is skipped
//! and marks its resource as malformed instead of failing the parse, so one bad entry costs only itself (it is
//! skipped and counted) and the Bundle need not be split into raw entries and scanned again. Only invalid JSON
//! stops the read. Profiling showed that splitting first (the Bundle, then each entry) scanned every byte of a
//! prefetched record three times (docs/PERFORMANCE.md).
//!
//! A resource's `contained` resources are read in the same pass, only for their Medications (a
//! `medicationReference` to `#id` is resolved when the resource ends), and nothing in them marks their
//! container malformed. Other references to Medications are kept for the record to resolve
//! ([`crate::record::PatientRecord::resolve_medication_references`]), with their `display` as the drug's text.
//!
//! Each file knows one thing: `key.rs` the object keys any shape reads, `shapes.rs` the generic FHIR data types
//! (codings, concepts, periods, ages, references), `resource.rs` one resource's fields and a Bundle's entries,
//! and one file per family of resource types maps what was read to the record: `condition.rs`,
//! `medication.rs`, `procedure.rs`, `order.rs` and `other.rs` (Patient, AllergyIntolerance,
//! OperationOutcome). `prefetch.rs` reads a prefetch value where it stands in the hook request.

mod condition;
mod key;
mod medication;
mod order;
mod other;
mod prefetch;
mod procedure;
mod resource;
mod shapes;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

pub use prefetch::{PrefetchSeed, parse_prefetch_value};

use crate::record::{Concept, Condition, DateSpan, Medication, Order, Procedure};
use resource::{RawResource, ResourceShape};

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

/// What was read, mapped to a [`Resource`] by its type (each family of types in its own module). `bad` makes
/// only a type the rules read unreadable.
fn from_raw(mut raw: RawResource, bad: bool) -> Result<Resource, Unreadable> {
    let resource_type = raw.resource_type.take().ok_or(Unreadable::Invalid)?;
    if !READ.contains(&resource_type.as_str()) {
        return Ok(Resource::Other);
    }
    if bad {
        return Err(Unreadable::Invalid);
    }
    Ok(match resource_type.as_str() {
        "Condition" => Resource::Condition(condition::from_raw(raw)),
        "MedicationStatement" | "MedicationRequest" | "MedicationOrder" => {
            Resource::Medication(medication::from_raw(&resource_type, raw))
        }
        "Medication" => medication::definition(raw),
        "Procedure" => Resource::Procedure(procedure::from_raw(raw)),
        "ServiceRequest" | "ProcedureRequest" => Resource::Order(order::from_raw(resource_type, raw)),
        "Patient" => other::patient(raw),
        "AllergyIntolerance" => other::allergy(raw),
        "OperationOutcome" => other::outcome(raw),
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
    let (raw, bad) = read_json(json, ResourceShape::NESTED).ok_or(Unreadable::Invalid)?;
    from_raw(raw, bad)
}

/// The contents of a Bundle or a single resource, read entry by entry.
#[derive(Debug, Default)]
pub struct Contents {
    pub resources: Vec<Resource>,
    /// Entries that were present but unreadable, or not read because they came past the caller's cap.
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
/// a Bundle whose `entry` is not an array: nothing in it can be trusted then. At most `max_entries` entries are
/// read; the rest count as `skipped`, so `resources.len() + skipped` is always the number of entries.
pub fn parse_contents(json: &str, max_entries: usize) -> Result<Contents, Unreadable> {
    let (raw, bad) = read_json(json, ResourceShape { top: Some(max_entries) }).ok_or(Unreadable::Invalid)?;
    contents(raw, bad)
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
        skipped: raw.entry_beyond,
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
    use crate::record::{Age, AgeUnit, DateSpan, parse_fhir_span};

    pub(super) fn span(text: &str) -> DateSpan {
        parse_fhir_span(text).unwrap()
    }

    /// Reads `fields` (the inside of a JSON object) as a resource of `resource_type`.
    pub(super) fn read(resource_type: &str, fields: &str) -> Resource {
        let json = format!(
            r#"{{"resourceType":"{resource_type}"{}{fields}}}"#,
            if fields.is_empty() { "" } else { "," }
        );
        parse_resource(&json).unwrap_or_else(|_| panic!("unreadable: {json}"))
    }

    pub(super) fn condition(fields: &str) -> Condition {
        match read("Condition", fields) {
            Resource::Condition(c) => c,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn medication(resource_type: &str, fields: &str) -> Medication {
        match read(resource_type, fields) {
            Resource::Medication(m) => m,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn procedure(fields: &str) -> Procedure {
        match read("Procedure", fields) {
            Resource::Procedure(p) => p,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn age(value: f64, unit: AgeUnit) -> Option<Age> {
        Some(Age { value, unit })
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
            let contents = parse_contents(&bundle, usize::MAX).unwrap();
            assert_eq!(contents.skipped, 1, "{resource_type} {field}");
            assert_eq!(contents.resources.len(), 2, "{resource_type} {field}");
            assert!(parse_resource(&format!(r#"{{"resourceType":"{resource_type}",{field}}}"#)).is_err());
        }
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
            assert!(parse_contents(json, usize::MAX).is_err(), "{json}");
        }
    }
}
