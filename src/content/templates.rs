//! What the content says: card templates (`cards/cards/*.toml`) with their `{{placeholder}}` texts and
//! suggestions, and `service.toml` (services, override reasons, shared phrases, policy), as the files are
//! written.
//!
//! Why the placeholders and their lengths are declared here: a summary must stay under CDS Hooks' 140
//! characters whatever it is filled with, so each placeholder a summary may use has a longest value, and a
//! card's [`SummaryBudget`] (its fixed text plus each placeholder at its longest) is known before any request.

use std::fmt::Write;

use serde::Deserialize;

use crate::assess::vocabulary::Policy;
use crate::record::DataKind;

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
    pub(super) fn parse(text: &str) -> Result<Template, String> {
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

    pub(super) fn vars(&self) -> impl Iterator<Item = &str> {
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

/// A template's indicator is CDS Hooks vocabulary, in the wire's words.
use crate::wire::{Hook, Indicator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CardFile {
    /// When the card is given, in words (the decision table's row): for reviewers and the FHIR export
    /// (`crate::export`); the rules never read it. Required, but optional here so that a file missing it gets
    /// its own problem beside the others, not a parse error that hides them.
    #[serde(default)]
    pub(super) when: Option<String>,
    pub(super) indicator: Indicator,
    pub(super) summary: String,
    pub(super) detail: String,
    #[serde(default)]
    pub(super) suggestions: Vec<SuggestionTemplate>,
    /// Override reasons offered on this card besides the service's (e.g. "already done" where care is missing).
    #[serde(default)]
    pub(super) extra_override_reasons: Vec<CodingText>,
    /// The data-unavailable card's names for each kind of data; that card must have it, no other may.
    pub(super) unavailable: Option<DataLabels>,
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
    /// When the card is given, in words (`when` in its file): what must hold for it, as the decision table
    /// (docs/decision-table.md) says. Exported as the card's applicability condition; never read by the rules.
    pub when: String,
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
    pub hook: Hook,
    pub title: String,
    pub description: String,
    pub usage_requirements: String,
}

/// `sandbox-companion.toml`: the testing aid for the CDS Hooks sandbox (docs/sandbox.md): its
/// discovery entry, its one card, and the dry-needling order a draft becomes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanionText {
    pub service: ServiceText,
    pub card: CompanionCard,
    pub order: CodingText,
}

/// The companion's card: fixed text, no placeholders (it quotes nothing from the draft).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanionCard {
    pub indicator: Indicator,
    pub summary: String,
    pub detail: String,
    pub source_label: String,
    /// The suggestion's label.
    pub suggestion: String,
    /// The `update` action's description.
    pub action: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceFile {
    /// The content's declared version (see [`super::ContentVersion`]); optional, so that a content directory
    /// written before versions existed still loads.
    #[serde(default)]
    pub(super) content_version: Option<String>,
    pub(super) policy: Policy,
    pub(super) source_label: String,
    pub(super) source_topic: CodingText,
    pub(super) override_reasons: Vec<CodingText>,
    pub(super) services: Vec<ServiceText>,
    pub(super) phrases: Phrases,
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
pub(super) fn summary_budget(summary: &Template, all_unavailable: &str) -> SummaryBudget {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn templates_reject_bad_placeholders() {
        assert!(Template::parse("a {{indication}} b").is_ok());
        assert!(Template::parse("a {{indication b").is_err());
        assert!(Template::parse("a {{Bad-Name}}").is_err());
        let t = Template::parse("x {{ a }} y {{b}}").unwrap();
        assert_eq!(t.render(|v| v.to_uppercase()), "x A y B");
    }
}
