//! A prefetch value read where it stands, inside the parse of the whole hook request.
//!
//! Why not apart: a prefetched record is most of a request's bytes, and reading it as its own string after
//! the request was parsed would scan it twice (docs/PERFORMANCE.md). [`PrefetchSeed`] reads it in the
//! request's own pass; [`parse_prefetch_value`] gives the same answer for a value held as text.

use serde::de::{DeserializeSeed, Deserializer};

use super::resource::ResourceShape;
use super::{Contents, Lenient, Unreadable, contents};

/// A prefetch value: `None` for `null` (the EHR has no such data), else as [`super::parse_contents`] (at most
/// `max_entries` entries read).
pub fn parse_prefetch_value(json: &str, max_entries: usize) -> Option<Result<Contents, Unreadable>> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let Ok(read) = (PrefetchSeed { max_entries }).deserialize(&mut deserializer) else {
        return Some(Err(Unreadable::Invalid));
    };
    match deserializer.end() {
        Ok(()) => read,
        Err(_) => Some(Err(Unreadable::Invalid)),
    }
}

/// Reads a prefetch value where it stands, inside the parse of the whole hook request (see
/// [`crate::wire`]), so that a prefetched record is scanned once. Its value is [`parse_prefetch_value`]'s.
/// Never fails on valid JSON. At most `max_entries` entries are read (the rest counted as skipped).
pub struct PrefetchSeed {
    pub max_entries: usize,
}

impl<'de> DeserializeSeed<'de> for PrefetchSeed {
    type Value = Option<Result<Contents, Unreadable>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let mut not_an_object = false;
        let read = Lenient {
            shape: ResourceShape {
                top: Some(self.max_entries),
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::tests::span;

    /// A prefetch as [`crate::service::record_from_prefetch`] takes it: (key, JSON).
    fn prefetch(keys: &[(&str, &str)]) -> crate::record::PatientRecord {
        let keys = keys
            .iter()
            .map(|(key, json)| {
                let value = crate::wire::PrefetchValue::Read(parse_prefetch_value(json, usize::MAX));
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
}
