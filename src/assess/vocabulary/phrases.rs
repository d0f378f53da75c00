//! Phrases that find a meaning in text where codes cannot say it (`cards/valuesets/keywords.toml`): an order or
//! condition sent with text only, a local code's display, a condition's notes, a medication's route.
//!
//! Why apart from the codes: matching text is a small engine of its own, with rules a reviewer must be able to
//! predict (a phrase matches at the start of a word, `$` ends a word, `exclude` vetoes, `exact` is the whole
//! text) and a cost that matters on every request (each set is compiled once into Aho-Corasick automata). The
//! phrase lists themselves are content: [`crate::content`] reads, lower-cases and compiles them at start.

use std::collections::BTreeMap;

use serde::Deserialize;

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

    pub(crate) fn lists_mut(&mut self) -> [&mut Vec<String>; 3] {
        [&mut self.phrases, &mut self.exclude, &mut self.exact]
    }

    pub(crate) fn compile(&mut self) -> Result<(), String> {
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
/// many regions: its bit is known so that `concept::regions` can drop it, since it places nothing), the others
/// in the order of their names.
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
    pub(crate) fn sets_mut(&mut self) -> Vec<&mut PhraseSet> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_match_at_word_starts() {
        let words = vec!["heat".to_string(), "needl".to_string()];
        assert!(has_keyword("moist heat pack", &words));
        assert!(has_keyword("dry needling", &words));
        assert!(has_keyword("(heat) therapy", &words));
        assert!(!has_keyword("wheat allergy", &words));
        assert!(!has_keyword("", &words));
    }
}
