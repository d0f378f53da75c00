//! A Procedure read into the record: conservative care that was done (heat, manual therapy, exercise…), or
//! said not to have been.
//!
//! Why a file of its own: each resource family maps its fields in one place, and a Procedure says "not done"
//! differently in every version (R4 `status`, STU3 `notDone`, DSTU2 `notPerformed`).

use super::resource::RawResource;
use super::shapes::{RawConcept, first_span, period_end, start_else_end};
use crate::record::Procedure;

/// A Procedure: what was done, whether it was (`status`, STU3 `notDone`, DSTU2 `notPerformed`), when, and where.
pub(super) fn from_raw(raw: RawResource) -> Procedure {
    Procedure {
        id: raw.id,
        code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
        status: raw.status,
        not_done: raw.not_done,
        date: first_span(&[raw.performed_date_time.as_deref()]).or(start_else_end(&raw.performed_period)),
        until: period_end(&raw.performed_period),
        body_sites: raw.body_site.into_iter().map(RawConcept::into_concept).collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::fhir::tests::{procedure, span};

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
}
