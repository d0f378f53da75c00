//! The source attributes ([`crate::content::SourceAttributes`], ONC HTI-1) as published: one JSON document for
//! EHRs (`GET /source-attributes`) and one HTML page for people (`GET /source-attributes.html`), each resolved
//! per service and per card template, with the content version that answers.
//!
//! Why resolved here and not in the file: the file says each fact once (the references, the data elements),
//! while an EHR shows one intervention at a time and needs all of its attributes together. Both answers are
//! pure functions of the content, computed once at start.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::content::{Attribution, Knowledge, SourceAttributes, Stated};

/// What the document answers to.
pub const REGULATION: &str = "ONC HTI-1, 45 CFR 170.315(b)(11)(iv)(A): source attributes of an evidence-based \
                              decision support intervention";

fn stated(value: &Stated) -> Value {
    match value {
        Stated::Known(value) => json!({ "status": "known", "value": value }),
        Stated::Unknown(u) => json!({ "status": "unknown", "reason": u.unknown, "suppliedBy": u.supplied_by }),
    }
}

/// One intervention's attributes, whole: what HTI-1 lists, in its order.
fn attributes(doc: &SourceAttributes, own: &Attribution) -> Value {
    let citations: Vec<Value> = own
        .references
        .iter()
        .filter_map(|id| doc.reference(id))
        .map(|r| {
            json!({
                "reference": r.id,
                "role": r.role,
                "citation": stated(&r.citation),
                "released": stated(&r.released),
                "revised": stated(&r.revised),
            })
        })
        .collect();
    json!({
        "bibliographicCitations": citations,
        "statements": own.statements,
        "developer": stated(&doc.developer),
        "fundingSource": stated(&doc.funding),
        "releaseDate": stated(&own.released),
        "revisionDate": stated(&own.revised),
        "dataElements": data_elements(doc),
        "demographics": demographics(doc),
    })
}

fn data_elements(doc: &SourceAttributes) -> Value {
    doc.data_elements
        .iter()
        .map(|d| json!({ "resource": d.resource, "elements": d.elements, "purpose": d.purpose }))
        .collect()
}

fn demographics(doc: &SourceAttributes) -> Value {
    doc.demographics
        .categories()
        .into_iter()
        .map(|(key, label, usage)| {
            let mut entry = json!({ "category": key, "label": label, "used": usage.used });
            if usage.used {
                entry["elements"] = json!(usage.elements);
                entry["purpose"] = json!(usage.purpose);
            }
            entry
        })
        .collect()
}

/// The JSON document: the content version, the references, every service and every card template with all
/// its attributes, and every unknown with who must supply it.
pub fn document(knowledge: &Knowledge) -> Value {
    let doc = &knowledge.source_attributes;
    let services: Vec<Value> = knowledge
        .services
        .iter()
        .filter_map(|s| {
            let own = doc.services.get(&s.id)?;
            Some(json!({
                "id": s.id,
                "hook": s.hook,
                "title": s.title,
                "sourceAttributes": attributes(doc, own),
            }))
        })
        .collect();
    let cards: Vec<Value> = doc
        .cards
        .iter()
        .map(|(id, own)| {
            json!({
                "template": id.file_stem(),
                "when": knowledge.cards.get(id).map(|t| t.when.as_str()),
                "sourceAttributes": attributes(doc, own),
            })
        })
        .collect();
    let unknown: Vec<Value> = doc
        .unknowns()
        .into_iter()
        .map(|u| json!({ "path": u.path, "reason": u.unknown.unknown, "suppliedBy": u.unknown.supplied_by }))
        .collect();
    json!({
        "contentVersion": knowledge.version.label,
        "regulation": REGULATION,
        "services": services,
        "cards": cards,
        "unknown": unknown,
    })
}

/// The page: the shared attributes, the references, the data used, then a table per service and per card
/// template; everything from the content escaped.
#[allow(clippy::too_many_lines)] // the page top to bottom, in the order a reader sees it
pub fn page(knowledge: &Knowledge, json_path: &str) -> String {
    let doc = &knowledge.source_attributes;
    let text = |s: &str| html_escape::encode_text(s).into_owned();
    let value = |s: &Stated| match s {
        Stated::Known(v) => text(v),
        Stated::Unknown(u) => format!(
            "<strong class=\"unknown\">Unknown</strong>: {}. To be supplied by {}.",
            text(&u.unknown),
            text(&u.supplied_by)
        ),
    };
    let mut html = super::page_start("Dry-needling CDS: source attributes", STYLE);
    let _ = write!(
        html,
        "<h1>Source attributes</h1>\
         <p>The source attributes of this service's decision support, as {} asks a certified EHR to show them. \
         Content version <code>{}</code>. The same as JSON: <a href=\"{}\">{}</a>.</p>\
         <p class=\"note\">What nobody has stated is marked <strong class=\"unknown\">Unknown</strong>, with who \
         must supply it; nothing is guessed.</p>",
        text(REGULATION),
        text(&knowledge.version.label),
        html_escape::encode_double_quoted_attribute(json_path),
        text(json_path),
    );

    html.push_str("<h2>Every service and card</h2>");
    let mut table = String::from("<table><caption>Shared attributes</caption><tbody>");
    for (name, stated) in [
        ("Developer of the intervention", &doc.developer),
        ("Funding source of the technical implementation", &doc.funding),
    ] {
        let _ = write!(
            table,
            "<tr><th scope=\"row\">{name}</th><td>{}</td></tr>",
            value(stated)
        );
    }
    table.push_str("</tbody></table>");
    html.push_str(&super::scrolling_table("Shared attributes", &table));

    html.push_str("<h2>Bibliographic citations</h2>");
    let mut table = String::from(
        "<table><caption>References</caption><thead><tr><th scope=\"col\">Reference</th>\
         <th scope=\"col\">Citation</th><th scope=\"col\">Released</th><th scope=\"col\">Revised</th></tr></thead><tbody>",
    );
    for r in &doc.references {
        let _ = write!(
            table,
            "<tr><th scope=\"row\" id=\"ref-{}\">{}<br><span class=\"note\">{}</span></th><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape::encode_double_quoted_attribute(&r.id),
            text(&r.id),
            text(&r.role),
            value(&r.citation),
            value(&r.released),
            value(&r.revised),
        );
    }
    table.push_str("</tbody></table>");
    html.push_str(&super::scrolling_table("References", &table));

    html.push_str("<h2>Data the rules read</h2>");
    let mut table = String::from(
        "<table><caption>FHIR elements read</caption><thead><tr><th scope=\"col\">Resource</th>\
         <th scope=\"col\">Elements</th><th scope=\"col\">Why</th></tr></thead><tbody>",
    );
    for d in &doc.data_elements {
        let _ = write!(
            table,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
            text(&d.resource),
            d.elements.iter().map(|e| text(e)).collect::<Vec<_>>().join(", "),
            text(&d.purpose),
        );
    }
    table.push_str("</tbody></table>");
    html.push_str(&super::scrolling_table("FHIR elements read", &table));
    let mut table = String::from(
        "<table><caption>Demographic and social data</caption><thead><tr><th scope=\"col\">Category</th>\
         <th scope=\"col\">Used</th><th scope=\"col\">Elements and why</th></tr></thead><tbody>",
    );
    for (_, label, usage) in doc.demographics.categories() {
        let detail = if usage.used {
            format!(
                "{}: {}",
                usage.elements.iter().map(|e| text(e)).collect::<Vec<_>>().join(", "),
                text(usage.purpose.as_deref().unwrap_or_default())
            )
        } else {
            String::new()
        };
        let _ = write!(
            table,
            "<tr><th scope=\"row\">{label}</th><td>{}</td><td>{detail}</td></tr>",
            if usage.used { "Used" } else { "Not used" },
        );
    }
    table.push_str("</tbody></table>");
    html.push_str(&super::scrolling_table("Demographic and social data", &table));

    let own_table = |caption: &str, own: &Attribution| {
        let mut table = format!("<table><caption>{}</caption><tbody>", text(caption));
        let citations: Vec<String> = own
            .references
            .iter()
            .filter_map(|id| doc.reference(id))
            .map(|r| {
                format!(
                    "<a href=\"#ref-{}\">{}</a>",
                    html_escape::encode_double_quoted_attribute(&r.id),
                    text(&r.id)
                )
            })
            .collect();
        let statements = if own.statements.is_empty() {
            "–".to_string()
        } else {
            own.statements.iter().map(|s| text(s)).collect::<Vec<_>>().join(", ")
        };
        for (name, cell) in [
            ("Bibliographic citations", citations.join(", ")),
            ("Statements of the summary (REVIEW-NOTES ids)", statements),
            ("Developer", value(&doc.developer)),
            ("Funding source", value(&doc.funding)),
            ("Release date", value(&own.released)),
            ("Revision date", value(&own.revised)),
            (
                "Data used",
                "The FHIR elements above; of the demographic data, only the date of birth".to_string(),
            ),
        ] {
            let _ = write!(table, "<tr><th scope=\"row\">{name}</th><td>{cell}</td></tr>");
        }
        table.push_str("</tbody></table>");
        super::scrolling_table(caption, &table)
    };
    html.push_str("<h2>Per service</h2>");
    for s in &knowledge.services {
        if let Some(own) = doc.services.get(&s.id) {
            let _ = write!(html, "<h3><code>{}</code>: {}</h3>", text(&s.id), text(&s.title));
            html.push_str(&own_table(&format!("Source attributes of {}", s.id), own));
        }
    }
    html.push_str("<h2>Per card template</h2>");
    for (id, own) in &doc.cards {
        let _ = write!(html, "<h3><code>{}</code></h3>", text(id.file_stem()));
        if let Some(template) = knowledge.cards.get(id) {
            let _ = write!(html, "<p class=\"note\">{}</p>", text(&template.when));
        }
        html.push_str(&own_table(&format!("Source attributes of {}", id.file_stem()), own));
    }

    html.push_str("<h2>Unknown</h2><ul>");
    for u in doc.unknowns() {
        let _ = write!(
            html,
            "<li><code>{}</code>: {}. To be supplied by {}.</li>",
            text(&u.path),
            text(&u.unknown.unknown),
            text(&u.unknown.supplied_by)
        );
    }
    html.push_str("</ul></main></body></html>");
    html
}

/// The analytics page's look: readable from 390 px up, tables scroll sideways in their own region.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
    main{margin:2rem auto;max-width:960px;padding:0 1rem}\
    table{border-collapse:collapse;margin:1rem 0;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;\
    text-align:left;vertical-align:top}caption{text-align:left;font-weight:600}\
    .scroll{overflow-x:auto}.scroll:focus-visible{outline:3px solid #1d4ed8;outline-offset:2px}\
    .note{color:#555}.unknown{color:#8a1c00}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_the_content_says() {
        let mut knowledge = Knowledge::embedded().unwrap();
        knowledge.source_attributes.funding = Stated::Known("<script>alert(1)</script>".to_string());
        let page = page(&knowledge, "/source-attributes");
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(
            document(&knowledge)["services"][0]["sourceAttributes"]["fundingSource"]["value"]
                .as_str()
                .unwrap()
                .contains("<script>")
        );
    }
}
