//! The object keys the shapes read, matched once as a [`Key`] and never allocated.
//!
//! Why one enum for every shape: serde hands each key to one visitor, which can compare it against a fixed
//! list without building a `String`; every field the rules read, in any resource or data type, is one variant,
//! and any other key is [`Key::Other`] and skipped unread.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

use super::{Lenient, Shape};

/// The object keys any shape here reads, so a key is matched once and never allocated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
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
pub(super) fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Key>, A::Error> {
    map.next_key_seed(Key::Other)
}

/// The value of the current key, read with `shape`.
pub(super) fn value<'de, A: MapAccess<'de>, S: Shape<'de>>(
    map: &mut A,
    shape: S,
    bad: &mut bool,
) -> Result<Option<S::Out>, A::Error> {
    map.next_value_seed(Lenient { shape, bad })
}

/// Skips the value of the current key.
pub(super) fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}
