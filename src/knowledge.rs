//! The guidance content: card texts, suggested resources, service descriptions and value sets, loaded from
//! `cards/` and checked once at start.
//!
//! Why content is data: clinicians review and change wording and code lists far more often than logic, and a
//! reviewer should not need to read Rust. The directory is embedded in the binary (so the service runs with no
//! files around it) and can be replaced at start by a directory named in configuration. Everything a rule can
//! ask for is checked here, so a bad file stops the start, never a request. The people who edit these files are
//! a CDS team, not programmers: every problem is collected and reported at once (not only the first), each with
//! the path they would open, the field or line, and the numbers that say what to change (a summary's length
//! budget); `check-content` runs this same check without starting the service.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};
use serde::Deserialize;

use crate::record::{Coding, DataKind};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/cards");

/// A start-up failure in the content: every problem found in it, or a directory that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{}", list_problems(problems))]
    Invalid { problems: Vec<Problem> },
    #[error("cannot read {file}: {source}")]
    Io { file: String, source: std::io::Error },
}

impl KnowledgeError {
    /// The problems found, each with its file, place and what to do (none for an unreadable directory).
    pub fn problems(&self) -> &[Problem] {
        match self {
            KnowledgeError::Invalid { problems } => problems,
            KnowledgeError::Io { .. } => &[],
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut out = match problems.len() {
        1 => "1 problem:".to_string(),
        n => format!("{n} problems:"),
    };
    for problem in problems {
        out.push_str("\n    ");
        out.push_str(&problem.to_string());
    }
    out
}

/// One mistake in the content, said so that its author can fix it: the file by the path they would open
/// (`cards/cards/against-headache.toml`, or the same under the directory given), where in it (a field, a
/// line), and what is wrong, with the numbers that decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// A field (`summary`), a line (`line 57`), or empty when the whole file is at fault.
    pub place: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.place.as_str() {
            "" => write!(f, "{}: {}", self.file, self.message),
            place => write!(f, "{}: {}: {}", self.file, place, self.message),
        }
    }
}

/// The problems found so far, every file's path written under the content's root as its author sees it.
struct Problems {
    root: PathBuf,
    found: Vec<Problem>,
}

impl Problems {
    fn add(&mut self, file: &str, place: impl Into<String>, message: impl Into<String>) {
        self.found.push(Problem {
            file: self.root.join(file).display().to_string(),
            place: place.into(),
            message: message.into(),
        });
    }

    /// A TOML file that does not parse: the line, and the parser's message without its drawing of the line.
    fn toml(&mut self, file: &str, text: &str, error: &toml::de::Error) {
        let line = error
            .span()
            .map(|span| format!("line {}", text[..span.start.min(text.len())].lines().count().max(1)))
            .unwrap_or_default();
        self.add(file, line, error.message().trim().to_string());
    }
}

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
    const ALL: [ValueSet; 24] = [
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
    fn optional(self) -> bool {
        matches!(self, ValueSet::SiteNeck | ValueSet::SiteLowBack)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The CSV set names that make up this value set.
    fn csv_sets(self) -> &'static [&'static str] {
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
fn canonical_system(system: &str) -> &str {
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
fn canonical_code<'a>(system: &str, code: &'a str) -> std::borrow::Cow<'a, str> {
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

/// Phrases that find a meaning in text (`cards/valuesets/keywords.toml`). A phrase matches at the start of a
/// word, so `needl` matches "needling" and `heat` does not match "wheat"; a phrase ending in `$` must also end a
/// word (`arm$` is not "army"); an `exclude` phrase in the same text
/// vetoes the match; an `exact` phrase must be the whole text. The phrases are compiled once at load into
/// Aho-Corasick automata, so a text is scanned once per set, not once per phrase.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhraseSet {
    #[serde(default)]
    pub phrases: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exact: Vec<String>,
    #[serde(skip)]
    compiled: Option<(Automaton, Automaton)>,
}

/// Phrases compiled for one scan; `whole[i]`: phrase `i` ended with `$` and must also end a word.
#[derive(Debug, Clone)]
struct Automaton {
    automaton: aho_corasick::AhoCorasick,
    whole: Vec<bool>,
}

/// True when one of the phrases occurs in `text` at the start of a word (and at its end, for `$` phrases).
fn found_at_word_start(compiled: &Automaton, text: &str) -> bool {
    compiled.automaton.find_overlapping_iter(text).any(|m| {
        let starts = text[..m.start()]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let ends = !compiled.whole[m.pattern().as_usize()]
            || text[m.end()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        starts && ends
    })
}

impl PhraseSet {
    /// True when one text (already lower-case) matches.
    pub fn matches(&self, text: &str) -> bool {
        let trimmed = text.trim();
        if self.exact.iter().any(|e| e == trimmed) {
            return true;
        }
        match &self.compiled {
            Some((phrases, exclude)) => found_at_word_start(phrases, text) && !found_at_word_start(exclude, text),
            None => has_keyword(text, &self.phrases) && !has_keyword(text, &self.exclude),
        }
    }

    /// True when any of the texts (already lower-case) matches.
    pub fn matches_any<'t>(&self, texts: impl IntoIterator<Item = &'t str>) -> bool {
        texts.into_iter().any(|t| self.matches(t))
    }

    fn lists_mut(&mut self) -> [&mut Vec<String>; 3] {
        [&mut self.phrases, &mut self.exclude, &mut self.exact]
    }

    fn compile(&mut self) -> Result<(), String> {
        let build = |patterns: &[String]| {
            let whole = patterns.iter().map(|p| p.ends_with('$')).collect();
            let bare: Vec<&str> = patterns.iter().map(|p| p.strip_suffix('$').unwrap_or(p)).collect();
            let automaton = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::Standard)
                .build(bare)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Automaton { automaton, whole })
        };
        self.compiled = Some((build(&self.phrases)?, build(&self.exclude)?));
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPhrases {
    pub dry_needling: PhraseSet,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionPhrases {
    pub low_back: PhraseSet,
    pub back: PhraseSet,
    pub lumbar_degenerative: PhraseSet,
    pub neck: PhraseSet,
    pub myofascial: PhraseSet,
    pub myalgia: PhraseSet,
    pub chronic_pain: PhraseSet,
    pub osteoarthritis: PhraseSet,
    pub patellofemoral: PhraseSet,
    pub headache: PhraseSet,
    /// A non-myofascial problem of a region the guideline does not address (tendinitis, bursitis…).
    pub other_musculoskeletal: PhraseSet,
    /// Family or personal history ("family history of fibromyalgia", "history of low back pain"): the text
    /// names someone else's condition, or one that is over, so it names no current condition.
    pub history: PhraseSet,
}

/// Region phrases by name. `low_back` and `neck` must be there (the guideline's two regions); the others
/// (`thoracic`, `knee`, …) only tell that a pain is somewhere else.
pub type RegionPhrases = BTreeMap<String, PhraseSet>;

/// The bit of a region name in [`Regions`](crate::assess::Regions): low back 0, neck 1, widespread 2 (pain of
/// many regions, which meets every region), the others in the order of their names.
pub fn region_bit(regions: &RegionPhrases, name: &str) -> Option<u32> {
    const FIXED: [&str; 3] = ["low_back", "neck", "widespread"];
    match FIXED.iter().position(|f| *f == name) {
        Some(i) => Some(i as u32),
        None => regions
            .keys()
            .filter(|k| !FIXED.contains(&k.as_str()))
            .position(|k| k == name)
            .map(|i| i as u32 + 3),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedicationPhrases {
    pub analgesic: PhraseSet,
    pub not_an_analgesic_trial: PhraseSet,
    /// Routes and dose forms that do not treat musculoskeletal pain (eye, ear and nose drops, irrigations,
    /// inhalers), read from `dosage.route`, `Medication.form` and the product's name.
    pub not_systemic: PhraseSet,
    /// Heat products kept on the medication list (an over-the-counter heat wrap): heat therapy, not a drug.
    pub heat_product: PhraseSet,
    /// NSAIDs and aspirin by name or class, for an allergy or intolerance to them.
    pub nsaid: PhraseSet,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedurePhrases {
    pub heat_therapy: PhraseSet,
    pub self_care: PhraseSet,
}

/// Text phrases for what codes cannot say (`cards/valuesets/keywords.toml`, which says where each is read).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keywords {
    pub order: OrderPhrases,
    pub condition: ConditionPhrases,
    pub chronic: PhraseSet,
    pub region: RegionPhrases,
    pub medication: MedicationPhrases,
    pub procedure: ProcedurePhrases,
}

impl Keywords {
    fn sets_mut(&mut self) -> Vec<&mut PhraseSet> {
        let c = &mut self.condition;
        let mut sets: Vec<&mut PhraseSet> = self.region.values_mut().collect();
        sets.extend([
            &mut self.order.dry_needling,
            &mut c.low_back,
            &mut c.back,
            &mut c.lumbar_degenerative,
            &mut c.neck,
            &mut c.myofascial,
            &mut c.myalgia,
            &mut c.chronic_pain,
            &mut c.osteoarthritis,
            &mut c.patellofemoral,
            &mut c.headache,
            &mut c.other_musculoskeletal,
            &mut c.history,
            &mut self.chronic,
            &mut self.medication.analgesic,
            &mut self.medication.not_an_analgesic_trial,
            &mut self.medication.not_systemic,
            &mut self.medication.heat_product,
            &mut self.medication.nsaid,
            &mut self.procedure.heat_therapy,
            &mut self.procedure.self_care,
        ]);
        sets
    }
}

/// True when `keyword` occurs in `text` (both lower-case) at the start of a word.
pub fn has_keyword<K: AsRef<str>>(text: &str, keywords: &[K]) -> bool {
    keywords.iter().any(|keyword| {
        text.match_indices(keyword.as_ref())
            .any(|(at, _)| text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric()))
    })
}

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

    /// Reads `valuesets/keywords.toml`, `valuesets/codes.csv` and the generated `valuesets/icd10cm.csv` (any may
    /// be missing: already reported; the ICD-10-CM table is optional in a content directory), adding every
    /// problem found to `problems`; `None` when any was found.
    fn load(
        csv_text: Option<&str>,
        icd_text: Option<&str>,
        keywords_text: Option<&str>,
        problems: &mut Problems,
    ) -> Option<Terminology> {
        let before = problems.found.len();
        let keywords = keywords_text.and_then(|text| read_keywords(text, problems));
        let mut tables = CodeTables::default();
        if let Some(text) = csv_text {
            read_codes(CODES_CSV, text, keywords.as_ref(), &mut tables, problems);
        }
        if let Some(text) = icd_text {
            read_codes(ICD10CM_CSV, text, keywords.as_ref(), &mut tables, problems);
        }
        if csv_text.is_some() {
            tables.check_sets(problems);
        }
        match keywords {
            Some(keywords) if problems.found.len() == before && csv_text.is_some() => Some(Terminology {
                codes: tables.codes,
                chronic: tables.chronic,
                sites: tables.sites,
                keywords,
            }),
            _ => None,
        }
    }
}

const CODES_CSV: &str = "valuesets/codes.csv";
/// Generated from the complete CMS ICD-10-CM release by `cards/tools/classify_icd10cm.py` (coverage:
/// `cards/valuesets/ICD10CM-COVERAGE.md`); same columns as `codes.csv`.
pub const ICD10CM_CSV: &str = "valuesets/icd10cm.csv";
const KEYWORDS_TOML: &str = "valuesets/keywords.toml";

/// Sets in `codes.csv` that no rule reads: kept with their sources for reference (the CPT unlisted-procedure
/// code, which says nothing about dry needling, and the CDS4CPM patient-reported pain therapies, of which
/// `heat-therapy` and `activity-goals` are also in the sets the rules read).
/// `cond.not_addressed` marks the ICD-10-CM codes of the chapters the generator classifies
/// (`cards/valuesets/icd10cm.csv`) that the guideline does not address: listed so that every code of those
/// chapters is classified, and read by no rule.
const REFERENCE_SETS: &[&str] = &[
    "order.unlisted_procedure",
    "proc.patient_reported_cds4cpm",
    "cond.not_addressed",
];

/// Every set name a row of `codes.csv` may carry.
pub fn known_set_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = ValueSet::ALL
        .iter()
        .flat_map(|v| v.csv_sets().iter().copied())
        .collect();
    names.extend(REFERENCE_SETS);
    names.sort_unstable();
    names
}

/// The code systems a row of `codes.csv` may name, under their canonical URL (their HL7 OIDs are accepted too).
pub const KNOWN_SYSTEMS: &[&str] = &[
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-9-cm",
    "http://www.ama-assn.org/go/cpt",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://www.whocc.no/atc",
    "http://fhir.org/guides/cqf/cds4cpm/CodeSystem/pain-therapies",
];

/// A local code system is named by its OID (`urn:oid:1.2.840.114350.1.13.0.1.7.2.657369`), which cannot be
/// misspelt into another valid-looking URL the way `http://snomed.info/sctt` can.
fn is_oid_urn(system: &str) -> bool {
    system.strip_prefix("urn:oid:").is_some_and(|oid| {
        !oid.is_empty()
            && oid
                .split('.')
                .all(|arc| !arc.is_empty() && arc.chars().all(|c| c.is_ascii_digit()))
    })
}

/// The name among `names` closest to a misspelt one, when it is close enough to be what was meant.
fn nearest<'n>(wrong: &str, names: &[&'n str]) -> Option<&'n str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
                diagonal = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    names
        .iter()
        .map(|n| (distance(wrong, n), *n))
        .min()
        .filter(|(d, _)| *d <= 3.max(wrong.chars().count() / 4))
        .map(|(_, n)| n)
}

type CodeIndex = HashMap<String, HashMap<String, u32>>;
type ChronicIndex = HashMap<String, HashMap<String, String>>;

/// What the code files build, across `codes.csv` and `icd10cm.csv`.
#[derive(Default)]
struct CodeTables {
    codes: CodeIndex,
    chronic: ChronicIndex,
    sites: CodeIndex,
    /// Rows per [`ValueSet`], indexed like [`ValueSet::ALL`].
    seen: Vec<usize>,
}

impl CodeTables {
    /// Reports each value set the rules need that has no codes.
    fn check_sets(&self, problems: &mut Problems) {
        for (i, value_set) in ValueSet::ALL.iter().enumerate() {
            if self.seen.get(i).copied().unwrap_or(0) == 0 && !value_set.optional() {
                problems.add(
                    CODES_CSV,
                    "",
                    format!(
                        "value set `{}` has no codes; the rules need at least one",
                        value_set.csv_sets().join("` or `")
                    ),
                );
            }
        }
    }
}

/// The region a `site.<region>` set names, when `keywords.toml` has that region.
fn site_region<'s>(set: &'s str, keywords: Option<&Keywords>) -> Option<&'s str> {
    let region = set.strip_prefix("site.")?;
    keywords.is_none_or(|k| k.region.contains_key(region)).then_some(region)
}

/// Reads every row of a code file (`codes.csv` or `icd10cm.csv`), reporting each bad row (by its line in the
/// file).
fn read_codes(file: &str, text: &str, keywords: Option<&Keywords>, tables: &mut CodeTables, problems: &mut Problems) {
    tables.seen.resize(ValueSet::ALL.len(), 0);
    let CodeTables {
        codes,
        chronic,
        sites,
        seen,
    } = tables;
    // Flexible: a row may leave out the last column (`note`); one with more columns than the header is reported.
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            problems.add(file, "line 1", e.to_string());
            return;
        }
    };
    let mut columns = Vec::new();
    for name in ["set", "system", "code", "display", "source"] {
        match headers.iter().position(|h| h.trim() == name) {
            Some(i) => columns.push(i),
            None => problems.add(
                file,
                "line 1",
                format!("no `{name}` column; the header must be set,system,code,display,source,note"),
            ),
        }
    }
    let &[set_col, system_col, code_col, display_col, source_col] = columns.as_slice() else {
        return;
    };
    let known_sets = known_set_names();
    // (set, system, code) → the line that first listed it.
    let mut first_line: HashMap<(String, String, String), u64> = HashMap::new();
    for (index, record) in reader.records().enumerate() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(index as u64 + 2, |p| p.line());
                problems.add(file, format!("line {line}"), e.to_string());
                continue;
            }
        };
        let line = record.position().map_or(index as u64 + 2, |p| p.line());
        let at = format!("line {line}");
        if record.len() > headers.len() {
            problems.add(
                file,
                &at,
                format!(
                    "{} columns, but the header has {} ({}): put a display or source that holds a comma in double \
                     quotes (\"Lumbago with sciatica, left side\")",
                    record.len(),
                    headers.len(),
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            );
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let (set, raw_system, raw_code) = (field(set_col), field(system_col), field(code_col));
        let missing: Vec<&str> = [
            ("set", set),
            ("system", raw_system),
            ("code", raw_code),
            ("source", field(source_col)),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            problems.add(
                file,
                &at,
                format!(
                    "{} must not be empty (every row needs a set, system, code and source)",
                    missing.join(", ")
                ),
            );
            continue;
        }
        let mut row_ok = true;
        let site = site_region(set, keywords);
        if !known_sets.contains(&set) && site.is_none() {
            let hint = match nearest(set, &known_sets) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("the sets are: {}", known_sets.join(", ")),
            };
            problems.add(
                file,
                format!("{at}, set"),
                format!("unknown value set `{set}`, so this code could never match: {hint}"),
            );
            row_ok = false;
        }
        let system = canonical_system(raw_system);
        if !KNOWN_SYSTEMS.contains(&system) && !is_oid_urn(system) {
            let hint = match nearest(raw_system, KNOWN_SYSTEMS) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!(
                    "write one of {}, or a local code system as its OID (`urn:oid:1.2.3…`)",
                    KNOWN_SYSTEMS.join(", ")
                ),
            };
            problems.add(
                file,
                format!("{at}, system"),
                format!("`{raw_system}` is not a known code system URI: {hint}"),
            );
            row_ok = false;
        }
        let code = canonical_code(system, raw_code).into_owned();
        let key = (set.to_string(), system.to_string(), code.clone());
        if let Some(first) = first_line.get(&key) {
            problems.add(
                file,
                &at,
                format!("duplicate row: `{set}` already lists {raw_system} {raw_code} on line {first}; delete one"),
            );
            continue;
        }
        first_line.insert(key, line);
        if !row_ok {
            continue;
        }
        let mut bits = 0;
        for (i, value_set) in ValueSet::ALL.iter().enumerate() {
            if value_set.csv_sets().contains(&set) {
                bits |= value_set.bit();
                seen[i] += 1;
            }
        }
        let display = field(display_col);
        if display.to_lowercase().contains("chronic") && set.starts_with("cond.") {
            chronic
                .entry(system.to_string())
                .or_default()
                .insert(code.clone(), display.into());
        }
        let mut region_bits = 0;
        if let Some(keywords) = keywords {
            if let Some(bit) = site.and_then(|region| region_bit(&keywords.region, region)) {
                region_bits |= 1 << bit;
            }
            // A hand-listed condition code places its condition where its own display says.
            if file == CODES_CSV && (set.starts_with("cond.") || set.starts_with("exclude.")) {
                let display = display.to_lowercase();
                for (name, phrases) in &keywords.region {
                    if phrases.matches(&display)
                        && let Some(bit) = region_bit(&keywords.region, name)
                    {
                        region_bits |= 1 << bit;
                    }
                }
            }
        }
        if region_bits != 0 {
            *sites
                .entry(system.to_string())
                .or_default()
                .entry(code.clone())
                .or_default() |= region_bits;
        }
        *codes.entry(system.to_string()).or_default().entry(code).or_default() |= bits;
    }
}

fn read_keywords(text: &str, problems: &mut Problems) -> Option<Keywords> {
    let mut keywords: Keywords = match toml::from_str(text) {
        Ok(keywords) => keywords,
        Err(e) => {
            problems.toml(KEYWORDS_TOML, text, &e);
            return None;
        }
    };
    let before = problems.found.len();
    for required in ["low_back", "neck"] {
        if !keywords.region.contains_key(required) {
            problems.add(KEYWORDS_TOML, format!("[region.{required}]"), "is required");
        }
    }
    if keywords.region.len() > 32 {
        problems.add(
            KEYWORDS_TOML,
            "[region]",
            format!("{} regions; at most 32", keywords.region.len()),
        );
    }
    for set in keywords.sets_mut() {
        let mut empty = false;
        for list in set.lists_mut() {
            for keyword in list.iter_mut() {
                // Leading spaces are kept out; a trailing space ("pm ") is meaningful.
                *keyword = keyword.trim_start().to_lowercase();
                empty |= keyword.trim().is_empty();
            }
        }
        if empty {
            problems.add(KEYWORDS_TOML, "", "an empty phrase (\"\"): remove it");
        } else if let Err(e) = set.compile() {
            problems.add(KEYWORDS_TOML, "", e);
        }
    }
    (problems.found.len() == before).then_some(keywords)
}

/// `{{name}}` placeholders in card text.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Var(String),
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            parts.push(Part::Text(rest[..start].to_string()));
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or("unclosed `{{`")?;
            let name = after[..end].trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                return Err(format!("bad placeholder `{{{{{name}}}}}`"));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[end + 2..];
        }
        parts.push(Part::Text(rest.to_string()));
        Ok(Template { parts })
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills the placeholders; names were checked at load, so `value` is asked only for known names.
    pub fn render(&self, value: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => out.push_str(&value(name)),
            }
        }
        out
    }
}

/// Placeholders a card's summary may use, and the longest value each can take (see `render`).
/// The indication gets at least its length here and more when the rest of the summary leaves room.
pub const SUMMARY_VARS: &[(&str, usize)] = &[("indication", 40), ("missing", 56)];
/// The data-unavailable card's placeholder for the data that could not be checked: in its summary, their names
/// (its longest value is every name, computed from the card's own labels); in its detail, a list of them with
/// what each would have been read for.
pub const UNAVAILABLE_VAR: &str = "unavailable";
/// Placeholders a card's detail may use.
pub const DETAIL_VARS: &[&str] = &[
    "indication",
    "conditions",
    "care_found",
    "care_not_counted",
    "care_missing",
    "missing",
    "first_line",
    "duration",
    "notes",
    "alternatives",
];

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    /// The CDS Hooks name.
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::Info => "info",
            Indicator::Warning => "warning",
            Indicator::Critical => "critical",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardFile {
    indicator: Indicator,
    summary: String,
    detail: String,
    #[serde(default)]
    suggestions: Vec<SuggestionTemplate>,
    /// Override reasons offered on this card besides the service's (e.g. "already done" where care is missing).
    #[serde(default)]
    extra_override_reasons: Vec<CodingText>,
    /// The data-unavailable card's names for each kind of data; that card must have it, no other may.
    unavailable: Option<DataLabels>,
}

/// One suggestion of a card: remove the order, create resources from `cards/resources/`, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestionTemplate {
    pub label: String,
    #[serde(default)]
    pub recommended: bool,
    #[serde(default)]
    pub remove_order: bool,
    #[serde(default)]
    pub create: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CardTemplate {
    pub indicator: Indicator,
    pub summary: Template,
    pub detail: Template,
    pub suggestions: Vec<SuggestionTemplate>,
    pub extra_override_reasons: Vec<CodingText>,
    /// How the data-unavailable card names each kind of data (that card only).
    pub unavailable: Option<DataLabels>,
}

/// One kind of data as the data-unavailable card names it: `name` in the summary's list, `checks` (what the
/// rules read it for) beside it in the detail's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLabel {
    pub name: String,
    pub checks: String,
}

/// `[unavailable.*]` in `cards/cards/data-unavailable.toml`: the words for each kind of data live with the
/// card's other words, where reviewers read them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLabels {
    pub conditions: DataLabel,
    pub medication_statements: DataLabel,
    pub medication_requests: DataLabel,
    pub procedures: DataLabel,
}

impl DataLabels {
    pub fn label(&self, kind: DataKind) -> &DataLabel {
        match kind {
            DataKind::Conditions => &self.conditions,
            DataKind::MedicationStatements => &self.medication_statements,
            DataKind::MedicationRequests => &self.medication_requests,
            DataKind::Procedures => &self.procedures,
        }
    }

    /// The kinds' names as one phrase: "problem list", "problem list and procedures", "a, b and c".
    pub fn names(&self, kinds: &[DataKind]) -> String {
        let names: Vec<&str> = kinds.iter().map(|k| self.label(*k).name.as_str()).collect();
        match names.as_slice() {
            [] => String::new(),
            [one] => one.to_string(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }
}

/// A FHIR Coding in content files.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CodingText {
    pub system: String,
    pub code: String,
    pub display: String,
}

/// One CDS service as discovery describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceText {
    pub id: String,
    pub hook: String,
    pub title: String,
    pub description: String,
    pub usage_requirements: String,
}

/// The shared texts and labels used to build details.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phrases {
    pub analgesic: String,
    pub heat_therapy: String,
    pub self_care: String,
    pub heat_region_unknown: String,
    pub analgesic_short: String,
    pub self_care_short: String,
    pub heat_short: String,
    pub care_short: String,
    pub not_counted_heading: String,
    pub reason_not_done: String,
    pub reason_not_addressed: String,
    pub reason_entered_in_error: String,
    pub reason_other_site: String,
    pub reason_not_systemic: String,
    pub reason_future: String,
    pub reason_earlier: String,
    pub reason_undated: String,
    pub first_line: String,
    pub first_line_nsaid_allergy: String,
    pub first_line_low_back: String,
    pub nothing_found: String,
    pub nothing_missing: String,
    pub no_conditions: String,
    pub history_unavailable: String,
    pub conditions_unavailable: String,
    pub skipped_entries: String,
    pub reason_unresolved: String,
    pub from_problem_list: String,
    pub source_footer: String,
    pub unknown_indication: String,
    pub remove_action: String,
    pub create_action: String,
    /// A replacement whose other alternatives are already drafted or done: "Replace dry needling with {names}".
    pub replace_only: String,
    /// The `alternatives` placeholder: what the card's suggested alternatives are, given what is already drafted
    /// or was done in the last six weeks (none, some: `{present}` and `{missing}`, or all of them).
    pub alternatives_none: String,
    pub alternatives_some: String,
    pub alternatives_all: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    policy: Policy,
    source_label: String,
    source_topic: CodingText,
    override_reasons: Vec<CodingText>,
    services: Vec<ServiceText>,
    phrases: Phrases,
}

/// All guidance content, validated.
#[derive(Debug, Clone)]
pub struct Knowledge {
    pub terminology: Terminology,
    pub cards: BTreeMap<CardId, CardTemplate>,
    /// ServiceRequest templates by file stem (`cards/resources/<stem>.json`).
    pub resources: BTreeMap<String, serde_json::Value>,
    pub source_label: String,
    pub source_topic: CodingText,
    pub override_reasons: Vec<CodingText>,
    pub services: Vec<ServiceText>,
    pub phrases: Phrases,
    pub policy: Policy,
}

/// Where the content comes from.
#[derive(Debug, Clone)]
pub enum ContentSource {
    Embedded,
    Directory(PathBuf),
}

impl ContentSource {
    /// The directory its files are named under in messages: the directory given, or `cards` for the content
    /// embedded at build time (which is the project's `cards/` as it was then).
    pub fn root(&self) -> PathBuf {
        match self {
            ContentSource::Embedded => PathBuf::from("cards"),
            ContentSource::Directory(dir) => dir.clone(),
        }
    }

    /// How to name it in a sentence: `/tmp/cards`, or `cards/ (embedded at build time)`.
    pub fn describe(&self) -> String {
        match self {
            ContentSource::Embedded => "cards/ (embedded at build time)".to_string(),
            ContentSource::Directory(dir) => dir.display().to_string(),
        }
    }
}

/// What a clean check looked at, for `check-content`'s one-line summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentCounts {
    pub cards: usize,
    pub services: usize,
    pub resources: usize,
    /// Distinct (system, code) pairs in the value sets.
    pub codes: usize,
    pub value_sets: usize,
    pub phrase_sets: usize,
}

impl Knowledge {
    /// Loads the content compiled into the binary.
    pub fn embedded() -> Result<Knowledge, KnowledgeError> {
        Knowledge::load(&ContentSource::Embedded)
    }

    /// Loads and checks the whole content. Every problem is reported, not only the first: a card whose
    /// summary is too long and a misspelt value-set name come back together, each with its file's path under
    /// [`ContentSource::root`], where in the file, and what to change.
    pub fn load(source: &ContentSource) -> Result<Knowledge, KnowledgeError> {
        let files = match source {
            ContentSource::Embedded => embedded_files(),
            ContentSource::Directory(dir) => directory_files(dir)?,
        };
        let mut problems = Problems {
            root: source.root(),
            found: Vec::new(),
        };
        let file = |name: &str, problems: &mut Problems| {
            let text = files.get(name).map(String::as_str);
            if text.is_none() {
                problems.add(name, "", "file is missing");
            }
            text
        };
        let terminology = Terminology::load(
            file(CODES_CSV, &mut problems),
            files.get(ICD10CM_CSV).map(String::as_str),
            file(KEYWORDS_TOML, &mut problems),
            &mut problems,
        );

        const SERVICE: &str = "service.toml";
        let service = file(SERVICE, &mut problems).and_then(|text| match toml::from_str::<ServiceFile>(text) {
            Ok(service) => Some(service),
            Err(e) => {
                problems.toml(SERVICE, text, &e);
                None
            }
        });
        if let Some(service) = &service {
            check_services(service, &mut problems);
        }

        let mut resources = BTreeMap::new();
        for (name, text) in files.iter().filter(|(n, _)| n.starts_with("resources/")) {
            let Some(stem) = name.strip_prefix("resources/").and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            match check_service_request(text) {
                Ok(value) => {
                    resources.insert(stem.to_string(), value);
                }
                Err(message) => problems.add(name, "", message),
            }
        }

        let mut cards = BTreeMap::new();
        for id in CardId::ALL {
            let name = format!("cards/{}.toml", id.file_stem());
            if let Some(text) = file(&name, &mut problems)
                && let Some(card) = parse_card(id, &name, text, &resources, &mut problems)
            {
                cards.insert(id, card);
            }
        }
        let known: Vec<String> = CardId::ALL
            .iter()
            .map(|id| format!("cards/{}.toml", id.file_stem()))
            .collect();
        for extra in files.keys().filter(|n| n.starts_with("cards/") && !known.contains(n)) {
            problems.add(
                extra,
                "",
                format!(
                    "no rule produces this card (the cards are {}); rename it to one of them or remove it",
                    CardId::ALL.map(CardId::file_stem).join(", ")
                ),
            );
        }

        match (terminology, service) {
            (Some(terminology), Some(service)) if problems.found.is_empty() && cards.len() == CardId::ALL.len() => {
                Ok(Knowledge {
                    terminology,
                    cards,
                    resources,
                    source_label: service.source_label,
                    source_topic: service.source_topic,
                    override_reasons: service.override_reasons,
                    services: service.services,
                    phrases: service.phrases,
                    policy: service.policy,
                })
            }
            _ => Err(KnowledgeError::Invalid {
                problems: problems.found,
            }),
        }
    }

    /// What was loaded, counted.
    pub fn counts(&self) -> ContentCounts {
        let mut keywords = self.terminology.keywords.clone();
        ContentCounts {
            cards: self.cards.len(),
            services: self.services.len(),
            resources: self.resources.len(),
            codes: self.terminology.codes.values().map(HashMap::len).sum(),
            value_sets: known_set_names().len(),
            phrase_sets: keywords.sets_mut().len(),
        }
    }

    pub fn card(&self, id: CardId) -> &CardTemplate {
        // Every CardId was checked to have a template in `load`.
        &self.cards[&id]
    }
}

fn embedded_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    fn walk(dir: &Dir<'static>, files: &mut BTreeMap<String, String>) {
        for file in dir.files() {
            if let (Some(path), Some(text)) = (file.path().to_str(), file.contents_utf8()) {
                files.insert(path.replace('\\', "/"), text.to_string());
            }
        }
        for sub in dir.dirs() {
            walk(sub, files);
        }
    }
    walk(&EMBEDDED, &mut files);
    files
}

fn directory_files(root: &Path) -> Result<BTreeMap<String, String>, KnowledgeError> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let io = |source| KnowledgeError::Io {
            file: dir.display().to_string(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let wanted = [".toml", ".json", ".csv"].iter().any(|ext| relative.ends_with(ext));
            if !wanted {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| KnowledgeError::Io {
                file: path.display().to_string(),
                source,
            })?;
            files.insert(relative, text);
        }
    }
    Ok(files)
}

fn check_services(service: &ServiceFile, problems: &mut Problems) {
    const FILE: &str = "service.toml";
    for hook in ["order-select", "order-sign"] {
        let n = service.services.iter().filter(|s| s.hook == hook).count();
        if n != 1 {
            problems.add(
                FILE,
                "[[services]]",
                format!("exactly one service must handle `{hook}`; {n} do"),
            );
        }
    }
    for s in &service.services {
        let at = format!("[[services]] `{}`", s.id);
        if !matches!(s.hook.as_str(), "order-select" | "order-sign") {
            problems.add(
                FILE,
                &at,
                format!("unsupported hook `{}`: write order-select or order-sign", s.hook),
            );
        }
        let id_ok = !s.id.is_empty() && s.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok || s.id == "feedback" {
            problems.add(
                FILE,
                &at,
                "the id must be a URL-safe name (letters, digits, `-`, `_`) other than `feedback`",
            );
        }
        if s.title.trim().is_empty() || s.description.trim().is_empty() {
            problems.add(FILE, &at, "needs a title and a description");
        }
    }
    let mut ids: Vec<&str> = service.services.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        problems.add(FILE, "[[services]]", "service ids must differ");
    }
    if service.override_reasons.is_empty() {
        problems.add(FILE, "override_reasons", "at least one override reason is needed");
    }
}

/// A suggested resource must be a ServiceRequest that fhir-sdk's R4 model accepts once the service has
/// filled in the subject, as it does when rendering.
fn check_service_request(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.get("resourceType").and_then(|v| v.as_str()) != Some("ServiceRequest") {
        return Err("must be a ServiceRequest".to_string());
    }
    let mut filled = value.clone();
    filled["subject"] = serde_json::json!({"reference": "Patient/example"});
    fhir_check::service_request(filled).map_err(|e| format!("not a valid R4 ServiceRequest: {e}"))?;
    Ok(value)
}

/// CDS Hooks: "summary: one-sentence, <140-character summary message".
pub const SUMMARY_LIMIT: usize = 139;

/// The longest a summary can render: its fixed text plus the longest value of each placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryBudget {
    pub fixed: usize,
    /// Each placeholder, with the most characters it can fill.
    pub placeholders: Vec<(String, usize)>,
}

impl SummaryBudget {
    pub fn longest(&self) -> usize {
        self.fixed + self.placeholders.iter().map(|(_, n)| n).sum::<usize>()
    }

    /// "146 characters at most: 86 fixed + 60 for {{missing}}".
    pub fn explain(&self) -> String {
        let mut out = format!("{} characters at most: {} fixed", self.longest(), self.fixed);
        for (name, n) in &self.placeholders {
            let _ = write!(out, " + {n} for {{{{{name}}}}}");
        }
        out
    }
}

/// The summary's budget; `all_unavailable` is the data-unavailable card's longest list (every kind named).
fn summary_budget(summary: &Template, all_unavailable: &str) -> SummaryBudget {
    let mut budget = SummaryBudget {
        fixed: 0,
        placeholders: Vec::new(),
    };
    for part in &summary.parts {
        match part {
            Part::Text(text) => budget.fixed += text.chars().count(),
            Part::Var(var) if var == UNAVAILABLE_VAR => {
                budget.placeholders.push((var.clone(), all_unavailable.chars().count()))
            }
            Part::Var(var) => {
                let max = SUMMARY_VARS.iter().find(|(v, _)| v == var).map_or(0, |(_, n)| *n);
                budget.placeholders.push((var.clone(), max));
            }
        }
    }
    budget
}

fn parse_card(
    id: CardId,
    name: &str,
    text: &str,
    resources: &BTreeMap<String, serde_json::Value>,
    problems: &mut Problems,
) -> Option<CardTemplate> {
    let file: CardFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            problems.toml(name, text, &e);
            return None;
        }
    };
    let before = problems.found.len();
    let summary = Template::parse(&file.summary)
        .map_err(|e| problems.add(name, "summary", e))
        .ok();
    let detail = Template::parse(&file.detail)
        .map_err(|e| problems.add(name, "detail", e))
        .ok();
    let summary_names = || {
        SUMMARY_VARS
            .iter()
            .map(|(v, _)| format!("{{{{{v}}}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(summary) = &summary {
        for var in summary.vars() {
            let known = SUMMARY_VARS.iter().any(|(v, _)| *v == var) || var == UNAVAILABLE_VAR;
            if !known {
                problems.add(
                    name,
                    "summary",
                    format!("cannot use `{{{{{var}}}}}`; a summary may use {}", summary_names()),
                );
            }
        }
    }
    if let Some(detail) = &detail {
        for var in detail
            .vars()
            .filter(|v| !DETAIL_VARS.contains(v) && *v != UNAVAILABLE_VAR)
        {
            let allowed: Vec<String> = DETAIL_VARS.iter().map(|v| format!("{{{{{v}}}}}")).collect();
            problems.add(
                name,
                "detail",
                format!("cannot use `{{{{{var}}}}}`; a detail may use {}", allowed.join(", ")),
            );
        }
    }
    if let (Some(summary), Some(detail)) = (&summary, &detail) {
        check_unavailable(id, name, &file, summary, detail, problems);
        // The longest list of unavailable data is all of it.
        let all_unavailable = file
            .unavailable
            .as_ref()
            .map(|labels| labels.names(&DataKind::ALL))
            .unwrap_or_default();
        let budget = summary_budget(summary, &all_unavailable);
        if budget.longest() > SUMMARY_LIMIT {
            let over = budget.longest() - SUMMARY_LIMIT;
            let fix = if budget.fixed > over {
                format!("shorten the fixed text by {over}")
            } else {
                "the placeholders alone are too long: remove one".to_string()
            };
            problems.add(
                name,
                "summary",
                format!(
                    "is {}; the limit is {SUMMARY_LIMIT} (CDS Hooks: fewer than 140): {fix}",
                    budget.explain()
                ),
            );
        }
    }
    for (i, s) in file.suggestions.iter().enumerate() {
        let at = format!("suggestions[{}]", i + 1);
        if s.label.trim().is_empty() || (!s.remove_order && s.create.is_empty()) {
            problems.add(
                name,
                &at,
                "a suggestion needs a label and an action (`remove_order = true`, `create = [...]` or both)",
            );
        }
        for missing in s.create.iter().filter(|r| !resources.contains_key(*r)) {
            let known: Vec<&str> = resources.keys().map(String::as_str).collect();
            problems.add(
                name,
                &at,
                format!(
                    "creates unknown resource `{missing}`: no resources/{missing}.json (there are: {})",
                    known.join(", ")
                ),
            );
        }
    }
    let (Some(summary), Some(detail)) = (summary, detail) else {
        return None;
    };
    (problems.found.len() == before).then_some(CardTemplate {
        indicator: file.indicator,
        summary,
        detail,
        suggestions: file.suggestions,
        extra_override_reasons: file.extra_override_reasons,
        unavailable: file.unavailable,
    })
}

/// The data-unavailable card stands in for a 412, so it must say what could not be checked (in its summary and
/// its detail) and must never look like clearance (no `info` indicator). Its placeholder and its labels belong
/// to it alone: on a verdict card they would have nothing to say.
fn check_unavailable(
    id: CardId,
    name: &str,
    file: &CardFile,
    summary: &Template,
    detail: &Template,
    problems: &mut Problems,
) {
    let uses = |t: &Template| t.vars().any(|v| v == UNAVAILABLE_VAR);
    if id != CardId::DataUnavailable {
        if uses(summary) || uses(detail) || file.unavailable.is_some() {
            problems.add(
                name,
                "",
                format!("only the data-unavailable card may use `{{{{{UNAVAILABLE_VAR}}}}}` and [unavailable]"),
            );
        }
        return;
    }
    if !uses(summary) || !uses(detail) {
        problems.add(
            name,
            "",
            format!("summary and detail must both say what could not be checked (`{{{{{UNAVAILABLE_VAR}}}}}`)"),
        );
    }
    if file.indicator == Indicator::Info {
        problems.add(
            name,
            "indicator",
            "must be `warning` or `critical`: this card stands in for a 412",
        );
    }
    let Some(labels) = &file.unavailable else {
        problems.add(name, "[unavailable]", "[unavailable] must name every kind of data");
        return;
    };
    for kind in DataKind::ALL {
        let label = labels.label(kind);
        if label.name.trim().is_empty() || label.checks.trim().is_empty() {
            problems.add(
                name,
                "[unavailable]",
                format!(
                    "[unavailable] needs a name and what it checks for {}",
                    kind.resource_type()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_content_loads() {
        let knowledge = Knowledge::embedded().expect("the embedded cards/ must be valid");
        assert_eq!(knowledge.cards.len(), CardId::ALL.len());
    }

    /// A copy of `cards/` in a temporary directory of its own, to break.
    fn copy_of_cards(tag: &str) -> PathBuf {
        let cards = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/cards"));
        let copy = std::env::temp_dir().join(format!("dn-cds-cards-{tag}-{}", std::process::id()));
        let copy_tree = |from: &Path, to: &Path| {
            for entry in std::fs::read_dir(from).unwrap() {
                let path = entry.unwrap().path();
                let target = to.join(path.file_name().unwrap());
                if path.is_dir() {
                    std::fs::create_dir_all(&target).unwrap();
                } else {
                    std::fs::copy(&path, &target).unwrap();
                }
            }
        };
        for sub in ["", "cards", "resources", "valuesets"] {
            std::fs::create_dir_all(copy.join(sub)).unwrap();
            copy_tree(&cards.join(sub), &copy.join(sub));
        }
        copy
    }

    #[test]
    fn a_content_directory_overrides_and_bad_files_stop_the_start() {
        let cards = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/cards"));
        let from_dir = Knowledge::load(&ContentSource::Directory(cards)).expect("cards/ as a directory");
        assert_eq!(from_dir.cards.len(), CardId::ALL.len());

        let copy = copy_of_cards("broken");
        let card = copy.join("cards/against-headache.toml");
        let broken = [
            (
                "indicator = \"loud\"\nsummary = \"x\"\ndetail = \"y\"\n",
                "cards/against-headache.toml",
            ),
            (
                "indicator = \"info\"\nsummary = \"x {{nope}}\"\ndetail = \"y\"\n",
                "{{nope}}",
            ),
            (
                &format!(
                    "indicator = \"info\"\nsummary = \"{}\"\ndetail = \"y\"\n",
                    "x".repeat(140)
                ),
                "140",
            ),
        ];
        for (text, expected) in broken {
            std::fs::write(&card, text).unwrap();
            let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        std::fs::remove_file(&card).unwrap();
        let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("file is missing"), "{error}");
        std::fs::remove_dir_all(&copy).unwrap();
    }

    /// The data-unavailable card stands in for a 412: it must name what could not be checked, in its summary and
    /// its detail, stay within the summary budget with every kind named, and never be `info`.
    #[test]
    fn the_data_unavailable_card_is_checked_at_load() {
        let knowledge = Knowledge::embedded().unwrap();
        let template = knowledge.card(CardId::DataUnavailable);
        assert_eq!(template.indicator, Indicator::Warning);
        let labels = template.unavailable.as_ref().expect("labels for every kind");
        assert_eq!(
            labels.names(&DataKind::ALL),
            "problem list, medication statements, medication orders and procedures"
        );
        assert_eq!(labels.names(&[DataKind::Procedures]), "procedures");
        assert!(
            knowledge
                .cards
                .iter()
                .all(|(id, t)| (*id == CardId::DataUnavailable) == t.unavailable.is_some())
        );

        let copy = copy_of_cards("unavailable");
        let path = copy.join("cards/data-unavailable.toml");
        let good = std::fs::read_to_string(&path).unwrap();
        let labels_at = good.find("[unavailable.conditions]").unwrap();
        let summary_line = good.lines().find(|l| l.starts_with("summary = ")).unwrap();
        let broken = [
            (
                good.replace("indicator = \"warning\"", "indicator = \"info\""),
                "must be `warning` or `critical`",
            ),
            (
                good.replace(summary_line, "summary = \"Dry needling: some data was not checked\""),
                "must both say what could not be checked",
            ),
            (good[..labels_at].to_string(), "[unavailable] must name every kind"),
            (
                good.replace("[unavailable.procedures]", "[unavailable.other]"),
                "data-unavailable.toml",
            ),
            (
                good.replace("name = \"problem list\"", "name = \" \""),
                "needs a name and what it checks for Condition",
            ),
            (
                good.replace("name = \"procedures\"", &format!("name = \"{}\"", "p".repeat(40))),
                "140",
            ),
        ];
        for (text, expected) in broken {
            std::fs::write(&path, text).unwrap();
            let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        // Its placeholder belongs to it alone.
        std::fs::write(&path, &good).unwrap();
        let headache = copy.join("cards/against-headache.toml");
        std::fs::write(
            &headache,
            "indicator = \"warning\"\nsummary = \"x {{unavailable}}\"\ndetail = \"y\"\n",
        )
        .unwrap();
        let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("only the data-unavailable card"), "{error}");
        std::fs::remove_dir_all(&copy).unwrap();
    }

    #[test]
    fn misspelt_names_find_the_one_meant_and_local_systems_are_oids() {
        let sets = known_set_names();
        assert_eq!(nearest("exclude.headach", &sets), Some("exclude.headache"));
        assert_eq!(nearest("cond.neckpain", &sets), Some("cond.neck_pain"));
        assert_eq!(nearest("allergies", &sets), None);
        assert_eq!(
            nearest("http://snomed.info/sctt", KNOWN_SYSTEMS),
            Some("http://snomed.info/sct")
        );
        assert!(is_oid_urn("urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"));
        assert!(!is_oid_urn("urn:oid:1..2") && !is_oid_urn("urn:oid:") && !is_oid_urn("urn:oid:1.2.x"));
        // The OIDs of standard systems are read as the systems.
        assert!(KNOWN_SYSTEMS.contains(&canonical_system("urn:oid:2.16.840.1.113883.6.90")));
    }

    #[test]
    fn a_summary_budget_is_its_fixed_text_plus_each_placeholder_at_its_longest() {
        let summary = Template::parse("Dry needling for {{indication}}: {{missing}} not yet documented").unwrap();
        let budget = summary_budget(&summary, "");
        assert_eq!(budget.longest(), 38 + 40 + 56);
        assert_eq!(
            budget.explain(),
            "134 characters at most: 38 fixed + 40 for {{indication}} + 56 for {{missing}}"
        );
    }

    #[test]
    fn keywords_match_at_word_starts() {
        let words = vec!["heat".to_string(), "needl".to_string()];
        assert!(has_keyword("moist heat pack", &words));
        assert!(has_keyword("dry needling", &words));
        assert!(has_keyword("(heat) therapy", &words));
        assert!(!has_keyword("wheat allergy", &words));
        assert!(!has_keyword("", &words));
    }

    #[test]
    fn templates_reject_bad_placeholders() {
        assert!(Template::parse("a {{indication}} b").is_ok());
        assert!(Template::parse("a {{indication b").is_err());
        assert!(Template::parse("a {{Bad-Name}}").is_err());
        let t = Template::parse("x {{ a }} y {{b}}").unwrap();
        assert_eq!(t.render(|v| v.to_uppercase()), "x A y B");
    }
}
