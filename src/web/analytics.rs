//! Override analytics as a CDS team reads them: JSON for tools, CSV for spreadsheets, and one HTML page with
//! two charts (what happened to each card template's cards; the weekly trend).
//!
//! Pure functions from [`Analytics`] to text; the HTTP side (access, the query string) is in
//! `crate::http::analytics`. What reaches these functions has no patient data by construction (the store has no
//! column for any); what a caller could choose (override reason codes and systems from feedback) is escaped for
//! HTML, and for CSV kept from starting a spreadsheet formula.
//!
//! The charts are drawn by plotters' SVG backend into strings embedded in the page: no script, no image files,
//! no fonts shipped (the browser draws the labels), so the page works under the workbench's strict Content
//! Security Policy and can be saved as one file.
//!
//! Accessibility (WCAG 2.2 AA, checked with axe-core by `tests/browser.rs`): one `main` landmark; each chart is
//! an image named by its caption, whose numbers are also in a table (the weekly ones in a table of their own);
//! on a narrow screen the tables and charts scroll sideways inside a focusable region instead of widening the
//! page, and the charts keep a width at which their labels stay readable.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::store::{Analytics, TemplateStats, WeekTotal};
use time::Date;

/// Override reasons (system, code) with the text the service's cards offer them under (`cards/service.toml`), so
/// the page shows the reason's words rather than a bare code. Reasons not listed are shown as sent.
pub type ReasonNames = BTreeMap<(String, String), String>;

/// The JSON body of `GET /analytics`: every tenant's cards.
pub fn json(analytics: &Analytics) -> Value {
    json_of(analytics, None)
}

/// The JSON body of `GET /analytics[?tenant=…]`: `tenant` says whose cards were counted (`null`: everyone's).
pub fn json_of(analytics: &Analytics, tenant: Option<&str>) -> Value {
    let stamp = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let rate = |t: &TemplateStats| t.override_rate();
    json!({
        "since": stamp(analytics.since),
        "until": stamp(analytics.until),
        "tenant": tenant,
        "services": per_service(analytics).iter().map(|s| json!({
            "serviceId": s.service_id,
            "shown": s.shown,
            "accepted": s.accepted,
            "overridden": s.overridden,
            "noFeedback": s.no_feedback,
            "overrideRate": s.override_rate(),
        })).collect::<Vec<_>>(),
        "templates": analytics.templates.iter().map(|t| json!({
            "serviceId": t.service_id,
            "card": t.card,
            "shown": t.shown,
            "accepted": t.accepted,
            "overridden": t.overridden,
            "noFeedback": t.no_feedback,
            "overrideRate": rate(t),
            "overrideReasons": t.override_reasons.iter().map(|r| json!({
                "system": r.system,
                "code": r.code,
                "count": r.count,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "weekly": analytics.weekly_totals().iter().map(|w| json!({
            "weekStart": w.week_start.to_string(),
            "shown": w.shown,
            "accepted": w.accepted,
            "overridden": w.overridden,
        })).collect::<Vec<_>>(),
        "weeklyByTemplate": analytics.weekly.iter().map(|w| json!({
            "weekStart": w.week_start.to_string(),
            "serviceId": w.service_id,
            "card": w.card,
            "shown": w.shown,
            "accepted": w.accepted,
            "overridden": w.overridden,
        })).collect::<Vec<_>>(),
        "byContentVersion": analytics.versions.iter().map(|v| json!({
            "serviceId": v.service_id,
            "card": v.card,
            "contentVersion": v.content_version,
            "shown": v.shown,
            "accepted": v.accepted,
            "overridden": v.overridden,
            "noFeedback": v.no_feedback,
            "overrideRate": v.override_rate(),
        })).collect::<Vec<_>>(),
        "unknownCardFeedback": analytics.unknown_card_feedback,
    })
}

/// Which table `GET /analytics.csv` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvTable {
    /// One row per card template (the default).
    Templates,
    /// One row per template and ISO week.
    Weeks,
    /// One row per template and override reason.
    Reasons,
    /// One row per template and content version.
    Versions,
}

/// The CSV export: a header row, then one row per template, week or reason.
pub fn csv(analytics: &Analytics, table: CsvTable) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail; a row that could not be written would only be missing.
    let mut row = |cells: &[String]| {
        let _ = out.write_record(cells.iter().map(|c| spreadsheet_safe(c)));
    };
    let n = |v: u64| v.to_string();
    match table {
        CsvTable::Templates => {
            row(&[
                "service_id",
                "card",
                "shown",
                "accepted",
                "overridden",
                "no_feedback",
                "override_rate",
            ]
            .map(String::from));
            for t in &analytics.templates {
                row(&[
                    t.service_id.clone(),
                    t.card.clone(),
                    n(t.shown),
                    n(t.accepted),
                    n(t.overridden),
                    n(t.no_feedback),
                    t.override_rate().map(|r| format!("{r:.4}")).unwrap_or_default(),
                ]);
            }
        }
        CsvTable::Weeks => {
            row(&["week_start", "service_id", "card", "shown", "accepted", "overridden"].map(String::from));
            for w in &analytics.weekly {
                row(&[
                    w.week_start.to_string(),
                    w.service_id.clone(),
                    w.card.clone(),
                    n(w.shown),
                    n(w.accepted),
                    n(w.overridden),
                ]);
            }
        }
        CsvTable::Versions => {
            row(&[
                "service_id",
                "card",
                "content_version",
                "shown",
                "accepted",
                "overridden",
                "no_feedback",
                "override_rate",
            ]
            .map(String::from));
            for v in &analytics.versions {
                row(&[
                    v.service_id.clone(),
                    v.card.clone(),
                    v.content_version.clone().unwrap_or_default(),
                    n(v.shown),
                    n(v.accepted),
                    n(v.overridden),
                    n(v.no_feedback),
                    v.override_rate().map(|r| format!("{r:.4}")).unwrap_or_default(),
                ]);
            }
        }
        CsvTable::Reasons => {
            row(&["service_id", "card", "reason_system", "reason_code", "count"].map(String::from));
            for t in &analytics.templates {
                for r in &t.override_reasons {
                    row(&[
                        t.service_id.clone(),
                        t.card.clone(),
                        r.system.clone().unwrap_or_default(),
                        r.code.clone().unwrap_or_default(),
                        n(r.count),
                    ]);
                }
            }
        }
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// A cell a spreadsheet could run as a formula gets a `'` before the formula's first character, which
/// spreadsheets show as text. That is checked at the start of the cell **and after every `,`, `;` and tab** inside
/// it (spaces and quotes skipped), because a spreadsheet that splits lines on `;` or tabs makes a new cell there
/// (`x;=HYPERLINK(…)`). Formula characters: `=`, `+`, `-`, `@`, and a tab or carriage return. Reason codes come
/// from the EHR's feedback, so a caller chooses them. Written by hand: the csv crate quotes, but knows nothing of
/// spreadsheets' formulas.
fn spreadsheet_safe(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len() + 2);
    let mut at_start = true;
    for c in cell.chars() {
        if at_start {
            match c {
                ' ' | '"' => {
                    out.push(c);
                    continue;
                }
                '=' | '+' | '-' | '@' | '\t' | '\r' => out.push('\''),
                _ => {}
            }
            at_start = false;
        }
        out.push(c);
        if matches!(c, ',' | ';' | '\t') {
            at_start = true;
        }
    }
    out
}

/// A service's cards over all its templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTotals {
    pub service_id: String,
    pub shown: u64,
    pub accepted: u64,
    pub overridden: u64,
    pub no_feedback: u64,
}

impl ServiceTotals {
    pub fn override_rate(&self) -> Option<f64> {
        crate::store::override_rate(self.accepted, self.overridden)
    }
}

/// The templates' rows summed per service, sorted by service id.
pub fn per_service(analytics: &Analytics) -> Vec<ServiceTotals> {
    let mut services: BTreeMap<&str, ServiceTotals> = BTreeMap::new();
    for t in &analytics.templates {
        let s = services.entry(&t.service_id).or_insert_with(|| ServiceTotals {
            service_id: t.service_id.clone(),
            shown: 0,
            accepted: 0,
            overridden: 0,
            no_feedback: 0,
        });
        s.shown += t.shown;
        s.accepted += t.accepted;
        s.overridden += t.overridden;
        s.no_feedback += t.no_feedback;
    }
    services.into_values().collect()
}

const ACCEPTED: RGBColor = RGBColor(46, 125, 50);
const OVERRIDDEN: RGBColor = RGBColor(198, 40, 40);
const NO_FEEDBACK: RGBColor = RGBColor(176, 176, 176);
const SHOWN: RGBColor = RGBColor(21, 101, 192);

/// Horizontal stacked bars, one per card template: accepted, overridden, no feedback.
pub fn outcomes_chart(analytics: &Analytics) -> String {
    let templates = &analytics.templates;
    // At least three rows' height, so the legend never covers a bar.
    let height = 100 + 36 * templates.len().max(3) as u32;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = templates.iter().map(|t| t.shown).max().unwrap_or(0).max(1);
        // The template alone when one service issued them all; else the service too.
        let one_service = templates.windows(2).all(|w| w[0].service_id == w[1].service_id);
        let names: Vec<String> = templates
            .iter()
            .map(|t| match one_service {
                true => t.card.clone(),
                false => format!("{} ({})", t.card, t.service_id),
            })
            .collect();
        let rows = templates.len().max(3) as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption("What happened to each template's cards", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(if one_service { 330 } else { 540 })
            // Half as much again to the right of the longest bar: room for the legend, which never covers a bar.
            .build_cartesian_2d(0u64..max + max / 2 + 1, (0u32..rows - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("cards")
            .x_label_style(("sans-serif", 18))
            .y_label_style(("sans-serif", 19))
            .axis_desc_style(("sans-serif", 18))
            .y_labels(rows as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        let bar = |i: usize, from: u64, to: u64, color: RGBColor| {
            let mut rect = Rectangle::new(
                [
                    (from, SegmentValue::Exact(i as u32)),
                    (to, SegmentValue::Exact(i as u32 + 1)),
                ],
                color.filled(),
            );
            rect.set_margin(5, 5, 0, 0);
            rect
        };
        type Part = (&'static str, RGBColor, fn(&TemplateStats) -> (u64, u64));
        let parts: [Part; 3] = [
            ("accepted", ACCEPTED, |t| (0, t.accepted)),
            ("overridden", OVERRIDDEN, |t| (t.accepted, t.accepted + t.overridden)),
            ("no feedback", NO_FEEDBACK, |t| (t.accepted + t.overridden, t.shown)),
        ];
        for (label, color, span) in parts {
            chart
                .draw_series(templates.iter().enumerate().map(|(i, t)| {
                    let (from, to) = span(t);
                    bar(i, from, to, color)
                }))?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
        Ok(())
    })();
    finish_svg(svg, drawn)
}

/// Every ISO week of the window, with the cards of all templates (zero for a week without cards, so that a
/// quiet week shows as a dip, not as a gap the line jumps over).
pub fn weeks_in_window(analytics: &Analytics) -> Vec<WeekTotal> {
    let totals: BTreeMap<Date, WeekTotal> = analytics
        .weekly_totals()
        .into_iter()
        .map(|w| (w.week_start, w))
        .collect();
    let first = monday_of(analytics.since.date());
    let last = analytics.until.date().previous_day().unwrap_or(first);
    let mut weeks = Vec::new();
    let mut monday = first;
    while monday <= last {
        weeks.push(totals.get(&monday).cloned().unwrap_or(WeekTotal {
            week_start: monday,
            shown: 0,
            accepted: 0,
            overridden: 0,
        }));
        monday += time::Duration::weeks(1);
    }
    weeks
}

fn monday_of(date: Date) -> Date {
    date - time::Duration::days(i64::from(date.weekday().number_days_from_monday()))
}

/// Cards shown, accepted and overridden per ISO week, over all templates.
pub fn weekly_chart(analytics: &Analytics) -> String {
    let weeks = weeks_in_window(analytics);
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (900, 340)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = weeks.iter().map(|w| w.shown).max().unwrap_or(0).max(1);
        let count = weeks.len().max(1);
        let labels: Vec<String> = weeks.iter().map(|w| w.week_start.to_string()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption("Cards per week (weeks start on Monday, UTC)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d((0..count - 1).into_segmented(), 0u64..max + max / 10 + 1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(count.min(8))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_style(("sans-serif", 18))
            .y_label_style(("sans-serif", 18))
            .y_desc("cards")
            .axis_desc_style(("sans-serif", 18))
            .draw()?;
        type Series = (&'static str, RGBColor, fn(&WeekTotal) -> u64);
        let series: [Series; 3] = [
            ("shown", SHOWN, |w| w.shown),
            ("overridden", OVERRIDDEN, |w| w.overridden),
            ("accepted", ACCEPTED, |w| w.accepted),
        ];
        for (label, color, value) in series {
            let points: Vec<(SegmentValue<usize>, u64)> = weeks
                .iter()
                .enumerate()
                .map(|(i, w)| (SegmentValue::CenterOf(i), value(w)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
        Ok(())
    })();
    finish_svg(svg, drawn)
}

/// A chart in the page: a figure whose SVG is an image named by the caption (`label`), in a region that scrolls
/// sideways on a narrow screen (focusable, so a keyboard can scroll it).
fn figure(svg: &str, id: &str, label: &str) -> String {
    let caption = html_escape::encode_text(label);
    let image = match svg.strip_prefix("<svg") {
        Some(rest) => format!("<svg role=\"img\" aria-labelledby=\"{id}\"{rest}"),
        None => svg.to_string(),
    };
    format!(
        "<figure><div class=\"scroll chart\" role=\"region\" tabindex=\"0\" aria-labelledby=\"{id}\">{image}</div>\
         <figcaption id=\"{id}\">{caption}</figcaption></figure>"
    )
}

/// The chart, or a line saying it could not be drawn (plotters fails only on impossible geometry).
fn finish_svg(svg: String, drawn: Result<(), Box<dyn std::error::Error + '_>>) -> String {
    match drawn {
        Ok(()) => svg,
        Err(error) => format!(
            "<p>The chart could not be drawn: {}</p>",
            html_escape::encode_text(&error.to_string())
        ),
    }
}

/// The analytics page: totals per service, a table and a chart per template, override reasons, the weekly
/// trend, and links to the JSON and CSV of the same window (`query`: the page's own query string).
pub fn page(analytics: &Analytics, reasons: &ReasonNames, query: &str) -> String {
    page_of(analytics, reasons, query, None)
}

/// [`page`] for one tenant's cards (`tenant`, the caller's text, shown escaped), or everyone's.
#[allow(clippy::too_many_lines)] // the page's HTML top to bottom, in the order a reader sees it
pub fn page_of(analytics: &Analytics, reasons: &ReasonNames, query: &str, tenant: Option<&str>) -> String {
    let text = |s: &str| html_escape::encode_text(s).into_owned();
    let attribute = |s: &str| html_escape::encode_double_quoted_attribute(s).into_owned();
    let date = |t: time::OffsetDateTime| t.date().to_string();
    // Rounded half away from zero (62.5 % shows as 63 %), as people round; `{:.0}` would round to even.
    let rate = |r: Option<f64>| {
        r.map(|r| format!("{} %", (r * 100.0).round()))
            .unwrap_or_else(|| "–".to_string())
    };
    let suffix = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let mut html = super::page_start("Dry-needling CDS: override analytics", STYLE);
    let _ = write!(
        html,
        "<h1>Override analytics</h1>{}\
         <p class=\"window\">Cards issued from {} to {} (the end excluded). A card counts once, by the latest \
         feedback on it. The override rate is overridden ÷ (accepted + overridden).</p>\
         <p class=\"links\">Download: <a href=\"{}\">JSON</a> · <a href=\"{}\">CSV by template</a> · \
         <a href=\"{}\">CSV by week</a> · <a href=\"{}\">CSV of override reasons</a> · \
         <a href=\"{}\">CSV by content version</a></p>",
        tenant.map_or_else(String::new, |t| format!(
            "<p class=\"tenant\">Tenant <strong>{}</strong>: only the cards issued for this tenant's calls.</p>",
            text(t)
        )),
        date(analytics.since),
        date(analytics.until),
        attribute(&format!("/analytics{suffix}")),
        attribute(&format!("/analytics.csv{suffix}")),
        attribute(&format!("/analytics.csv?table=weeks{}", query_tail(query))),
        attribute(&format!("/analytics.csv?table=reasons{}", query_tail(query))),
        attribute(&format!("/analytics.csv?table=versions{}", query_tail(query))),
    );
    if analytics.templates.is_empty() {
        html.push_str("<p class=\"empty\">No cards were issued in this window.</p>");
    }
    let mut table = String::from(
        "<table><thead><tr><th>Service</th><th>Shown</th><th>Accepted</th>\
         <th>Overridden</th><th>No feedback</th><th>Override rate</th></tr></thead><tbody>",
    );
    for s in per_service(analytics) {
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&s.service_id),
            s.shown,
            s.accepted,
            s.overridden,
            s.no_feedback,
            rate(s.override_rate())
        );
    }
    table.push_str("</tbody></table>");
    html.push_str("<h2>Per service</h2>");
    html.push_str(&super::scrolling_table("Cards per service", &table));
    html.push_str("<h2>Per card template</h2>");
    html.push_str(&figure(
        &outcomes_chart(analytics),
        "outcomes-chart",
        "What happened to each template's cards: accepted, overridden, no feedback (the numbers are in the \
         table below)",
    ));
    let mut table = String::from(
        "<table><thead><tr><th>Service</th><th>Card template</th><th>Shown</th>\
         <th>Accepted</th><th>Overridden</th><th>No feedback</th><th>Override rate</th>\
         <th>Override reasons</th></tr></thead><tbody>",
    );
    for t in &analytics.templates {
        let reasons_cell: Vec<String> = t
            .override_reasons
            .iter()
            .map(|r| {
                let name = match &r.code {
                    None => "no reason given".to_string(),
                    Some(code) => reasons
                        .get(&(r.system.clone().unwrap_or_default(), code.clone()))
                        .cloned()
                        .unwrap_or_else(|| code.clone()),
                };
                format!("{} ({})", text(&name), r.count)
            })
            .collect();
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&t.service_id),
            text(&t.card),
            t.shown,
            t.accepted,
            t.overridden,
            t.no_feedback,
            rate(t.override_rate()),
            reasons_cell.join("<br>")
        );
    }
    table.push_str("</tbody></table>");
    html.push_str(&super::scrolling_table("Cards per card template", &table));
    html.push_str("<h2>Per content version</h2>");
    html.push_str(
        "<p class=\"note\">Each template's cards by the version of the guidance content that wrote them: after an \
         edit of the cards or value sets, compare a template's override rate before and after it.</p>",
    );
    let mut table = String::from(
        "<table><thead><tr><th>Service</th><th>Card template</th><th>Content version</th><th>Shown</th>\
         <th>Accepted</th><th>Overridden</th><th>No feedback</th><th>Override rate</th></tr></thead><tbody>",
    );
    for v in &analytics.versions {
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&v.service_id),
            text(&v.card),
            v.content_version
                .as_deref()
                .map_or_else(|| "before content versions".to_string(), text),
            v.shown,
            v.accepted,
            v.overridden,
            v.no_feedback,
            rate(v.override_rate())
        );
    }
    table.push_str("</tbody></table>");
    html.push_str(&super::scrolling_table(
        "Cards per card template and content version",
        &table,
    ));
    html.push_str("<h2>Weekly trend</h2>");
    html.push_str(&figure(
        &weekly_chart(analytics),
        "weekly-chart",
        "Cards shown, overridden and accepted per week (the numbers are in the table below)",
    ));
    let mut table = String::from(
        "<table><caption>Cards per week</caption><thead><tr><th>Week starting</th><th>Shown</th>\
         <th>Accepted</th><th>Overridden</th></tr></thead><tbody>",
    );
    for w in weeks_in_window(analytics) {
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.week_start, w.shown, w.accepted, w.overridden
        );
    }
    table.push_str("</tbody></table>");
    html.push_str("<details><summary>The weekly numbers</summary>");
    html.push_str(&super::scrolling_table("Cards per week", &table));
    html.push_str("</details>");
    let unknown = match tenant {
        None => analytics.unknown_card_feedback.to_string(),
        // Such feedback names no card the log has, so no tenant: it is counted for all tenants only.
        Some(_) => "counted only in the analytics of all tenants (it names no card, so no tenant)".to_string(),
    };
    let _ = write!(
        html,
        "<p class=\"note\">Feedback received in this window for cards this service has no record of (issued \
         before the retention period, or never issued by it): {}.</p>\
         <p class=\"note\">No patient data: the store keeps card and suggestion ids, templates, outcomes, \
         override reason codes and times, never a patient, encounter or record.</p></main></body></html>",
        unknown
    );
    html
}

/// `&since=…&until=…` from the page's query, without a `table` (the links set their own).
fn query_tail(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("table="))
        .map(|p| format!("&{p}"))
        .collect()
}

/// Readable from 390 px up: side padding, tables and charts scroll sideways in their own region (the page never
/// does), and below 760 px a chart keeps 760 px of width, so its labels stay at least 12 px high (plotters
/// draws a size-18 font 14.5 px high in a 900 px chart).
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
    main{margin:2rem auto;max-width:960px;padding:0 1rem}\
    table{border-collapse:collapse;margin:1rem 0;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;\
    text-align:right;vertical-align:top}th:first-child,td:first-child,th:nth-child(2),td:nth-child(2),\
    td:last-child,th:last-child{text-align:left}caption{text-align:left;font-weight:600}\
    figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}svg{max-width:100%;height:auto;display:block}\
    .scroll{overflow-x:auto}.scroll:focus-visible{outline:3px solid #1d4ed8;outline-offset:2px}\
    @media (max-width:760px){.chart svg{max-width:none;width:760px}th,td{padding:.3rem .35rem}}\
    .note,.window,.links{color:#555}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ReasonCount;
    use time::macros::datetime;

    fn sample() -> Analytics {
        Analytics {
            since: datetime!(2026-09-07 0:00 UTC),
            until: datetime!(2026-11-30 0:00 UTC),
            templates: vec![TemplateStats {
                service_id: "dry-needling-order-select".into(),
                card: "neck-pain-prefer-manual-therapy".into(),
                shown: 10,
                accepted: 3,
                overridden: 5,
                no_feedback: 2,
                override_reasons: vec![
                    ReasonCount {
                        system: Some("http://example.org".into()),
                        code: Some("=HYPERLINK(\"x\")<script>".into()),
                        count: 4,
                    },
                    ReasonCount {
                        system: None,
                        code: None,
                        count: 1,
                    },
                ],
            }],
            weekly: vec![],
            versions: vec![],
            unknown_card_feedback: 1,
        }
    }

    #[test]
    fn caller_text_is_escaped_in_html_and_kept_from_formulas_in_csv() {
        let analytics = sample();
        let page = page(&analytics, &ReasonNames::new(), "since=2026-09-07");
        assert!(!page.contains("<script>"), "reason codes are escaped");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("no reason given (1)"));
        assert!(page.contains("63 %"), "5 of 8 acted on were overridden: {page}");
        let reasons = csv(&analytics, CsvTable::Reasons);
        assert!(reasons.contains("'=HYPERLINK"), "{reasons}");
        // Under `;`, tab or `,` splitting, every part that could start a formula starts with `'`.
        for (cell, safe) in [
            ("x;=HYPERLINK(\"http://e\")", "x;'=HYPERLINK(\"http://e\")"),
            ("a\t+cmd", "a\t'+cmd"),
            ("b, @SUM(1)", "b, '@SUM(1)"),
            ("-1", "'-1"),
            ("plain; text", "plain; text"),
        ] {
            assert_eq!(spreadsheet_safe(cell), safe, "{cell}");
        }
        let templates = csv(&analytics, CsvTable::Templates);
        assert_eq!(
            templates.lines().nth(1),
            Some("dry-needling-order-select,neck-pain-prefer-manual-therapy,10,3,5,2,0.6250")
        );
    }

    #[test]
    fn charts_are_svg() {
        let analytics = sample();
        for svg in [outcomes_chart(&analytics), weekly_chart(&analytics)] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
            assert!(svg.trim_end().ends_with("</svg>"));
        }
        assert!(outcomes_chart(&analytics).contains("neck-pain-prefer-manual-therapy"));
    }
}
