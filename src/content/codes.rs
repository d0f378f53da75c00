//! The value sets' codes: `valuesets/codes.csv` (hand-listed, with a source for every row) and the generated
//! `valuesets/icd10cm.csv`, read into a [`Terminology`].
//!
//! Why rows are checked one by one: a misspelt set name or code system does not fail, it silently never
//! matches, and the card it should have changed is wrong for every patient it concerns. So each bad row is
//! reported by its line, with the name that was probably meant, and a value set the rules need that has no
//! codes stops the start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::Problems;
use super::keywords::read_keywords;
use crate::assess::vocabulary::{
    ChronicIndex, CodeIndex, Keywords, Terminology, ValueSet, canonical_code, canonical_system, region_bit,
};

pub(super) const CODES_CSV: &str = "valuesets/codes.csv";
/// Generated from the complete CMS ICD-10-CM release by `cards/tools/classify_icd10cm.py` (coverage:
/// `cards/valuesets/ICD10CM-COVERAGE.md`); same columns as `codes.csv`.
pub const ICD10CM_CSV: &str = "valuesets/icd10cm.csv";

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

/// True for a set no rule reads, kept with its sources for reference.
pub fn reference_set(set: &str) -> bool {
    REFERENCE_SETS.contains(&set)
}

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

/// One code of a value set as its file lists it, for the FHIR export (`crate::export`); the rules read the
/// [`Terminology`] built from the same rows instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCode {
    /// The code system's canonical URL (an HL7 OID written in the file is given as its URL).
    pub system: String,
    /// The code as written (ICD codes with their dot).
    pub code: String,
    pub display: String,
    /// Where the code came from (`source`: a VSAC OID, a release, `local: …`); shared by the rows that say
    /// the same.
    pub source: Arc<str>,
    /// `note`, when the row has one.
    pub note: Option<String>,
}

/// Every value set of the code files by its set name (`cond.low_back_pain`), its codes in the order the files
/// list them (`codes.csv`, then `icd10cm.csv`); a code listed in both files appears twice.
pub type ValueSetListing = BTreeMap<String, Vec<ListedCode>>;

/// Reads `valuesets/keywords.toml`, `valuesets/codes.csv` and the generated `valuesets/icd10cm.csv` (any may
/// be missing: already reported; the ICD-10-CM table is optional in a content directory), adding every
/// problem found to `problems`; `None` when any was found.
pub(super) fn load_terminology(
    csv_text: Option<&str>,
    icd_text: Option<&str>,
    keywords_text: Option<&str>,
    problems: &mut Problems,
) -> Option<(Terminology, ValueSetListing)> {
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
        Some(keywords) if problems.found.len() == before && csv_text.is_some() => Some((
            Terminology::from_parts(tables.codes, tables.chronic, tables.sites, keywords),
            tables.listing,
        )),
        _ => None,
    }
}

/// What the code files build, across `codes.csv` and `icd10cm.csv`.
#[derive(Default)]
struct CodeTables {
    codes: CodeIndex,
    chronic: ChronicIndex,
    sites: CodeIndex,
    /// Rows per [`ValueSet`], indexed like [`ValueSet::ALL`].
    seen: Vec<usize>,
    /// Every good row, by set.
    listing: ValueSetListing,
    /// Each distinct `source` text once.
    sources: HashMap<String, Arc<str>>,
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
#[allow(clippy::too_many_lines)] // one row's columns checked in order, each with its own message for the author
fn read_codes(file: &str, text: &str, keywords: Option<&Keywords>, tables: &mut CodeTables, problems: &mut Problems) {
    tables.seen.resize(ValueSet::ALL.len(), 0);
    let CodeTables {
        codes,
        chronic,
        sites,
        seen,
        listing,
        sources,
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
    let note_col = headers.iter().position(|h| h.trim() == "note");
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
        let source = sources
            .entry(field(source_col).to_string())
            .or_insert_with_key(|s| Arc::from(s.as_str()))
            .clone();
        listing.entry(set.to_string()).or_default().push(ListedCode {
            system: system.to_string(),
            code: raw_code.to_string(),
            display: display.to_string(),
            source,
            note: note_col.map(field).filter(|n| !n.is_empty()).map(str::to_string),
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assess::vocabulary::canonical_system;

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
}
