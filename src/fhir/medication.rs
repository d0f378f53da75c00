//! Medication statements, requests and (DSTU2) orders, and Medication resources, read into the record.
//!
//! Why the drug takes work: it is named by a `medicationCodeableConcept`, or by a reference to a Medication
//! that may be contained, elsewhere in the Bundle, under another prefetch key, or nowhere the service can see.
//! A contained one is resolved here; any other reference is kept, with its display as the drug's text, for the
//! record to resolve once every key is read.

use super::Resource;
use super::resource::RawResource;
use super::shapes::{RawCoding, RawConcept, first_span, non_blank, period_end, start_else_end};
use crate::record::{Concept, Medication, MedicationSource};

/// The drug of a medication resource, and its `medicationReference` while unresolved. A `medicationCodeableConcept`
/// names it; else a reference to a contained Medication (`#id`) gives that Medication's code; else the reference
/// is kept for [`crate::record::PatientRecord::resolve_medication_references`], with its `display` as the text.
pub(super) fn medication_code(raw: &mut RawResource) -> (Concept, Option<String>) {
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

/// A MedicationStatement, MedicationRequest or (DSTU2) MedicationOrder: the drug, how it was given, whether
/// it was taken, and its date in order of preference (when taken, else when asserted or ordered).
pub(super) fn from_raw(resource_type: &str, mut raw: RawResource) -> Medication {
    let source = match resource_type {
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
    Medication {
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
    }
}

/// A Medication resource, for the references to it: its id, its code and its dose form.
pub(super) fn definition(raw: RawResource) -> Resource {
    Resource::MedicationDefinition {
        id: raw.id,
        code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
        form: raw.form.map(RawConcept::into_concept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::tests::{medication, span};
    use crate::fhir::{parse_contents, parse_resource};
    use crate::record::Coding;

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
        let contents = parse_contents(bundle, usize::MAX).unwrap();
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
}
