//! The rules' vocabulary: the cards they can produce ([`CardId`]), the value sets they ask about
//! ([`ValueSet`]) and the lookups on codes ([`Terminology`]), the phrases that find a meaning in text
//! ([`Keywords`]), and the clinical choices a site makes ([`Policy`]).
//!
//! Why it lives with the rules: these are the words the guideline is written in. A value set is a question a
//! rule asks ("is this low back pain?"), not a file format, so it is read next to the rules that ask it and
//! changes with them. The content in `cards/` gives the words their codes and phrases: [`crate::content`]
//! reads and checks those files once at start and builds a [`Terminology`] through
//! `Terminology::from_parts`. Nothing here reads a file, parses a content file or reports a problem, so the
//! rules stay pure functions that any test can feed with any terminology.

mod phrases;

use std::collections::HashMap;

use serde::Deserialize;

pub use phrases::{
    ConditionPhrases, Keywords, MedicationPhrases, OrderPhrases, PhraseSet, ProcedurePhrases, RegionPhrases,
    has_keyword, region_bit,
};

use crate::record::Coding;

/// Every card a rule can produce. Each has `cards/cards/<id>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CardId {
    AgainstChronicLowBackPain,
    AgainstOsteoarthritis,
    AgainstPatellofemoralPain,
    AgainstHeadache,
    AgainstChronicPain,
    NeckPainPreferManualTherapy,
    MyofascialCareMissing,
    MyofascialMayConsider,
    NotFirstLineCareMissing,
    NotFirstLineCareDocumented,
    ConfirmDuration,
    IndicationNotDocumented,
    /// A non-myofascial problem of a region the guideline does not address (tendinopathy, bursitis…).
    ConditionOutsideGuideline,
    /// Not a verdict: the rules lacked data and the missing-data policy asked for a card instead of a 412.
    DataUnavailable,
}

impl CardId {
    pub const ALL: [CardId; 14] = [
        CardId::AgainstChronicLowBackPain,
        CardId::AgainstOsteoarthritis,
        CardId::AgainstPatellofemoralPain,
        CardId::AgainstHeadache,
        CardId::AgainstChronicPain,
        CardId::NeckPainPreferManualTherapy,
        CardId::MyofascialCareMissing,
        CardId::MyofascialMayConsider,
        CardId::NotFirstLineCareMissing,
        CardId::NotFirstLineCareDocumented,
        CardId::ConfirmDuration,
        CardId::IndicationNotDocumented,
        CardId::ConditionOutsideGuideline,
        CardId::DataUnavailable,
    ];

    pub fn file_stem(self) -> &'static str {
        match self {
            CardId::AgainstChronicLowBackPain => "against-chronic-low-back-pain",
            CardId::AgainstOsteoarthritis => "against-osteoarthritis",
            CardId::AgainstPatellofemoralPain => "against-patellofemoral-pain",
            CardId::AgainstHeadache => "against-headache",
            CardId::AgainstChronicPain => "against-chronic-pain",
            CardId::NeckPainPreferManualTherapy => "neck-pain-prefer-manual-therapy",
            CardId::MyofascialCareMissing => "myofascial-care-missing",
            CardId::MyofascialMayConsider => "myofascial-may-consider",
            CardId::NotFirstLineCareMissing => "not-first-line-care-missing",
            CardId::NotFirstLineCareDocumented => "not-first-line-care-documented",
            CardId::ConfirmDuration => "confirm-duration",
            CardId::IndicationNotDocumented => "indication-not-documented",
            CardId::ConditionOutsideGuideline => "condition-outside-guideline",
            CardId::DataUnavailable => "data-unavailable",
        }
    }
}

/// The value sets the rules use. Each is a `set` name in `cards/valuesets/codes.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueSet {
    DryNeedlingOrder,
    NotDryNeedlingOrder,
    LowBackPain,
    NotBackPain,
    LumbarDegenerative,
    NeckPain,
    Myofascial,
    Myalgia,
    ChronicPain,
    Osteoarthritis,
    PatellofemoralPain,
    Headache,
    Analgesic,
    NotAnAnalgesicTrial,
    HeatTherapy,
    HotOrColdPack,
    SelfCare,
    SiteNeck,
    SiteLowBack,
    ManualTherapy,
    TherapeuticExercise,
    BackPainOther,
    /// A non-myofascial musculoskeletal problem of a region the guideline does not address (tendinopathy,
    /// bursitis, epicondylitis, plantar fasciitis, joint pain of a limb).
    OtherMusculoskeletal,
    /// Family or personal history (ICD-10-CM Z80–Z87): not the patient's current condition.
    History,
}

impl ValueSet {
    pub(crate) const ALL: [ValueSet; 24] = [
        ValueSet::DryNeedlingOrder,
        ValueSet::NotDryNeedlingOrder,
        ValueSet::LowBackPain,
        ValueSet::NotBackPain,
        ValueSet::LumbarDegenerative,
        ValueSet::NeckPain,
        ValueSet::Myofascial,
        ValueSet::Myalgia,
        ValueSet::ChronicPain,
        ValueSet::Osteoarthritis,
        ValueSet::PatellofemoralPain,
        ValueSet::Headache,
        ValueSet::Analgesic,
        ValueSet::NotAnAnalgesicTrial,
        ValueSet::HeatTherapy,
        ValueSet::HotOrColdPack,
        ValueSet::SelfCare,
        ValueSet::SiteNeck,
        ValueSet::SiteLowBack,
        ValueSet::ManualTherapy,
        ValueSet::TherapeuticExercise,
        ValueSet::BackPainOther,
        ValueSet::OtherMusculoskeletal,
        ValueSet::History,
    ];

    /// Sets that may be empty: body-site codes are a complement to body-site text.
    pub(crate) fn optional(self) -> bool {
        matches!(self, ValueSet::SiteNeck | ValueSet::SiteLowBack)
    }

    pub(crate) fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The CSV set names that make up this value set.
    pub(crate) fn csv_sets(self) -> &'static [&'static str] {
        match self {
            ValueSet::DryNeedlingOrder => &["order.dry_needling"],
            ValueSet::NotDryNeedlingOrder => &["order.related_not_dry_needling"],
            ValueSet::LowBackPain => &["cond.low_back_pain"],
            ValueSet::NotBackPain => &["cond.not_back_pain"],
            ValueSet::LumbarDegenerative => &["cond.lumbar_degenerative"],
            ValueSet::NeckPain => &["cond.neck_pain"],
            ValueSet::Myofascial => &["cond.myofascial_trigger_point"],
            ValueSet::Myalgia => &["cond.myalgia_broad_optional"],
            ValueSet::ChronicPain => &["cond.chronic_pain_general"],
            ValueSet::Osteoarthritis => &["exclude.osteoarthritis"],
            ValueSet::PatellofemoralPain => &["exclude.patellofemoral_pain"],
            ValueSet::Headache => &["exclude.headache"],
            ValueSet::Analgesic => &[
                "med.acetaminophen.ingredient",
                "med.nsaid.ingredient",
                "med.nsaid.precise_ingredient_or_alt",
                "med.common_products",
                "med.topical_nsaid",
                "med.atc",
            ],
            ValueSet::NotAnAnalgesicTrial => &["med.do_not_count_as_analgesic_trial"],
            ValueSet::HeatTherapy => &["proc.heat_therapy"],
            ValueSet::HotOrColdPack => &["proc.hot_or_cold_pack"],
            ValueSet::SelfCare => &["proc.self_care_education_activity"],
            ValueSet::SiteNeck => &["site.neck"],
            ValueSet::SiteLowBack => &["site.low_back"],
            ValueSet::ManualTherapy => &["proc.manual_therapy"],
            ValueSet::TherapeuticExercise => &["proc.therapeutic_exercise"],
            ValueSet::BackPainOther => &["cond.back_pain_other"],
            ValueSet::OtherMusculoskeletal => &["cond.other_musculoskeletal"],
            ValueSet::History => &["cond.history"],
        }
    }
}

/// Code systems under their canonical URL; EHRs also send the HL7 OIDs.
pub(crate) fn canonical_system(system: &str) -> &str {
    match system {
        "urn:oid:2.16.840.1.113883.6.96" => "http://snomed.info/sct",
        "urn:oid:2.16.840.1.113883.6.90" => "http://hl7.org/fhir/sid/icd-10-cm",
        "urn:oid:2.16.840.1.113883.6.103" | "http://hl7.org/fhir/sid/icd-9" => "http://hl7.org/fhir/sid/icd-9-cm",
        "urn:oid:2.16.840.1.113883.6.12" => "http://www.ama-assn.org/go/cpt",
        "urn:oid:2.16.840.1.113883.6.88" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        other => other,
    }
}

/// ICD-10-CM and ICD-9-CM codes arrive with and without the dot, in either case.
pub(crate) fn canonical_code<'a>(system: &str, code: &'a str) -> std::borrow::Cow<'a, str> {
    if matches!(
        system,
        "http://hl7.org/fhir/sid/icd-10-cm" | "http://hl7.org/fhir/sid/icd-9-cm"
    ) {
        std::borrow::Cow::Owned(code.trim().replace('.', "").to_ascii_uppercase())
    } else {
        std::borrow::Cow::Borrowed(code.trim())
    }
}

/// Code systems whose codes say what a condition is: a concept coded in one of these is classified by its codes
/// alone, never re-read from its display (`cards/valuesets/keywords.toml`).
pub fn is_standard_system(system: &str) -> bool {
    matches!(
        canonical_system(system),
        "http://snomed.info/sct" | "http://hl7.org/fhir/sid/icd-10-cm" | "http://hl7.org/fhir/sid/icd-9-cm"
    )
}

/// system → code → a bit set (of [`ValueSet`]s, or of regions as [`region_bit`]).
pub(crate) type CodeIndex = HashMap<String, HashMap<String, u32>>;
/// system → code → display.
pub(crate) type ChronicIndex = HashMap<String, HashMap<String, String>>;

/// Value sets plus text fallbacks.
#[derive(Debug, Clone)]
pub struct Terminology {
    /// system → code → bit set of [`ValueSet`]s.
    codes: HashMap<String, HashMap<String, u32>>,
    /// system → code → display, for codes whose display says "chronic".
    chronic: HashMap<String, HashMap<String, String>>,
    /// system → code → the body regions the code implies (bits as [`region_bit`]): `site.<region>` rows, and
    /// for the condition rows of `codes.csv` the regions their own (English) display names, so that a code
    /// sent with a display in another language, or none, still places its condition.
    sites: HashMap<String, HashMap<String, u32>>,
    pub keywords: Keywords,
}

impl Terminology {
    fn lookup(&self, coding: &Coding) -> u32 {
        let system = canonical_system(&coding.system);
        let code = canonical_code(system, &coding.code);
        self.codes
            .get(system)
            .and_then(|codes| codes.get(code.as_ref()))
            .copied()
            .unwrap_or(0)
    }

    /// True when the coding belongs to the value set.
    pub fn contains(&self, set: ValueSet, coding: &Coding) -> bool {
        self.lookup(coding) & set.bit() != 0
    }

    /// True when the coding is known to any of the project's value sets.
    pub fn is_known(&self, coding: &Coding) -> bool {
        self.lookup(coding) != 0
    }

    /// The body regions the coding implies by itself (bits as [`region_bit`]), whatever its display says.
    pub fn site_bits(&self, coding: &Coding) -> u32 {
        let system = canonical_system(&coding.system);
        let code = canonical_code(system, &coding.code);
        self.sites
            .get(system)
            .and_then(|codes| codes.get(code.as_ref()))
            .copied()
            .unwrap_or(0)
    }

    /// True when two procedure codes name the same therapy (the same code, or both manual therapy, or both
    /// therapeutic exercise), so that a card does not suggest what is already drafted or done.
    pub fn same_procedure(&self, a: &Coding, b: &Coding) -> bool {
        let same_code = canonical_system(&a.system) == canonical_system(&b.system)
            && canonical_code(canonical_system(&a.system), &a.code)
                == canonical_code(canonical_system(&b.system), &b.code);
        same_code
            || [ValueSet::ManualTherapy, ValueSet::TherapeuticExercise]
                .into_iter()
                .any(|set| self.contains(set, a) && self.contains(set, b))
    }

    /// True when a value-set code's own display says the condition is chronic (e.g. 278860009).
    pub fn says_chronic(&self, coding: &Coding) -> bool {
        let system = canonical_system(&coding.system);
        let code = canonical_code(system, &coding.code);
        self.chronic
            .get(system)
            .is_some_and(|codes| codes.contains_key(code.as_ref()))
    }

    /// A terminology from what the content's loader read: the code tables of `codes.csv` and `icd10cm.csv`,
    /// and the compiled phrases of `keywords.toml`.
    pub(crate) fn from_parts(
        codes: CodeIndex,
        chronic: ChronicIndex,
        sites: CodeIndex,
        keywords: Keywords,
    ) -> Terminology {
        Terminology {
            codes,
            chronic,
            sites,
            keywords,
        }
    }

    /// Distinct (system, code) pairs in the value sets.
    pub(crate) fn code_count(&self) -> usize {
        self.codes.values().map(HashMap::len).sum()
    }
}

/// Clinical choices the guideline leaves open, set in `cards/service.toml` `[policy]` so that a site's CDS team
/// can review and change them with the card texts.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Conservative care older than this (in days before today) does not count for the current episode when
    /// the episode's onset is not known. When it is known, care must be on or after the onset.
    pub care_max_age_days: u16,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { care_max_age_days: 180 }
    }
}
