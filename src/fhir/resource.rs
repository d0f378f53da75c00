//! One resource's fields as read ([`RawResource`]), whatever its type, and a Bundle's entries.
//!
//! Why one raw struct for every type: a resource is read in one pass before its `resourceType` may be known
//! (the key can come last), so the union of the fields the rules read is filled and the resource families map
//! it afterwards (`from_raw`). A Bundle's entries are read inside the same pass, each on its own, so that one
//! bad entry costs only itself; `contained` resources are read the same way, kept only when referred to.

use serde::de::{MapAccess, SeqAccess};

use super::key::{Key, next_key, skip, value};
use super::shapes::{
    AgeBounds, AgeRangeShape, AgeShape, ConceptShape, FieldOf, Flag, LinkShape, Many, PeriodShape, RawConcept,
    RawPeriod, RawReference, ReferenceShape, StatusShape, Text,
};
use super::{Lenient, Resource, Shape, Unreadable, from_raw};

/// A resource's `contained` resources, read like any resource: Medications (for a `medicationReference` to
/// `#id`) and Conditions (for an order's `reasonReference` to `#id`) are kept. Wholly lenient: nothing in
/// `contained` marks the containing resource malformed; a contained resource of the wrong shape is itself
/// dropped.
#[derive(Clone, Copy)]
pub(super) struct Contained;

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
        Ok(Some(contained_one(ResourceShape::NESTED.map(map, &mut false)?)))
    }
    fn seq<A: SeqAccess<'de>>(self, mut seq: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut resources = Vec::new();
        while let Some(item) = seq.next_element_seed(Lenient {
            shape: ResourceShape::NESTED,
            bad: &mut false,
        })? {
            resources.extend(contained_one(item));
        }
        Ok(Some(resources))
    }
}

/// A contained resource kept for a reference to it: a Medication or a Condition with an id, well formed.
pub(super) fn contained_one(read: Option<(RawResource, bool)>) -> Vec<Resource> {
    match read.map(|(raw, bad)| from_raw(raw, bad)) {
        Some(Ok(resource @ (Resource::MedicationDefinition { id: Some(_), .. } | Resource::Condition(_)))) => {
            vec![resource]
        }
        _ => Vec::new(),
    }
}

/// A `dosage` or `dosageInstruction`: its `route` and `site`.
#[derive(Clone, Copy)]
pub(super) struct DosageShape;

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
pub(super) struct EvidenceShape;

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

/// The union of the fields the rules read, across the resource types the service handles; for a Bundle, also
/// its entries and links. Unknown fields (there are hundreds) are skipped without being built.
#[derive(Debug, Default)]
pub(super) struct RawResource {
    pub(super) resource_type: Option<String>,
    pub(super) id: Option<String>,
    pub(super) status: Option<String>,
    pub(super) code: Option<RawConcept>,
    pub(super) clinical_status: Option<String>,
    pub(super) verification_status: Option<String>,
    pub(super) onset_date_time: Option<String>,
    pub(super) onset_period: Option<RawPeriod>,
    /// `onsetAge`, or DSTU2 `onsetQuantity`.
    pub(super) onset_age: Option<AgeBounds>,
    pub(super) onset_range: Option<AgeBounds>,
    pub(super) onset_string: Option<String>,
    pub(super) recorded_date: Option<String>,
    pub(super) asserted_date: Option<String>,
    pub(super) date_recorded: Option<String>,
    pub(super) abatement_date_time: Option<String>,
    pub(super) abatement_period: Option<RawPeriod>,
    /// `abatementAge`, or DSTU2 `abatementQuantity`.
    pub(super) abatement_age: Option<AgeBounds>,
    pub(super) abatement_range: Option<AgeBounds>,
    pub(super) abatement_boolean: Option<bool>,
    pub(super) abatement_string: Option<String>,
    pub(super) body_site: Vec<RawConcept>,
    pub(super) reason_code: Vec<RawConcept>,
    pub(super) reason_codeable_concept: Option<RawConcept>,
    pub(super) reason_reference: Vec<RawReference>,
    pub(super) medication_codeable_concept: Option<RawConcept>,
    pub(super) medication_reference: Option<RawReference>,
    /// Contained Medications and Conditions.
    pub(super) contained: Vec<Resource>,
    /// `note[].text` and the texts of `evidence` (a Condition's free text).
    pub(super) notes: Vec<String>,
    /// `dosage[]`/`dosageInstruction[]`: (route, site).
    pub(super) dosage: Vec<(Option<RawConcept>, Option<RawConcept>)>,
    /// A Medication's `form`.
    pub(super) form: Option<RawConcept>,
    pub(super) intent: Option<String>,
    pub(super) taken: Option<String>,
    /// DSTU2 `wasNotTaken` or STU3 `notTaken` is true.
    pub(super) not_taken: bool,
    pub(super) authored_on: Option<String>,
    pub(super) date_written: Option<String>,
    pub(super) effective_date_time: Option<String>,
    pub(super) effective_period: Option<RawPeriod>,
    pub(super) date_asserted: Option<String>,
    pub(super) performed_date_time: Option<String>,
    pub(super) performed_period: Option<RawPeriod>,
    /// STU3 `notDone` or DSTU2 `notPerformed` is true.
    pub(super) not_done: bool,
    pub(super) birth_date: Option<String>,
    pub(super) issue: Vec<Option<String>>,
    /// Read only at the top level: a Bundle's entries, each already read (`Err` when unreadable).
    pub(super) entry: Vec<Result<Resource, Unreadable>>,
    /// Entries past the cap: counted, not built.
    pub(super) entry_beyond: usize,
    /// `entry` was there but not an array: nothing in the Bundle can be trusted then.
    pub(super) entry_not_array: bool,
    /// Read only at the top level; a malformed link is ignored (it must not spoil the entries).
    pub(super) link: Vec<(Option<String>, Option<String>)>,
}

/// A resource, with `bad` set when a field the rules read has the wrong shape. `top`: the value a search or
/// prefetch key returned, which may be a Bundle whose entries are read here too, at most `Some(n)` of them built
/// (see [`Entries`]).
#[derive(Clone, Copy)]
pub(super) struct ResourceShape {
    pub(super) top: Option<usize>,
}

impl ResourceShape {
    /// A resource inside another (an entry, a contained resource): no entries of its own.
    pub(super) const NESTED: ResourceShape = ResourceShape { top: None };
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
                Key::Entry if self.top.is_some() => {
                    let mut not_array = false;
                    let max = self.top.unwrap_or(0);
                    let (entries, beyond) = value(&mut map, Entries { max }, &mut not_array)?.unwrap_or_default();
                    raw.entry = entries;
                    raw.entry_beyond = beyond;
                    raw.entry_not_array = not_array;
                }
                Key::Link if self.top.is_some() => {
                    raw.link = value(&mut map, Many(LinkShape), &mut false)?.unwrap_or_default();
                }
                _ => skip(&mut map)?,
            }
        }
        Ok(Some((raw, *bad)))
    }
}

/// A Bundle's `entry` array: each entry read on its own, so that one bad entry is only itself skipped. At most
/// `max` are built; the rest are only counted (the second number), so that a Bundle over the caller's cap (a 413
/// for prefetch and draft orders) costs a scan of its text, not the memory of every resource in it: 247 MB
/// before the 413 when every entry was built.
#[derive(Clone, Copy)]
pub(super) struct Entries {
    pub(super) max: usize,
}

impl<'de> Shape<'de> for Entries {
    type Out = (Vec<Result<Resource, Unreadable>>, usize);
    fn seq<A: SeqAccess<'de>>(self, mut seq: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut entries = Vec::new();
        loop {
            if entries.len() >= self.max {
                let mut beyond = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    beyond += 1;
                }
                return Ok(Some((entries, beyond)));
            }
            let mut not_an_entry = false;
            let entry = seq.next_element_seed(Lenient {
                shape: EntryShape,
                bad: &mut not_an_entry,
            })?;
            match entry {
                None => return Ok(Some((entries, 0))),
                Some(Some(resource)) => entries.push(resource),
                Some(None) => entries.push(Err(Unreadable::Invalid)),
            }
        }
    }
}

/// One Bundle entry: its `resource`, read. A Medication without an `id` takes the id its `fullUrl` gives
/// (`urn:uuid:…` in transaction and collection Bundles), since that is how the entries refer to it.
#[derive(Clone, Copy)]
pub(super) struct EntryShape;

impl<'de> Shape<'de> for EntryShape {
    type Out = Result<Resource, Unreadable>;
    fn map<A: MapAccess<'de>>(self, mut map: A, _: &mut bool) -> Result<Option<Self::Out>, A::Error> {
        let mut resource = Err(Unreadable::Invalid);
        let mut full_url = None;
        while let Some(key) = next_key(&mut map)? {
            match key {
                Key::Resource => {
                    if let Some((raw, bad)) = value(&mut map, ResourceShape::NESTED, &mut false)? {
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

#[cfg(test)]
mod tests {
    use crate::fhir::parse_contents;
    use crate::fhir::tests::medication;

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
        let contents = parse_contents(bundle, usize::MAX).unwrap();
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
        let next = parse_contents(
            &bundle(r#"[{"relation":"self","url":"a"},{"relation":"next","url":"b"}]"#),
            usize::MAX,
        );
        assert_eq!(next.unwrap().next.as_deref(), Some("b"));
        for malformed in [r#""x""#, r#"[{"relation":"next","url":7}]"#, "17"] {
            let contents = parse_contents(&bundle(malformed), usize::MAX).unwrap();
            assert_eq!((contents.resources.len(), contents.next), (1, None), "{malformed}");
        }
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
        let clean = parse_contents(&bundle((0..40).map(condition).collect()), usize::MAX).unwrap();
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
        let read = parse_contents(&bundle(broken), usize::MAX).unwrap();
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
}
