//! The resources the rules read one fact from: a Patient (its birth date), an AllergyIntolerance (its
//! substance, if it stands) and an OperationOutcome (whether a query failed).
//!
//! Why together: each is a few lines of mapping, and none has a family of its own.

use super::Resource;
use super::resource::RawResource;
use super::shapes::{RawConcept, first_span};

/// A Patient: only its `birthDate` is read.
pub(super) fn patient(raw: RawResource) -> Resource {
    Resource::Patient {
        birth_date: first_span(&[raw.birth_date.as_deref()]),
    }
}

/// An AllergyIntolerance: its substance (`code`), and whether it stands. Only an allergy that stands counts: not
/// refuted, entered in error, inactive or resolved.
pub(super) fn allergy(raw: RawResource) -> Resource {
    Resource::Allergy {
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
    }
}

/// An OperationOutcome: failed when one of its issues is an error or fatal.
pub(super) fn outcome(raw: RawResource) -> Resource {
    Resource::Outcome {
        failed: raw
            .issue
            .iter()
            .any(|severity| matches!(severity.as_deref(), Some("error" | "fatal"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::parse_resource;

    #[test]
    fn operation_outcomes_fail_only_on_errors() {
        let info = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}"#;
        let error = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#;
        assert_eq!(parse_resource(info).unwrap(), Resource::Outcome { failed: false });
        assert_eq!(parse_resource(error).unwrap(), Resource::Outcome { failed: true });
    }
}
