//! Cards as a clinician reads them, in plain text: for reviewers of the content (`evaluate --format text`).
//!
//! Why: the service's answer is CDS Hooks JSON on one line, where a reviewer who knows the guideline but not
//! FHIR cannot see what the clinician will see. An EHR shows a card's indicator, summary, detail (Markdown,
//! left as written here: it reads as text), source, suggestion buttons and links; this prints those, in that
//! order, and nothing only a machine reads (uuids, the suggested resources' JSON, the template's id is shown
//! last for whoever wants to change its wording).

use std::fmt::Write;

use crate::wire::{Card, SelectionBehavior};

/// Every card of an answer, one after the other; "No cards." for an answer with none.
pub fn cards_text(cards: &[Card]) -> String {
    if cards.is_empty() {
        return "No cards: there is no dry-needling order to assess in this request.\n".to_string();
    }
    let mut out = String::new();
    for (i, card) in cards.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if cards.len() > 1 {
            let _ = writeln!(out, "Card {} of {}", i + 1, cards.len());
        }
        out.push_str(&card_text(card));
    }
    out
}

/// One card: a rule, the indicator and summary, the detail, then source, suggestions, links and the rest.
pub fn card_text(card: &Card) -> String {
    let mut out = String::new();
    let rule = "=".repeat(78);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "[{}] {}", card.indicator.as_str().to_uppercase(), card.summary);
    let _ = writeln!(out, "{rule}");
    if let Some(detail) = &card.detail {
        out.push('\n');
        out.push_str(detail.trim_end());
        out.push_str("\n\n");
    }
    let _ = writeln!(out, "Source: {}", card.source.label);
    if let Some(topic) = &card.source.topic {
        let _ = writeln!(out, "  topic: {}", topic.display);
    }
    if card.suggestions.is_empty() {
        let _ = writeln!(out, "Suggestions: none");
    } else {
        let choose = match card.selection_behavior {
            Some(SelectionBehavior::AtMostOne) => " (the clinician may take at most one)",
            Some(SelectionBehavior::Any) => " (any of them)",
            None => "",
        };
        let _ = writeln!(out, "Suggestions{choose}:");
        for suggestion in &card.suggestions {
            let recommended = if suggestion.is_recommended == Some(true) {
                " (recommended)"
            } else {
                ""
            };
            let _ = writeln!(out, "  [{}]{recommended}", suggestion.label);
            for action in &suggestion.actions {
                let _ = writeln!(out, "    {}: {}", action.kind.as_str(), action.description);
            }
        }
    }
    // The service sends no links: the guideline summary has no public URL that could be verified.
    let _ = writeln!(out, "Links: none");
    if !card.override_reasons.is_empty() {
        let reasons: Vec<&str> = card.override_reasons.iter().map(|r| r.display.as_str()).collect();
        let _ = writeln!(out, "Override reasons: {}", reasons.join("; "));
    }
    let _ = writeln!(out, "Card template: cards/cards/{}.toml", card.extension.card);
    out
}
