//! `valuesets/keywords.toml`: the phrases that find a meaning in text, read, lower-cased and compiled.
//!
//! Why checked at load: a phrase list is matched on every request, so an empty phrase (which would match every
//! text) or a region the rules need that is not there must stop the start, not change a card.

use super::Problems;
use crate::assess::vocabulary::Keywords;

pub(super) const KEYWORDS_TOML: &str = "valuesets/keywords.toml";

/// Regions fit a 32-bit set whose bits 0–2 are fixed (low back, neck, widespread, present or not): 29 others at
/// most besides the fixed ones that are present, so 29 in all keeps every bit in range whatever is named.
const MAX_REGIONS: usize = 29;

pub(super) fn read_keywords(text: &str, problems: &mut Problems) -> Option<Keywords> {
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
    if keywords.region.len() > MAX_REGIONS {
        problems.add(
            KEYWORDS_TOML,
            "[region]",
            format!("{} regions; at most {MAX_REGIONS}", keywords.region.len()),
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
