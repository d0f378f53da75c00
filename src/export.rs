//! The logic as FHIR: the content's value sets as R4 `ValueSet`s and its CDS services as CPG-on-FHIR
//! `PlanDefinition`s (`eca-rule`), for the `export --fhir DIR` command and the read-only `/fhir/…` routes.
//!
//! Why: CDS authors and terminology teams review, diff and load the logic in their own tools (a terminology
//! server, a FHIR IG, a spreadsheet of codes), which read FHIR, not `cards/`. Everything here is built from the
//! loaded [`Knowledge`], the content the service answers from, so the export cannot drift from it: the codes of
//! each value set with their display, source and note as `cards/valuesets/` lists them; each service's hook,
//! prefetch templates ([`crate::wire::PREFETCH`], as discovery declares them) and guideline citation; each card's
//! summary, its condition in words (`when` in `cards/cards/<card>.toml`, from the decision table) and its
//! suggestions. Keyword phrases (`valuesets/keywords.toml`) are matched in free text, not codes, so they are not
//! in any `ValueSet` (each description says so). The sandbox companion, a testing aid, is not exported.
//!
//! Canonical URLs are under [`CANONICAL_BASE`]. The JSON is built here and only here; the rules never see it.
//! [`Catalogue`] is the same export as the bytes the routes answer, computed once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::assess::vocabulary::{CardId, ValueSet, canonical_code};
use crate::content::{CardTemplate, Knowledge, ListedCode, ServiceText, reference_set};
use crate::wire::PREFETCH;

/// The canonical base of every exported resource: `…/ValueSet/<id>`, `…/PlanDefinition/<id>`. `example.org` is
/// reserved for examples: a publisher who loads these elsewhere replaces it with their own base.
pub const CANONICAL_BASE: &str = "http://example.org/dry-needling-cds";
/// A concept's `source` column (where the code came from: a VSAC OID, a release, `local: …`), as `valueString`.
pub const SOURCE_EXTENSION: &str = "http://example.org/dry-needling-cds/StructureDefinition/code-source";
/// A concept's `note` column: FHIR's own extension for a comment on a code's use in a value set.
pub const COMMENT_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments";
/// A prefetch template on an input `DataRequirement`: CQF's extension for a FHIR query pattern.
pub const QUERY_PATTERN_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/cqf-fhirQueryPattern";

/// The resource types exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    ValueSet,
    PlanDefinition,
}

impl ResourceType {
    pub const ALL: [ResourceType; 2] = [ResourceType::ValueSet, ResourceType::PlanDefinition];

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::ValueSet => "ValueSet",
            ResourceType::PlanDefinition => "PlanDefinition",
        }
    }
}

/// One exported resource.
#[derive(Debug, Clone)]
pub struct Exported {
    pub kind: ResourceType,
    /// Its logical id (`cond.low-back-pain`, `dry-needling-order-select`).
    pub id: String,
    pub resource: Value,
}

impl Exported {
    /// `ValueSet-cond.low-back-pain.json`: the file `export --fhir` writes it to.
    pub fn file_name(&self) -> String {
        format!("{}-{}.json", self.kind.name(), self.id)
    }

    /// Its canonical URL.
    pub fn url(&self) -> String {
        format!("{CANONICAL_BASE}/{}/{}", self.kind.name(), self.id)
    }
}

/// The content as FHIR: one `ValueSet` per value set of the code files, one `PlanDefinition` per service.
#[derive(Debug, Clone)]
pub struct FhirExport {
    pub resources: Vec<Exported>,
}

impl FhirExport {
    /// Builds every resource; `now` is the expansions' timestamp.
    pub fn build(knowledge: &Knowledge, now: OffsetDateTime) -> FhirExport {
        let timestamp = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut resources: Vec<Exported> = knowledge
            .value_sets
            .iter()
            .map(|(set, codes)| value_set(set, codes, &timestamp))
            .collect();
        resources.extend(knowledge.services.iter().map(|s| plan_definition(knowledge, s)));
        FhirExport { resources }
    }

    /// The resources of one type.
    pub fn of(&self, kind: ResourceType) -> impl Iterator<Item = &Exported> {
        self.resources.iter().filter(move |r| r.kind == kind)
    }

    /// Writes each resource, pretty-printed, to `dir/<Type>-<id>.json`, creating `dir`; the paths written.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::with_capacity(self.resources.len());
        for exported in &self.resources {
            let path = dir.join(exported.file_name());
            let mut text = serde_json::to_string_pretty(&exported.resource).map_err(std::io::Error::other)?;
            text.push('\n');
            std::fs::write(&path, text)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// A set name as a FHIR id: `cond.low_back_pain` → `cond.low-back-pain` (ids allow letters, digits, `-`, `.`).
pub fn value_set_id(set: &str) -> String {
    set.replace('_', "-")
}

/// The set's computable name: `cond.low_back_pain` → `CondLowBackPain`.
fn value_set_name(set: &str) -> String {
    set.split(['.', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A title from the set name's convention (`docs/codes.md`): its prefix says what the codes are.
fn value_set_title(set: &str) -> String {
    let (prefix, rest) = set.split_once('.').unwrap_or(("", set));
    let what = match prefix {
        "order" => "Orders",
        "cond" => "Conditions",
        "exclude" => "Conditions the guideline advises against dry needling for",
        "med" => "Medications",
        "proc" => "Procedures",
        "site" => "Body sites",
        _ => "Codes",
    };
    format!("{what}: {}", rest.replace(['.', '_'], " "))
}

/// What the service does with a set, in words.
fn value_set_use(set: &str) -> String {
    let rules: Vec<String> = ValueSet::ALL
        .iter()
        .filter(|v| v.csv_sets().contains(&set))
        .map(|v| format!("`{v:?}`"))
        .collect();
    if !rules.is_empty() {
        format!(
            "The rules read it as the value set {} (src/assess/vocabulary/mod.rs).",
            rules.join(", ")
        )
    } else if let Some(region) = set.strip_prefix("site.") {
        format!("A code in it places a condition or care in the body region `{region}`.")
    } else if reference_set(set) {
        "No rule reads it: it is kept, with its sources, for reference.".to_string()
    } else {
        String::new()
    }
}

fn value_set(set: &str, listed: &[ListedCode], timestamp: &str) -> Exported {
    // Each code once per system (ICD codes compared without their dot, as the service compares them); a code
    // both files list keeps the first display and every distinct source.
    let mut systems: BTreeMap<&str, Vec<(&ListedCode, Vec<&ListedCode>)>> = BTreeMap::new();
    let mut seen: HashMap<(&str, String), usize> = HashMap::new();
    for row in listed {
        let key = (row.system.as_str(), canonical_code(&row.system, &row.code).into_owned());
        let codes = systems.entry(row.system.as_str()).or_default();
        match seen.get(&key) {
            Some(&at) => codes[at].1.push(row),
            None => {
                seen.insert(key, codes.len());
                codes.push((row, Vec::new()));
            }
        }
    }
    let total: usize = systems.values().map(Vec::len).sum();
    let mut include = Vec::new();
    let mut contains = Vec::new();
    for (system, codes) in &systems {
        let concepts: Vec<Value> = codes
            .iter()
            .map(|(first, more)| {
                let mut extension = Vec::new();
                let mut sources: Vec<&str> = Vec::new();
                let mut notes: Vec<&str> = Vec::new();
                for row in std::iter::once(*first).chain(more.iter().copied()) {
                    if !sources.contains(&&*row.source) {
                        sources.push(&row.source);
                    }
                    if let Some(note) = row.note.as_deref().filter(|n| !notes.contains(n)) {
                        notes.push(note);
                    }
                }
                for source in sources {
                    extension.push(json!({"url": SOURCE_EXTENSION, "valueString": source}));
                }
                for note in notes {
                    extension.push(json!({"url": COMMENT_EXTENSION, "valueString": note}));
                }
                let mut concept = json!({"extension": extension, "code": first.code});
                if !first.display.is_empty() {
                    concept["display"] = first.display.clone().into();
                }
                let mut entry = json!({"system": system, "code": first.code});
                if !first.display.is_empty() {
                    entry["display"] = first.display.clone().into();
                }
                contains.push(entry);
                concept
            })
            .collect();
        include.push(json!({"system": system, "concept": concepts}));
    }
    let id = value_set_id(set);
    let description = format!(
        "The `{set}` value set of the dry-needling CDS content (cards/valuesets/codes.csv and icd10cm.csv): \
         {total} codes. {} Where each code came from (a VSAC value set, a release, a local confirmation) is in \
         its `{SOURCE_EXTENSION}` extension, a note on its use in `valueset-concept-comments`. Text phrases the \
         service also matches in free text (cards/valuesets/keywords.toml) are not codes and are not part of this \
         value set.",
        value_set_use(set)
    );
    let resource = json!({
        "resourceType": "ValueSet",
        "id": id,
        "url": format!("{CANONICAL_BASE}/ValueSet/{id}"),
        "version": env!("CARGO_PKG_VERSION"),
        "name": value_set_name(set),
        "title": value_set_title(set),
        "status": "active",
        "description": description,
        "compose": {"include": include},
        "expansion": {"timestamp": timestamp, "total": total, "contains": contains},
    });
    Exported {
        kind: ResourceType::ValueSet,
        id,
        resource,
    }
}

/// A template as written, its placeholders kept: `… ({{indication}})`.
fn as_written(template: &crate::content::Template) -> String {
    template.render(|name| format!("{{{{{name}}}}}"))
}

/// A suggested resource's name (`cards/resources/<stem>.json`): its code's text or first display.
fn resource_name(knowledge: &Knowledge, stem: &str) -> String {
    let code = knowledge.resources.get(stem).map(|r| &r["code"]);
    code.and_then(|c| c["text"].as_str().or_else(|| c["coding"][0]["display"].as_str()))
        .unwrap_or(stem)
        .to_string()
}

/// One card as a nested action: its summary as written, when it is given (its `when`), its suggestions.
fn card_action(knowledge: &Knowledge, id: CardId, card: &CardTemplate) -> Value {
    let suggestions: Vec<Value> = card
        .suggestions
        .iter()
        .map(|s| {
            let mut steps = Vec::new();
            if s.remove_order {
                steps.push(json!({
                    "title": knowledge.phrases.remove_action,
                    "type": {"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/action-type",
                        "code": "remove",
                    }]},
                }));
            }
            for stem in &s.create {
                steps.push(json!({
                    "title": knowledge.phrases.create_action.replace("{name}", &resource_name(knowledge, stem)),
                    "type": {"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/action-type",
                        "code": "create",
                    }]},
                }));
            }
            let mut suggestion = json!({"title": s.label, "groupingBehavior": "logical-group", "action": steps});
            if s.recommended {
                suggestion["description"] = "The recommended suggestion.".into();
            }
            suggestion
        })
        .collect();
    let mut action = json!({
        "id": id.file_stem(),
        "title": as_written(&card.summary),
        "description": format!(
            "Card `{}` ({}), text in cards/cards/{}.toml.",
            id.file_stem(),
            card.indicator.as_str(),
            id.file_stem()
        ),
        "condition": [{
            "kind": "applicability",
            "expression": {"language": "text/plain", "expression": card.when},
        }],
    });
    if !suggestions.is_empty() {
        action["selectionBehavior"] = "at-most-one".into();
        action["action"] = suggestions.into();
    }
    action
}

/// The data each prefetch template asks for, as an input `DataRequirement` with the template as its query
/// pattern; its element id is the prefetch key.
fn inputs() -> Vec<Value> {
    PREFETCH
        .iter()
        .map(|(key, query)| {
            let kind = query.split(['?', '/']).next().unwrap_or(query);
            json!({
                "id": key,
                "extension": [{"url": QUERY_PATTERN_EXTENSION, "valueString": query}],
                "type": kind,
            })
        })
        .collect()
}

fn plan_definition(knowledge: &Knowledge, service: &ServiceText) -> Exported {
    let orders = ValueSet::DryNeedlingOrder
        .csv_sets()
        .iter()
        .map(|set| format!("{CANONICAL_BASE}/ValueSet/{}", value_set_id(set)))
        .collect::<Vec<_>>()
        .join(", ");
    let which = match service.hook.as_str() {
        "order-select" => "A selected draft order",
        "order-sign" => "A draft order being signed",
        _ => "A draft order",
    };
    let cards: Vec<Value> = CardId::ALL
        .iter()
        .filter_map(|id| knowledge.cards.get(id).map(|card| card_action(knowledge, *id, card)))
        .collect();
    let topic = &knowledge.source_topic;
    let resource = json!({
        "resourceType": "PlanDefinition",
        "id": service.id,
        "url": format!("{CANONICAL_BASE}/PlanDefinition/{}", service.id),
        "version": env!("CARGO_PKG_VERSION"),
        "name": value_set_name(&service.id.replace('-', "_")),
        "title": service.title,
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/plan-definition-type",
            "code": "eca-rule",
            "display": "ECA Rule",
        }]},
        "status": "active",
        "description": service.description,
        "usage": service.usage_requirements,
        "topic": [{"coding": [{"system": topic.system, "code": topic.code, "display": topic.display}]}],
        "relatedArtifact": [{
            "type": "citation",
            "display": "The guideline the cards state facts from",
            "citation": knowledge.source_label,
        }],
        "action": [{
            "title": service.title,
            "description": format!(
                "CDS Hooks service `{}` on `{}`: one card per dry-needling order, the first row of the decision \
                 table that holds (most restrictive first); the data-unavailable card only instead of a 412.",
                service.id, service.hook
            ),
            "trigger": [{"type": "named-event", "name": service.hook}],
            "condition": [{
                "kind": "applicability",
                "expression": {
                    "language": "text/plain",
                    "expression": format!(
                        "{which} is dry needling: coded in {orders}, or a local order named so \
                         (cards/valuesets/keywords.toml)."
                    ),
                },
            }],
            "input": inputs(),
            "selectionBehavior": "at-most-one",
            "action": cards,
        }],
    });
    Exported {
        kind: ResourceType::PlanDefinition,
        id: service.id.clone(),
        resource,
    }
}

/// An object's JSON without its closing brace, to write more members after it.
fn without_brace(object: &str) -> &str {
    object.strip_suffix('}').unwrap_or(object)
}

/// The export as the `/fhir/…` routes answer it: each resource's JSON and each type's searchset Bundle,
/// serialised once. A Bundle shares its entries' bytes (it is a list of chunks), so each resource is held once.
#[derive(Debug, Clone)]
pub struct Catalogue {
    resources: BTreeMap<(ResourceType, String), Bytes>,
    bundles: BTreeMap<ResourceType, Vec<Bytes>>,
}

impl Catalogue {
    pub fn new(export: &FhirExport) -> Catalogue {
        let mut resources = BTreeMap::new();
        let mut bundles = BTreeMap::new();
        for kind in ResourceType::ALL {
            let entries: Vec<&Exported> = export.of(kind).collect();
            let head = json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len()}).to_string();
            let mut chunks = vec![Bytes::from(format!("{},\"entry\":[", without_brace(&head)))];
            for (i, exported) in entries.into_iter().enumerate() {
                let bytes = Bytes::from(serde_json::to_vec(&exported.resource).unwrap_or_default());
                let open = json!({"fullUrl": exported.url(), "search": {"mode": "match"}}).to_string();
                let separator = if i == 0 { "" } else { "," };
                chunks.push(Bytes::from(format!(
                    "{separator}{},\"resource\":",
                    without_brace(&open)
                )));
                chunks.push(bytes.clone());
                chunks.push(Bytes::from_static(b"}"));
                resources.insert((kind, exported.id.clone()), bytes);
            }
            chunks.push(Bytes::from_static(b"]}"));
            bundles.insert(kind, chunks);
        }
        Catalogue { resources, bundles }
    }

    /// The resource's JSON, if there is one of this type with this id.
    pub fn read(&self, kind: ResourceType, id: &str) -> Option<Bytes> {
        self.resources.get(&(kind, id.to_string())).cloned()
    }

    /// The type's searchset Bundle, as chunks to send one after another.
    pub fn search(&self, kind: ResourceType) -> Vec<Bytes> {
        self.bundles.get(&kind).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Coding;

    fn export() -> (Knowledge, FhirExport) {
        let knowledge = Knowledge::embedded().unwrap();
        let export = FhirExport::build(&knowledge, OffsetDateTime::UNIX_EPOCH);
        (knowledge, export)
    }

    #[test]
    fn ids_and_names_are_valid_fhir() {
        assert_eq!(value_set_id("cond.low_back_pain"), "cond.low-back-pain");
        assert_eq!(
            value_set_name("med.nsaid.precise_ingredient_or_alt"),
            "MedNsaidPreciseIngredientOrAlt"
        );
        let (_, export) = export();
        for r in &export.resources {
            assert!(
                r.id.len() <= 64 && r.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                "{}",
                r.id
            );
            let name = r.resource["name"].as_str().unwrap();
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert_eq!(r.resource["url"], r.url());
        }
    }

    /// Every code the service matches is in the export, in the value set its row names, and nothing else is.
    #[test]
    fn every_listed_code_is_exported_once_with_its_source() {
        let (knowledge, export) = export();
        let mut exported = 0;
        for (set, listed) in &knowledge.value_sets {
            let id = value_set_id(set);
            let vs = export
                .of(ResourceType::ValueSet)
                .find(|r| r.id == id)
                .unwrap_or_else(|| panic!("no ValueSet for {set}"));
            let contains = vs.resource["expansion"]["contains"].as_array().unwrap();
            assert_eq!(vs.resource["expansion"]["total"], contains.len());
            exported += contains.len();
            // (system, code as the service compares it) → how often the expansion has it.
            let mut expanded: HashMap<(String, String), usize> = HashMap::new();
            for c in contains {
                let system = c["system"].as_str().unwrap();
                let code = canonical_code(system, c["code"].as_str().unwrap()).into_owned();
                *expanded.entry((system.to_string(), code)).or_default() += 1;
            }
            // (system, code) → the concept's sources.
            let mut sources: HashMap<(String, String), Vec<&str>> = HashMap::new();
            for include in vs.resource["compose"]["include"].as_array().unwrap() {
                let system = include["system"].as_str().unwrap();
                for concept in include["concept"].as_array().unwrap() {
                    let code = canonical_code(system, concept["code"].as_str().unwrap()).into_owned();
                    let found = concept["extension"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|e| e["url"] == SOURCE_EXTENSION)
                        .map(|e| e["valueString"].as_str().unwrap())
                        .collect();
                    sources.insert((system.to_string(), code), found);
                }
            }
            assert_eq!(sources.len(), contains.len(), "{set}: compose and expansion differ");
            for row in listed {
                let key = (row.system.clone(), canonical_code(&row.system, &row.code).into_owned());
                assert_eq!(expanded.get(&key), Some(&1), "{set} {} {}", row.system, row.code);
                assert!(sources[&key].contains(&&*row.source), "{set} {}: source", row.code);
            }
        }
        // Every (system, code) the rules match is in some exported value set.
        assert!(exported >= knowledge.terminology.code_count(), "{exported}");
        let rules_sets: Vec<&Exported> = export.of(ResourceType::ValueSet).collect();
        for set in ValueSet::ALL {
            for name in set.csv_sets() {
                let Some(vs) = rules_sets.iter().find(|r| r.id == value_set_id(name)) else {
                    assert!(set.optional(), "{name} not exported");
                    continue;
                };
                for c in vs.resource["expansion"]["contains"].as_array().unwrap() {
                    let coding = Coding {
                        system: c["system"].as_str().unwrap().to_string(),
                        code: c["code"].as_str().unwrap().to_string(),
                        display: None,
                    };
                    assert!(knowledge.terminology.contains(set, &coding), "{name}: {c}");
                }
            }
        }
    }

    /// Each service is a PlanDefinition with its hook, its prefetch templates, the guideline and one action per
    /// card, whose condition is the card's `when`.
    #[test]
    fn every_service_is_a_plan_definition_with_a_card_per_action() {
        let (knowledge, export) = export();
        assert_eq!(
            export.of(ResourceType::PlanDefinition).count(),
            knowledge.services.len()
        );
        for service in &knowledge.services {
            let pd = &export
                .of(ResourceType::PlanDefinition)
                .find(|r| r.id == service.id)
                .unwrap()
                .resource;
            assert_eq!(pd["type"]["coding"][0]["code"], "eca-rule");
            assert_eq!(pd["relatedArtifact"][0]["citation"], knowledge.source_label.as_str());
            let action = &pd["action"][0];
            assert_eq!(action["trigger"][0]["type"], "named-event");
            assert_eq!(action["trigger"][0]["name"], service.hook.as_str());
            let inputs = action["input"].as_array().unwrap();
            assert_eq!(inputs.len(), PREFETCH.len());
            for (key, query) in PREFETCH {
                let input = inputs.iter().find(|i| i["id"] == key).unwrap();
                assert_eq!(input["extension"][0]["valueString"], query);
                assert!(query.starts_with(input["type"].as_str().unwrap()));
            }
            let cards = action["action"].as_array().unwrap();
            assert_eq!(cards.len(), CardId::ALL.len());
            for id in CardId::ALL {
                let card = cards.iter().find(|c| c["id"] == id.file_stem()).unwrap();
                let condition = &card["condition"][0];
                assert_eq!(condition["kind"], "applicability");
                assert_eq!(condition["expression"]["language"], "text/plain");
                assert_eq!(condition["expression"]["expression"], knowledge.card(id).when.as_str());
            }
        }
    }

    /// Every `Expression.language` of `text/plain` replaced by `text/cql-expression`, counted. fhir-sdk reads the
    /// language as a closed list where R4's binding is extensible, so a condition in words, valid R4, fails its
    /// models for that reason alone; checked with the one code swapped, everything else is checked as exported.
    pub(crate) fn plain_text_swapped(value: &mut Value) -> usize {
        match value {
            Value::Object(map) => {
                let mut swapped = 0;
                if map.contains_key("expression") && map.get("language") == Some(&Value::from("text/plain")) {
                    map.insert("language".to_string(), "text/cql-expression".into());
                    swapped += 1;
                }
                swapped + map.values_mut().map(plain_text_swapped).sum::<usize>()
            }
            Value::Array(items) => items.iter_mut().map(plain_text_swapped).sum(),
            _ => 0,
        }
    }

    #[test]
    fn every_resource_is_one_fhir_sdks_r4_models_accept() {
        let (knowledge, export) = export();
        for r in &export.resources {
            let checked = match r.kind {
                ResourceType::ValueSet => fhir_check::value_set(r.resource.clone()),
                ResourceType::PlanDefinition => {
                    let as_exported = fhir_check::plan_definition(r.resource.clone());
                    assert!(
                        as_exported.as_ref().is_err_and(|e| e.contains("text/plain")),
                        "fhir-sdk now takes text/plain: check the export as it is ({as_exported:?})"
                    );
                    let mut swapped = r.resource.clone();
                    // The service's own condition, and one per card.
                    assert_eq!(plain_text_swapped(&mut swapped), 1 + knowledge.cards.len());
                    fhir_check::plan_definition(swapped)
                }
            };
            assert_eq!(checked, Ok(()), "{}", r.file_name());
        }
    }

    #[test]
    fn the_catalogue_answers_each_resource_and_bundles_them() {
        let (_, export) = export();
        let catalogue = Catalogue::new(&export);
        for kind in ResourceType::ALL {
            let bundle: Vec<u8> = catalogue.search(kind).concat();
            let bundle: Value = serde_json::from_slice(&bundle).unwrap();
            let expected: Vec<&Exported> = export.of(kind).collect();
            assert_eq!(bundle["total"], expected.len());
            assert_eq!(bundle["type"], "searchset");
            for (entry, exported) in bundle["entry"].as_array().unwrap().iter().zip(&expected) {
                assert_eq!(entry["resource"], exported.resource);
                assert_eq!(entry["fullUrl"], exported.url());
                let read: Value = serde_json::from_slice(&catalogue.read(kind, &exported.id).unwrap()).unwrap();
                assert_eq!(read, exported.resource);
            }
            assert!(catalogue.read(kind, "no-such-id").is_none());
        }
    }
}
