//! The clinical-concept layer: every coded or typed concept the rules meet (a Condition's code and body site,
//! the order's reason, body site and code text) is classified here, once and by the same code, into the kinds
//! of pain the guideline names, the body regions it is in, and whether it says it is chronic.
//!
//! Why one place: the guideline's verdicts turn on meaning (chronic low back pain, a myofascial pain of the
//! neck), and real records state the same meaning under SNOMED CT, ICD-10-CM, ICD-9-CM, local codes or typed
//! text. Classifying each concept the same way wherever it appears is what lets the rules compare an order's
//! reason with the problem list across code systems.
//!
//! The reading order is a safety choice: kinds come from value sets when a concept carries any code of a
//! standard system (so "Fracture of neck of femur", SNOMED 5913000, is never read as neck pain), and from
//! phrases only for local codes and typed text (and, under a standard code outside the value sets, from the
//! clinician's typed text only when it names a kind that forbids dry needling or says chronic). Regions and
//! "chronic" are read from every text and display: "chronic" can only make a verdict stricter, and regions
//! (which also decide which conditions bear on an order) use phrases with exclusions and whole-word short
//! words, so "neck of femur" or "army" place nothing.

use crate::assess::vocabulary::{Terminology, ValueSet, is_standard_system};
use crate::record::Concept;

/// A kind of condition the guideline speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    LowBackPain,
    /// Back pain elsewhere than the low back (thoracic, unspecified dorsalgia).
    BackPain,
    LumbarDegenerative,
    NeckPain,
    Myofascial,
    Myalgia,
    /// Chronic pain as a diagnosis: chronic pain syndrome, fibromyalgia, chronic widespread pain.
    ChronicPain,
    Osteoarthritis,
    Patellofemoral,
    Headache,
    /// A non-myofascial musculoskeletal problem of a region the guideline does not address (tendinopathy,
    /// bursitis, epicondylitis, plantar fasciitis, joint pain of a limb): never an indication for dry needling.
    OtherMusculoskeletal,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::LowBackPain,
        Kind::BackPain,
        Kind::LumbarDegenerative,
        Kind::NeckPain,
        Kind::Myofascial,
        Kind::Myalgia,
        Kind::ChronicPain,
        Kind::Osteoarthritis,
        Kind::Patellofemoral,
        Kind::Headache,
        Kind::OtherMusculoskeletal,
    ];

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Pains of the back, neck and muscles: the ones whose duration decides between "not recommended" and
    /// "conservative care first". Their facts form episodes.
    pub fn is_spinal_or_muscle_pain(self) -> bool {
        matches!(
            self,
            Kind::LowBackPain
                | Kind::BackPain
                | Kind::LumbarDegenerative
                | Kind::NeckPain
                | Kind::Myofascial
                | Kind::Myalgia
                | Kind::ChronicPain
        )
    }

    /// Kinds that name the same problem for matching an order's reason with the record.
    fn group(self) -> u8 {
        match self {
            Kind::LowBackPain | Kind::LumbarDegenerative | Kind::BackPain => 0,
            Kind::NeckPain => 1,
            Kind::Myofascial | Kind::Myalgia => 2,
            Kind::ChronicPain => 3,
            Kind::Osteoarthritis => 4,
            Kind::Patellofemoral => 5,
            Kind::Headache => 6,
            Kind::OtherMusculoskeletal => 7,
        }
    }
}

/// A set of [`Kind`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Kinds(u16);

impl Kinds {
    pub fn has(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }
    pub fn add(&mut self, kind: Kind) {
        self.0 |= kind.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.has(*k))
    }
    pub fn any_pain(self) -> bool {
        self.iter().any(Kind::is_spinal_or_muscle_pain)
    }
    /// True when both share a kind.
    pub fn intersects(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }
    /// True when both name the same problem (same kind or the same group, e.g. myofascial pain and myalgia).
    pub fn shares_group(self, other: Kinds) -> bool {
        self.iter().any(|a| other.iter().any(|b| a.group() == b.group()))
    }
}

/// The body regions a concept names: the guideline's two (low back, neck), and every other region of
/// `cards/valuesets/keywords.toml` (thoracic, head and jaw, shoulder, elbow, wrist and hand, hip, knee, ankle and
/// foot, widespread…), each its own bit. Heat is owed only for the low back; the others tell where a pain is, so
/// that a condition of one region does not decide an order for another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Regions(u32);

impl Regions {
    pub fn low_back(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn neck(self) -> bool {
        self.0 & 2 != 0
    }
    /// Names a region other than the low back and the neck.
    pub fn elsewhere(self) -> bool {
        self.0 & !3 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn union(self, other: Regions) -> Regions {
        Regions(self.0 | other.0)
    }
    /// True when both name a region in common.
    pub fn overlaps(self, other: Regions) -> bool {
        self.0 & other.0 != 0
    }
    /// The regions as bits ([`crate::assess::vocabulary::region_bit`]).
    pub fn bits(self) -> u32 {
        self.0
    }
}

/// What a concept means for the guideline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meaning {
    pub kinds: Kinds,
    pub regions: Regions,
    /// A code, display or text says the condition is chronic.
    pub says_chronic: bool,
}

/// The lower-cased texts of a concept: its text, then each display.
fn texts(concept: &Concept) -> Vec<String> {
    concept
        .text
        .iter()
        .chain(concept.codings.iter().filter_map(|c| c.display.as_ref()))
        .map(|t| t.to_lowercase())
        .collect()
}

/// The regions named by a concept: by the sites its codes imply (`site.<region>` rows, the ICD-10-CM table, the
/// display of a listed code), by the pain value sets that imply one, or by phrases in any text or display. A
/// code places its concept whatever the language of the display it arrives with.
pub fn regions(concept: &Concept, terms: &Terminology) -> Regions {
    let texts = texts(concept);
    let text = || texts.iter().map(String::as_str);
    let any = |set| concept.codings.iter().any(|c| terms.contains(set, c));
    let mut bits = concept.codings.iter().fold(0, |bits, c| bits | terms.site_bits(c));
    if any(ValueSet::SiteLowBack) || any(ValueSet::LowBackPain) || any(ValueSet::LumbarDegenerative) {
        bits |= 1;
    }
    if any(ValueSet::SiteNeck) || any(ValueSet::NeckPain) {
        bits |= 2;
    }
    let region_phrases = &terms.keywords.region;
    for (name, phrases) in region_phrases {
        if phrases.matches_any(text())
            && let Some(bit) = crate::assess::vocabulary::region_bit(region_phrases, name)
        {
            bits |= 1 << bit;
        }
    }
    // Widespread pain (fibromyalgia, "multiple sites") places nothing: it may be pain of any region, so the rules
    // treat it as unplaced (it bears on every order, and heat stays owed). Dropping the bit here keeps a code
    // that the ICD-10-CM table places "widespread" and one that nothing places (SNOMED CT fibromyalgia) the same.
    Regions(bits & !WIDESPREAD)
}

/// The bit of the `widespread` region ([`crate::assess::vocabulary::region_bit`]).
const WIDESPREAD: u32 = 4;

/// The kinds named by phrases in any of the texts (lower-case).
fn phrase_kinds<'t>(texts: impl IntoIterator<Item = &'t str> + Clone, terms: &Terminology) -> Kinds {
    let kw = &terms.keywords.condition;
    let phrases = [
        (&kw.low_back, Kind::LowBackPain),
        (&kw.back, Kind::BackPain),
        (&kw.lumbar_degenerative, Kind::LumbarDegenerative),
        (&kw.neck, Kind::NeckPain),
        (&kw.myofascial, Kind::Myofascial),
        (&kw.myalgia, Kind::Myalgia),
        (&kw.chronic_pain, Kind::ChronicPain),
        (&kw.osteoarthritis, Kind::Osteoarthritis),
        (&kw.patellofemoral, Kind::Patellofemoral),
        (&kw.headache, Kind::Headache),
        (&kw.other_musculoskeletal, Kind::OtherMusculoskeletal),
    ];
    let mut kinds = Kinds::default();
    for (set, kind) in phrases {
        if set.matches_any(texts.clone()) {
            kinds.add(kind);
        }
    }
    kinds
}

/// True when a text begins by saying it is history ("Family history of fibromyalgia", "FH: migraine", "History
/// of low back pain"): only at the start, so "Low back pain, history of fusion" is still low back pain.
fn says_history(text: &str, terms: &Terminology) -> bool {
    let text = text.trim_start().trim_start_matches(|c: char| !c.is_alphanumeric());
    terms
        .keywords
        .condition
        .history
        .phrases
        .iter()
        .any(|phrase| text.starts_with(phrase.as_str()))
}

/// The value sets that give a coding a kind.
const KIND_SETS: [(ValueSet, Kind); 11] = [
    (ValueSet::LowBackPain, Kind::LowBackPain),
    (ValueSet::BackPainOther, Kind::BackPain),
    (ValueSet::LumbarDegenerative, Kind::LumbarDegenerative),
    (ValueSet::NeckPain, Kind::NeckPain),
    (ValueSet::Myofascial, Kind::Myofascial),
    (ValueSet::Myalgia, Kind::Myalgia),
    (ValueSet::ChronicPain, Kind::ChronicPain),
    (ValueSet::Osteoarthritis, Kind::Osteoarthritis),
    (ValueSet::PatellofemoralPain, Kind::Patellofemoral),
    (ValueSet::Headache, Kind::Headache),
    (ValueSet::OtherMusculoskeletal, Kind::OtherMusculoskeletal),
];

/// The kinds one coding carries by the value sets. A coding in an exclusion set (`cond.not_back_pain`: low
/// back pain in pregnancy, renal-angle pain) or a history set carries none, and only for itself: it never
/// removes what another coding of the same concept says.
fn coding_kinds(coding: &crate::record::Coding, terms: &Terminology) -> Kinds {
    let mut kinds = Kinds::default();
    if terms.contains(ValueSet::NotBackPain, coding) || terms.contains(ValueSet::History, coding) {
        return kinds;
    }
    for (set, kind) in KIND_SETS {
        if terms.contains(set, coding) {
            kinds.add(kind);
        }
    }
    kinds
}

/// Classifies a condition-like concept (a Condition's code, an order's reason).
///
/// Each coding is read on its own and the meanings are joined, so the result does not depend on the order of
/// the codings and adding a coding never removes another's meaning. Family and personal history (ICD-10-CM
/// Z80–Z87, a display or text that begins "family history of", "history of"…) names no current condition of
/// the patient: such a coding or text adds nothing, and takes nothing from the others.
pub fn classify(concept: &Concept, terms: &Terminology) -> Meaning {
    let codings = &concept.codings;
    let texts = texts(concept);
    let text = || texts.iter().map(String::as_str);
    let mut meaning = Meaning {
        regions: regions(concept, terms),
        says_chronic: terms.keywords.chronic.matches_any(text()) || codings.iter().any(|c| terms.says_chronic(c)),
        ..Meaning::default()
    };
    let coded_kinds = codings
        .iter()
        .fold(Kinds::default(), |k, c| k.union(coding_kinds(c, terms)));
    let coded = codings.iter().any(|c| is_standard_system(&c.system));
    if coded {
        // A local coding (an EHR's own diagnosis list) says what it means by its display: read alongside the
        // standard codings, so that adding a SNOMED CT or ICD-10-CM coding never removes its meaning.
        let local_displays: Vec<String> = codings
            .iter()
            .filter(|c| !is_standard_system(&c.system))
            .filter_map(|c| c.display.as_ref())
            .map(|d| d.to_lowercase())
            .collect();
        let local_kinds = phrase_kinds(
            local_displays
                .iter()
                .map(String::as_str)
                .filter(|d| !says_history(d, terms)),
            terms,
        );
        meaning.kinds = coded_kinds.union(local_kinds);
        let excluded = codings.iter().any(|c| terms.contains(ValueSet::NotBackPain, c));
        // A standard code outside the value sets says nothing, but the clinician's own `text` may (ICD R52 typed
        // as "Chronic low back pain"). It is read only when it names a kind that can forbid dry needling or says
        // chronic: typed text never makes a coded concept a permissive indication.
        if meaning.kinds.is_empty()
            && !excluded
            && let Some(text) = concept.text.as_deref()
            && !says_history(&text.to_lowercase(), terms)
        {
            let typed = phrase_kinds([text.to_lowercase().as_str()], terms);
            let restrictive = [
                Kind::LumbarDegenerative,
                Kind::NeckPain,
                Kind::ChronicPain,
                Kind::Osteoarthritis,
                Kind::Patellofemoral,
                Kind::Headache,
                Kind::OtherMusculoskeletal,
            ];
            if meaning.says_chronic || restrictive.iter().any(|k| typed.has(*k)) {
                meaning.kinds = typed;
            }
        }
    } else {
        meaning.kinds = phrase_kinds(text().filter(|t| !says_history(t, terms)), terms);
    }
    let kinds = &mut meaning.kinds;
    // Spinal osteoarthritis of the low back is degenerative lumbar disease too (terminology/NOTES.md).
    if kinds.has(Kind::Osteoarthritis) && meaning.regions.low_back() && !meaning.regions.neck() {
        kinds.add(Kind::LumbarDegenerative);
    }
    meaning
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Knowledge;
    use crate::record::Coding;

    fn coded(system: &str, code: &str, display: &str) -> Concept {
        Concept {
            codings: vec![Coding {
                system: system.into(),
                code: code.into(),
                display: Some(display.into()),
            }],
            text: None,
        }
    }

    fn typed(text: &str) -> Concept {
        Concept {
            codings: vec![],
            text: Some(text.into()),
        }
    }

    const SCT: &str = "http://snomed.info/sct";
    const ICD: &str = "http://hl7.org/fhir/sid/icd-10-cm";

    #[test]
    fn standard_codes_are_never_reread_from_their_display() {
        let k = Knowledge::embedded().unwrap();
        let t = &k.terminology;
        for concept in [
            coded(SCT, "5913000", "Fracture of neck of femur (disorder)"),
            coded(ICD, "N87.1", "Moderate cervical dysplasia"),
        ] {
            let m = classify(&concept, t);
            assert!(m.kinds.is_empty(), "{concept:?}");
            assert!(!m.regions.neck(), "{concept:?}");
        }
        // A standard code outside the value sets keeps the clinician's typed meaning when it can only forbid.
        let chronic_typed = Concept {
            text: Some("Chronic low back pain".into()),
            ..coded(ICD, "R52", "Pain, unspecified")
        };
        let m = classify(&chronic_typed, t);
        assert!(m.kinds.has(Kind::LowBackPain) && m.says_chronic);
        let acute_typed = Concept {
            text: Some("myofascial pain, trapezius".into()),
            ..coded(ICD, "R52", "Pain, unspecified")
        };
        assert!(
            classify(&acute_typed, t).kinds.is_empty(),
            "typed text never permits under a standard code"
        );
        // Short region words must be whole words; "cervical osteoarthritis" is not excluded by "cervical os".
        assert!(!regions(&typed("army service"), t).elsewhere());
        assert!(regions(&typed("cervical osteoarthritis"), t).neck());
        // The same words typed or under a local code are not neck pain either: the phrases exclude them.
        for text in [
            "Fracture of neck of femur",
            "cervical dysplasia, moderate",
            "Neck of humerus fracture",
        ] {
            let m = classify(&typed(text), t);
            assert!(m.kinds.is_empty() && !m.regions.neck(), "{text}");
        }
    }

    #[test]
    fn one_meaning_across_code_systems_and_text() {
        let k = Knowledge::embedded().unwrap();
        let t = &k.terminology;
        let low_back_myofascial = [
            coded(SCT, "279041008", "Myofascial pain syndrome of lower back (disorder)"),
            typed("Myofascial pain, lumbar paraspinals"),
            typed("trigger points, low back"),
        ];
        for concept in low_back_myofascial {
            let m = classify(&concept, t);
            assert!(m.kinds.has(Kind::Myofascial), "{concept:?}");
            assert!(m.regions.low_back() && !m.regions.neck(), "{concept:?}");
        }
        let chronic_lbp = [
            coded(SCT, "278860009", "Chronic low back pain (finding)"),
            typed("Chronic low back pain"),
            Concept {
                text: Some("Chronic midline low back pain without sciatica".into()),
                ..coded(ICD, "M54.50", "Low back pain, unspecified")
            },
        ];
        for concept in chronic_lbp {
            let m = classify(&concept, t);
            assert!(m.kinds.has(Kind::LowBackPain) && m.says_chronic, "{concept:?}");
        }
        let fibromyalgia = [
            coded(SCT, "203082005", "Fibromyalgia (disorder)"),
            typed("fibromyalgia"),
        ];
        for concept in fibromyalgia {
            assert!(classify(&concept, t).kinds.has(Kind::ChronicPain), "{concept:?}");
        }
        let cervical_oa = [
            coded(SCT, "1343604001", "Osteoarthritis of cervical spine (disorder)"),
            typed("Osteoarthritis of cervical spine"),
        ];
        for concept in cervical_oa {
            let m = classify(&concept, t);
            assert!(m.kinds.has(Kind::Osteoarthritis) && m.regions.neck(), "{concept:?}");
        }
    }

    #[test]
    fn target_muscles_and_body_sites_name_regions() {
        let k = Knowledge::embedded().unwrap();
        let t = &k.terminology;
        for (text, low_back, neck, elsewhere) in [
            ("Upper trapezius, left", false, true, false),
            ("levator scapulae", false, true, false),
            ("Scalenes", false, true, false),
            ("Neck", false, true, false),
            ("quadratus lumborum", true, false, false),
            ("Lumbar paraspinals", true, false, false),
            ("Lower back structure", true, false, false),
            ("Right knee", false, false, true),
            ("thoracic paraspinals", false, false, true),
            ("neck of femur", false, false, true),
        ] {
            let r = regions(&typed(text), t);
            assert_eq!(
                (r.low_back(), r.neck(), r.elsewhere()),
                (low_back, neck, elsewhere),
                "{text}"
            );
        }
        // Knee and thorax are different regions.
        assert!(!regions(&typed("knee"), t).overlaps(regions(&typed("thoracic spine"), t)));
    }
}
