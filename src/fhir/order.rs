//! An order read into the record: a ServiceRequest (R4) or ProcedureRequest (STU3, DSTU2), the draft order a
//! hook is about or one already in the record.
//!
//! Why a file of its own: the order carries the indication the verdict starts from (its reason codes, its
//! `reasonReference`s, Conditions it contains for them, its body site), and each of these arrives in more than
//! one shape.

use super::Resource;
use super::resource::RawResource;
use super::shapes::RawConcept;
use crate::record::{Concept, Order, Reference};

/// A ServiceRequest or ProcedureRequest. Its reasons are coded (`reasonCode`, or DSTU2's `reasonCodeableConcept`)
/// or referenced (`reasonReference`), and the Conditions it contains are kept for references to `#id`.
pub(super) fn from_raw(resource_type: String, raw: RawResource) -> Order {
    let mut reason_codes: Vec<Concept> = raw.reason_code.into_iter().map(RawConcept::into_concept).collect();
    reason_codes.extend(raw.reason_codeable_concept.map(RawConcept::into_concept));
    Order {
        resource_type,
        id: raw.id,
        code: raw.code.map(RawConcept::into_concept).unwrap_or_default(),
        reason_codes,
        reason_references: raw
            .reason_reference
            .into_iter()
            .filter(|r| r.reference.is_some() || r.display.is_some())
            .map(|r| Reference {
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
    }
}
