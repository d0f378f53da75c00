//! `source-attributes.toml`: the source attributes of each service and each card template, as ONC's HTI-1 rule
//! asks a certified EHR to show them for an evidence-based decision support intervention (45 CFR
//! 170.315(b)(11)(iv)(A)): citations, developer, funding source, release and revision dates, and which
//! demographic and social data the rules use.
//!
//! Why in the content: an EHR can only show what the service publishes, and these facts change with the content
//! (a new card, a new source), so they are reviewed, versioned and checked with it. What nobody has stated is a
//! typed [`Stated::Unknown`] naming who must supply it, never a guess and never free text a test cannot find.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::Problems;
use super::templates::ServiceText;
use crate::assess::vocabulary::CardId;

pub(super) const SOURCE_ATTRIBUTES_TOML: &str = "source-attributes.toml";

/// A value the content states, or says nobody has stated yet and who must.
///
/// Written as a string (`"2026-01-22"`) or as `{ unknown = "why", supplied_by = "who" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stated {
    Known(String),
    Unknown(Unknown),
}

/// What is not known, why, and who must supply it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unknown {
    /// Why it is not known (what the sources say or lack).
    pub unknown: String,
    /// Who must supply it.
    pub supplied_by: String,
}

impl Stated {
    pub fn known(&self) -> Option<&str> {
        match self {
            Stated::Known(value) => Some(value),
            Stated::Unknown(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Stated {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stated, D::Error> {
        struct StatedVisitor;
        impl<'de> Visitor<'de> for StatedVisitor {
            type Value = Stated;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, or `{ unknown = \"why\", supplied_by = \"who must supply it\" }`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Stated, E> {
                Ok(Stated::Known(value.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Stated, A::Error> {
                Unknown::deserialize(de::value::MapAccessDeserializer::new(map)).map(Stated::Unknown)
            }
        }
        deserializer.deserialize_any(StatedVisitor)
    }
}

/// The whole document, checked: every service and card template has an entry.
#[derive(Debug, Clone)]
pub struct SourceAttributes {
    pub developer: Stated,
    pub funding: Stated,
    pub references: Vec<SourceReference>,
    /// By service id, for every service of `service.toml`.
    pub services: BTreeMap<String, Attribution>,
    /// For every card template.
    pub cards: BTreeMap<CardId, Attribution>,
    pub data_elements: Vec<DataElement>,
    pub demographics: Demographics,
}

/// A bibliographic reference: the guideline summary, or one it cites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceReference {
    pub id: String,
    /// What it is to the cards.
    pub role: String,
    pub citation: Stated,
    pub released: Stated,
    pub revised: Stated,
}

/// A service's or a card template's own attributes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribution {
    /// The summary's statements (S1-xx, `../shared/clinical-source/REVIEW-NOTES.md`) the card states.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Ids of [`SourceReference`]s.
    pub references: Vec<String>,
    pub released: Stated,
    pub revised: Stated,
}

/// The FHIR elements of one resource type (or family) the rules read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataElement {
    pub resource: String,
    pub elements: Vec<String>,
    pub purpose: String,
}

/// Whether one HTI-1 demographic or social category is used, and if so which elements and why.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub used: bool,
    #[serde(default)]
    pub elements: Vec<String>,
    #[serde(default)]
    pub purpose: Option<String>,
}

/// The demographic and social data HTI-1 names for evidence-based interventions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demographics {
    pub race: Usage,
    pub ethnicity: Usage,
    pub language: Usage,
    pub sexual_orientation: Usage,
    pub gender_identity: Usage,
    pub sex: Usage,
    pub date_of_birth: Usage,
    pub social_determinants_of_health: Usage,
    pub health_status_assessments: Usage,
}

impl Demographics {
    /// Each category: its key in the file, its name as HTI-1 says it, and its use.
    pub fn categories(&self) -> [(&'static str, &'static str, &Usage); 9] {
        [
            ("race", "Race", &self.race),
            ("ethnicity", "Ethnicity", &self.ethnicity),
            ("language", "Language", &self.language),
            ("sexual_orientation", "Sexual orientation", &self.sexual_orientation),
            ("gender_identity", "Gender identity", &self.gender_identity),
            ("sex", "Sex", &self.sex),
            ("date_of_birth", "Date of birth", &self.date_of_birth),
            (
                "social_determinants_of_health",
                "Social determinants of health",
                &self.social_determinants_of_health,
            ),
            (
                "health_status_assessments",
                "Health status assessments",
                &self.health_status_assessments,
            ),
        ]
    }
}

/// Where an unknown stands in the document, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAt<'a> {
    /// `intervention.funding`, `references.summary-ref-4.citation`, `cards.against-headache.revised`…
    pub path: String,
    pub unknown: &'a Unknown,
}

impl SourceAttributes {
    /// Every unknown in the document, by where it stands.
    pub fn unknowns(&self) -> Vec<UnknownAt<'_>> {
        self.all_stated()
            .into_iter()
            .filter_map(|(path, stated)| match stated {
                Stated::Unknown(unknown) => Some(UnknownAt { path, unknown }),
                Stated::Known(_) => None,
            })
            .collect()
    }

    /// Every stated value, by where it stands.
    fn all_stated(&self) -> Vec<(String, &Stated)> {
        let mut all = vec![
            ("intervention.developer".to_string(), &self.developer),
            ("intervention.funding".to_string(), &self.funding),
        ];
        for r in &self.references {
            all.push((format!("references.{}.citation", r.id), &r.citation));
            all.push((format!("references.{}.released", r.id), &r.released));
            all.push((format!("references.{}.revised", r.id), &r.revised));
        }
        for (id, a) in &self.services {
            all.push((format!("services.{id}.released"), &a.released));
            all.push((format!("services.{id}.revised"), &a.revised));
        }
        for (id, a) in &self.cards {
            all.push((format!("cards.{}.released", id.file_stem()), &a.released));
            all.push((format!("cards.{}.revised", id.file_stem()), &a.revised));
        }
        all
    }

    pub fn reference(&self, id: &str) -> Option<&SourceReference> {
        self.references.iter().find(|r| r.id == id)
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributesFile {
    intervention: Intervention,
    references: Vec<SourceReference>,
    services: BTreeMap<String, Attribution>,
    cards: BTreeMap<String, Attribution>,
    data_elements: Vec<DataElement>,
    demographics: Demographics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Intervention {
    developer: Stated,
    funding: Stated,
}

/// Reads and checks `source-attributes.toml` against the services and card templates; `None` when it has a
/// problem (each added to `problems`).
pub(super) fn load(text: &str, services: Option<&[ServiceText]>, problems: &mut Problems) -> Option<SourceAttributes> {
    const FILE: &str = SOURCE_ATTRIBUTES_TOML;
    let file = match toml::from_str::<AttributesFile>(text) {
        Ok(file) => file,
        Err(e) => {
            problems.toml(FILE, text, &e);
            return None;
        }
    };
    let before = problems.found.len();
    check_stated(
        FILE,
        "intervention.developer",
        &file.intervention.developer,
        false,
        problems,
    );
    check_stated(
        FILE,
        "intervention.funding",
        &file.intervention.funding,
        false,
        problems,
    );

    let mut ids: Vec<&str> = Vec::new();
    for r in &file.references {
        let at = format!("references `{}`", r.id);
        if r.id.trim().is_empty() || r.role.trim().is_empty() {
            problems.add(FILE, &at, "a reference needs an id and a role");
        }
        if ids.contains(&r.id.as_str()) {
            problems.add(FILE, &at, "reference ids must differ");
        }
        ids.push(&r.id);
        check_stated(FILE, &format!("{at} citation"), &r.citation, false, problems);
        check_stated(FILE, &format!("{at} released"), &r.released, true, problems);
        check_stated(FILE, &format!("{at} revised"), &r.revised, true, problems);
    }

    let check_attribution = |at: &str, a: &Attribution, problems: &mut Problems| {
        if a.references.is_empty() {
            problems.add(
                FILE,
                at,
                "name at least one of the [[references]] (`references = [\"...\"]`)",
            );
        }
        for missing in a.references.iter().filter(|r| !ids.contains(&r.as_str())) {
            problems.add(
                FILE,
                at,
                format!(
                    "names reference `{missing}`, which [[references]] does not have (there are: {})",
                    ids.join(", ")
                ),
            );
        }
        for s in a.statements.iter().filter(|s| !is_statement_id(s)) {
            problems.add(FILE, at, format!("`{s}` is not a statement id (S1-04, S2-01…)"));
        }
        check_stated(FILE, &format!("{at} released"), &a.released, true, problems);
        check_stated(FILE, &format!("{at} revised"), &a.revised, true, problems);
    };

    if let Some(services) = services {
        for s in services {
            if !file.services.contains_key(&s.id) {
                problems.add(
                    FILE,
                    format!("[services.{}]", s.id),
                    "every service of service.toml needs its source attributes: this one has none",
                );
            }
        }
        for id in file.services.keys().filter(|id| !services.iter().any(|s| &s.id == *id)) {
            problems.add(
                FILE,
                format!("[services.{id}]"),
                "service.toml has no service of this id; rename it to one of them or remove it",
            );
        }
    }
    for (id, a) in &file.services {
        check_attribution(&format!("[services.{id}]"), a, problems);
    }

    let mut cards = BTreeMap::new();
    for id in CardId::ALL {
        match file.cards.get(id.file_stem()) {
            Some(a) => {
                check_attribution(&format!("[cards.{}]", id.file_stem()), a, problems);
                cards.insert(id, a.clone());
            }
            None => problems.add(
                FILE,
                format!("[cards.{}]", id.file_stem()),
                "every card template needs its source attributes: this one has none",
            ),
        }
    }
    for stem in file
        .cards
        .keys()
        .filter(|s| !CardId::ALL.iter().any(|id| id.file_stem() == s.as_str()))
    {
        problems.add(
            FILE,
            format!("[cards.{stem}]"),
            format!(
                "no card template has this name (they are {}); rename it to one of them or remove it",
                CardId::ALL.map(CardId::file_stem).join(", ")
            ),
        );
    }

    check_data(&file, problems);

    (problems.found.len() == before).then_some(SourceAttributes {
        developer: file.intervention.developer,
        funding: file.intervention.funding,
        references: file.references,
        services: file.services,
        cards,
        data_elements: file.data_elements,
        demographics: file.demographics,
    })
}

/// The data the rules read, and the demographic categories: used ones say what and why, unused ones nothing.
fn check_data(file: &AttributesFile, problems: &mut Problems) {
    const FILE: &str = SOURCE_ATTRIBUTES_TOML;
    if file.data_elements.is_empty() {
        problems.add(FILE, "[[data_elements]]", "list the FHIR elements the rules read");
    }
    for (i, d) in file.data_elements.iter().enumerate() {
        if d.resource.trim().is_empty() || d.elements.is_empty() || d.purpose.trim().is_empty() {
            problems.add(
                FILE,
                format!("data_elements[{}]", i + 1),
                "needs a resource, its elements and a purpose",
            );
        }
    }
    for (key, _, usage) in file.demographics.categories() {
        let at = format!("demographics.{key}");
        match usage.used {
            true if usage.elements.is_empty() || usage.purpose.as_deref().is_none_or(|p| p.trim().is_empty()) => {
                problems.add(
                    FILE,
                    &at,
                    "a category that is used needs the elements read and a purpose",
                );
            }
            false if !usage.elements.is_empty() || usage.purpose.is_some() => {
                problems.add(
                    FILE,
                    &at,
                    "a category that is not used names no elements and no purpose",
                );
            }
            _ => {}
        }
    }
}

/// A known value must say something; a date must be one; an unknown must say why and who supplies it.
fn check_stated(file: &str, at: &str, stated: &Stated, date: bool, problems: &mut Problems) {
    match stated {
        Stated::Known(value) if value.trim().is_empty() => {
            problems.add(
                file,
                at,
                "is empty: write the value, or `{ unknown = \"why\", supplied_by = \"who\" }`",
            );
        }
        Stated::Known(value) if date && !is_date(value) => problems.add(
            file,
            at,
            format!("`{value}` is not a date: write YYYY, YYYY-MM or YYYY-MM-DD (e.g. 2026-01-22)"),
        ),
        Stated::Known(_) => {}
        Stated::Unknown(u) if u.unknown.trim().is_empty() || u.supplied_by.trim().is_empty() => {
            problems.add(
                file,
                at,
                "an unknown needs `unknown` (why) and `supplied_by` (who must supply it)",
            );
        }
        Stated::Unknown(_) => {}
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real day.
pub(super) fn is_date(text: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = text.split('-').collect();
    match parts.as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2) && (1..=12).contains(&m.parse::<u8>().unwrap_or(0)),
        [y, m, d] => {
            digits(y, 4)
                && digits(m, 2)
                && digits(d, 2)
                && time::Month::try_from(m.parse::<u8>().unwrap_or(0))
                    .ok()
                    .and_then(|month| time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok())
                    .is_some()
        }
        _ => false,
    }
}

/// `S1-04`, `S2-01`: a statement of `../shared/clinical-source/REVIEW-NOTES.md`.
fn is_statement_id(text: &str) -> bool {
    let Some((source, number)) = text.strip_prefix('S').and_then(|rest| rest.split_once('-')) else {
        return false;
    };
    !source.is_empty()
        && source.bytes().all(|b| b.is_ascii_digit())
        && number.len() == 2
        && number.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_statement_ids() {
        for good in ["2026", "2026-01", "2026-01-22", "2024-02-29"] {
            assert!(is_date(good), "{good}");
        }
        for bad in [
            "",
            "26",
            "2026-1",
            "2026-13",
            "2026-02-30",
            "2025-02-29",
            "22 January 2026",
            "2026-01-22T00",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_statement_id("S1-04") && is_statement_id("S2-09"));
        assert!(!is_statement_id("S1-4") && !is_statement_id("1-04") && !is_statement_id("S-04"));
    }
}
