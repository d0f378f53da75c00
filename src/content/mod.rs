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
//!
//! This module fills in the rules' vocabulary ([`crate::assess::vocabulary`]); it does not define it. Each file
//! knows one kind of content file: `source.rs` where the files come from (embedded or a directory), `codes.rs`
//! the value sets (`valuesets/codes.csv`, `valuesets/icd10cm.csv`), `keywords.rs` the phrases
//! (`valuesets/keywords.toml`), `templates.rs` what cards and `service.toml` say, `attributes.rs` the source
//! attributes (`source-attributes.toml`, ONC HTI-1), and `validation.rs` the checks on services, suggested
//! resources and cards that go beyond their shape.

mod attributes;
mod codes;
mod keywords;
mod source;
mod templates;
mod validation;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use attributes::{
    Attribution, DataElement, Demographics, SourceAttributes, SourceReference, Stated, Unknown, UnknownAt, Usage,
};
pub use codes::{ICD10CM_CSV, KNOWN_SYSTEMS, ListedCode, ValueSetListing, known_set_names, reference_set};
pub use templates::{
    CardTemplate, CodingText, CompanionCard, CompanionText, DETAIL_VARS, DataLabel, DataLabels, Phrases, SUMMARY_LIMIT,
    SUMMARY_VARS, ServiceText, SuggestionTemplate, SummaryBudget, Template, UNAVAILABLE_VAR,
};

use crate::assess::vocabulary::{CardId, Policy, Terminology};
use codes::CODES_CSV;
use keywords::KEYWORDS_TOML;
use templates::ServiceFile;
use validation::{check_companion, check_service_request, check_services, parse_card};

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

/// All guidance content, validated.
#[derive(Debug, Clone)]
pub struct Knowledge {
    pub terminology: Terminology,
    /// The value sets as the code files list them (display, source, note), by set name: what the FHIR export
    /// writes (`crate::export`). The rules read [`Knowledge::terminology`], built from the same rows.
    pub value_sets: ValueSetListing,
    pub cards: BTreeMap<CardId, CardTemplate>,
    /// ServiceRequest templates by file stem (`cards/resources/<stem>.json`).
    pub resources: BTreeMap<String, serde_json::Value>,
    pub source_label: String,
    pub source_topic: CodingText,
    pub override_reasons: Vec<CodingText>,
    pub services: Vec<ServiceText>,
    pub phrases: Phrases,
    pub policy: Policy,
    /// The sandbox companion's texts (`sandbox-companion.toml`); whether it is served is the deployment's choice.
    pub companion: CompanionText,
    /// Which content this is: shown in discovery, on every card, in the card log and analytics.
    pub version: ContentVersion,
    /// The source attributes of every service and card template (`source-attributes.toml`, ONC HTI-1), served at
    /// `/source-attributes`.
    pub source_attributes: SourceAttributes,
}

/// The guidance content's version: the version `service.toml` declares (`content_version`), and a digest of
/// every content file (path and text).
///
/// Why both: the declared version is what a CDS team names in change control ("2026.12.0"), but it changes only
/// when someone remembers to bump it; the digest changes with any edit (a card's wording, one code in a value
/// set, a keyword, a policy number), so cards logged before and after an edit are never counted as one
/// version, whatever the declaration says. The label is `declared+digest`, e.g. `2026.12.0+3f9a1c07b2d4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentVersion {
    /// As declared; `unversioned` when `service.toml` declares none.
    pub declared: String,
    /// The first 12 hex digits of the SHA-256 of the content files.
    pub digest: String,
    /// `declared+digest`.
    pub label: String,
}

/// What a declared version may be made of: it goes into metric labels, logs and the store as is.
const VERSION_MAX_CHARS: usize = 32;

impl ContentVersion {
    fn new(declared: Option<&str>, files: &BTreeMap<String, String>) -> ContentVersion {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        // Only the kinds of file the content is read from (the same whether embedded or from a directory):
        // notes and tools beside them do not change the answers, so they do not change the version.
        for (path, text) in files.iter().filter(|(path, _)| source::is_content_file(path)) {
            hasher.update((path.len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        let digest: String = hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
        let declared = declared.unwrap_or("unversioned").to_string();
        ContentVersion {
            label: format!("{declared}+{digest}"),
            declared,
            digest,
        }
    }
}

/// A declared version: 1 to 32 letters, digits, `.`, `-` or `_`.
fn check_declared_version(declared: &str, problems: &mut Problems) {
    let ok = !declared.is_empty()
        && declared.chars().count() <= VERSION_MAX_CHARS
        && declared
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        problems.add(
            "service.toml",
            "content_version",
            format!(
                "`{declared}` is not a version: write 1 to {VERSION_MAX_CHARS} letters, digits, `.`, `-` or `_` \
                 (e.g. 2026.12.0)"
            ),
        );
    }
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
            ContentSource::Embedded => source::embedded_files(),
            ContentSource::Directory(dir) => source::directory_files(dir)?,
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
        let terminology = codes::load_terminology(
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
            if let Some(declared) = &service.content_version {
                check_declared_version(declared, &mut problems);
            }
        }

        const COMPANION: &str = "sandbox-companion.toml";
        let companion = file(COMPANION, &mut problems).and_then(|text| match toml::from_str::<CompanionText>(text) {
            Ok(companion) => Some(companion),
            Err(e) => {
                problems.toml(COMPANION, text, &e);
                None
            }
        });
        if let (Some(companion), Some((terminology, _)), Some(service)) = (&companion, &terminology, &service) {
            check_companion(COMPANION, companion, &service.services, terminology, &mut problems);
        }

        let source_attributes = file(attributes::SOURCE_ATTRIBUTES_TOML, &mut problems)
            .and_then(|text| attributes::load(text, service.as_ref().map(|s| s.services.as_slice()), &mut problems));

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

        match (terminology, service, companion, source_attributes) {
            (Some((terminology, value_sets)), Some(service), Some(companion), Some(source_attributes))
                if problems.found.is_empty() && cards.len() == CardId::ALL.len() =>
            {
                Ok(Knowledge {
                    version: ContentVersion::new(service.content_version.as_deref(), &files),
                    terminology,
                    value_sets,
                    cards,
                    resources,
                    source_label: service.source_label,
                    source_topic: service.source_topic,
                    override_reasons: service.override_reasons,
                    services: service.services,
                    phrases: service.phrases,
                    policy: service.policy,
                    companion,
                    source_attributes,
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
            codes: self.terminology.code_count(),
            value_sets: known_set_names().len(),
            phrase_sets: keywords.sets_mut().len(),
        }
    }

    pub fn card(&self, id: CardId) -> &CardTemplate {
        // Every CardId was checked to have a template in `load`.
        &self.cards[&id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn embedded_content_loads() {
        let knowledge = Knowledge::embedded().expect("the embedded cards/ must be valid");
        assert_eq!(knowledge.cards.len(), CardId::ALL.len());
    }

    /// A copy of `cards/` in a temporary directory of its own, to break.
    pub(super) fn copy_of_cards(tag: &str) -> PathBuf {
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

    /// The sandbox companion's file is checked like the rest: its own id, a summary within the limit, and an
    /// order the rules read as dry needling (or the suggested draft would get no card, or the companion's again).
    #[test]
    fn a_bad_sandbox_companion_file_stops_the_start_with_what_to_change() {
        let copy = copy_of_cards("companion");
        let file = copy.join("sandbox-companion.toml");
        let good = std::fs::read_to_string(&file).unwrap();
        let bad = good
            .replace(
                "id = \"dry-needling-sandbox-companion\"",
                "id = \"dry-needling-order-select\"",
            )
            .replace(
                "summary = \"Try this patient with a dry-needling order\"",
                &format!("summary = \"{}\"", "x".repeat(140)),
            )
            .replace("code = \"20560\"", "code = \"72148\"")
            .replace(
                "display = \"Needle insertion(s) without injection(s); 1 or 2 muscle(s)\"",
                "display = \"MRI\"",
            );
        assert_ne!(bad, good);
        std::fs::write(&file, bad).unwrap();
        let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
            .unwrap_err()
            .to_string();
        for expected in [
            "sandbox-companion.toml: [service] id: a service in service.toml has this id",
            "sandbox-companion.toml: [card] summary: 140 characters",
            "sandbox-companion.toml: [order]: `http://www.ama-assn.org/go/cpt` `72148` is not a dry-needling order",
        ] {
            assert!(error.contains(expected), "{expected}\n{error}");
        }
        std::fs::remove_file(&file).unwrap();
        let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("sandbox-companion.toml: file is missing"), "{error}");
        std::fs::remove_dir_all(&copy).unwrap();
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
}
