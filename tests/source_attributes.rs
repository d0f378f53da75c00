//! The source attributes (ONC HTI-1, docs/source-attributes.md) as an EHR and a person meet them: through the
//! real router, in open mode and with trusted clients (no token needed), complete for every service and card
//! template, with every unknown listed and no demographic datum but the birth date used.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{send, send_with, state};
use dry_needling_cds::assess::vocabulary::CardId;
use dry_needling_cds::auth::Verifier;
use dry_needling_cds::content::Stated;
use dry_needling_cds::http::Access;
use dry_needling_cds::{AppState, Knowledge};
use serde_json::Value;

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn verifying() -> AppState {
    AppState {
        access: Arc::new(Access::Verify(Box::new(Verifier::new(
            Vec::new(),
            "http://127.0.0.1:8080",
            reqwest::Client::new(),
        )))),
        ..state()
    }
}

#[tokio::test]
async fn both_routes_answer_without_a_token_in_every_mode() {
    for (mode, app_state) in [("open", state()), ("trusted clients", verifying())] {
        let json = send_with(app_state.clone(), get("/source-attributes")).await;
        assert_eq!(json.status, StatusCode::OK, "{mode}");
        assert_eq!(json.headers[header::CONTENT_TYPE], "application/json", "{mode}");
        json.json();
        let page = send_with(app_state.clone(), get("/source-attributes.html")).await;
        assert_eq!(page.status, StatusCode::OK, "{mode}");
        assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8", "{mode}");
        assert!(page.headers.contains_key(header::CONTENT_SECURITY_POLICY), "{mode}");
        // Discovery, by contrast, needs a token with trusted clients.
        let discovery = send_with(app_state, get("/cds-services")).await;
        let expected = if mode == "open" {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(discovery.status, expected, "{mode}");
    }
    let post = send(Request::post("/source-attributes").body(Body::empty()).unwrap()).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn discovery_names_both_routes() {
    let discovery = send(get("/cds-services")).await.json();
    for service in discovery["services"].as_array().unwrap() {
        let content = &service["extension"]["dry-needling-cds-content"];
        for key in ["sourceAttributes", "sourceAttributesPage"] {
            let path = content[key].as_str().unwrap();
            assert_eq!(send(get(path)).await.status, StatusCode::OK, "{key}: {path}");
        }
    }
}

#[tokio::test]
async fn every_service_and_card_template_has_its_attributes_and_the_version_is_the_loaded_one() {
    let knowledge = Knowledge::embedded().unwrap();
    let json = send(get("/source-attributes")).await.json();
    assert_eq!(json["contentVersion"], knowledge.version.label.as_str());

    let services: Vec<&str> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = knowledge.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(services, expected);
    let cards: Vec<&str> = json["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["template"].as_str().unwrap())
        .collect();
    let mut templates: Vec<&str> = CardId::ALL.iter().map(|id| id.file_stem()).collect();
    templates.sort_unstable();
    let mut sorted = cards.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, templates);

    let entries = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .chain(json["cards"].as_array().unwrap());
    for entry in entries {
        let attributes = &entry["sourceAttributes"];
        for key in ["developer", "fundingSource", "releaseDate", "revisionDate"] {
            let status = attributes[key]["status"].as_str().unwrap_or_default();
            assert!(["known", "unknown"].contains(&status), "{key} of {entry}");
        }
        let citations = attributes["bibliographicCitations"].as_array().unwrap();
        assert!(
            citations.iter().any(|c| c["reference"] == "guideline-summary"),
            "every intervention cites the guideline summary: {entry}"
        );
        assert!(!attributes["dataElements"].as_array().unwrap().is_empty());
        assert_eq!(attributes["demographics"].as_array().unwrap().len(), 9);
    }

    // The page has a heading and a table per service and per card template.
    let page = String::from_utf8(send(get("/source-attributes.html")).await.bytes).unwrap();
    for id in expected.iter().chain(&cards) {
        assert!(page.contains(&format!("<h3><code>{id}</code>")), "{id}");
        assert!(
            page.contains(&format!("<caption>Source attributes of {id}</caption>")),
            "{id}"
        );
    }
    assert!(page.contains(&knowledge.version.label));
    assert!(page.contains("<th scope=\"row\">Funding source</th>"));
    assert!(page.contains("<th scope=\"col\">Citation</th>"));
    assert!(!page.contains("<script"));
}

/// Every unknown in the file is in the document's list, with who must supply it, and nothing known is listed.
#[tokio::test]
async fn every_unknown_is_listed_with_who_must_supply_it() {
    let knowledge = Knowledge::embedded().unwrap();
    let attributes = &knowledge.source_attributes;
    let unknowns = attributes.unknowns();
    assert!(
        unknowns.iter().any(|u| u.path == "intervention.funding"),
        "nothing states the funding source: {unknowns:?}"
    );
    let mut counted = 0;
    let stated = [&attributes.developer, &attributes.funding]
        .into_iter()
        .chain(
            attributes
                .references
                .iter()
                .flat_map(|r| [&r.citation, &r.released, &r.revised]),
        )
        .chain(attributes.services.values().flat_map(|a| [&a.released, &a.revised]))
        .chain(attributes.cards.values().flat_map(|a| [&a.released, &a.revised]));
    for value in stated {
        if let Stated::Unknown(u) = value {
            counted += 1;
            assert!(
                !u.unknown.trim().is_empty() && !u.supplied_by.trim().is_empty(),
                "{u:?}"
            );
        }
    }
    assert_eq!(unknowns.len(), counted);

    let json = send(get("/source-attributes")).await.json();
    let listed: Vec<&Value> = json["unknown"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), counted);
    for (entry, unknown) in listed.iter().zip(&unknowns) {
        assert_eq!(entry["path"], unknown.path.as_str());
        assert_eq!(entry["suppliedBy"], unknown.unknown.supplied_by.as_str());
    }
    let page = String::from_utf8(send(get("/source-attributes.html")).await.bytes).unwrap();
    for unknown in &unknowns {
        assert!(
            page.contains(&format!("<code>{}</code>", unknown.path)),
            "{}",
            unknown.path
        );
    }
}

/// Of the demographic and social data HTI-1 names, only the birth date is used (to date an onset given as an
/// age), and that is what the rules read: `Patient.birthDate` among the data elements.
#[tokio::test]
async fn no_demographic_datum_but_the_birth_date_is_used() {
    let knowledge = Knowledge::embedded().unwrap();
    let demographics = &knowledge.source_attributes.demographics;
    let used: Vec<&str> = demographics
        .categories()
        .into_iter()
        .filter(|(_, _, usage)| usage.used)
        .map(|(key, _, _)| key)
        .collect();
    assert_eq!(used, ["date_of_birth"]);
    assert_eq!(demographics.date_of_birth.elements, ["Patient.birthDate"]);
    let patient = knowledge
        .source_attributes
        .data_elements
        .iter()
        .find(|d| d.resource == "Patient")
        .expect("the Patient is read");
    assert_eq!(patient.elements, ["birthDate"]);

    let json = send(get("/source-attributes")).await.json();
    for entry in json["services"]
        .as_array()
        .unwrap()
        .iter()
        .chain(json["cards"].as_array().unwrap())
    {
        let used: Vec<&str> = entry["sourceAttributes"]["demographics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["used"] == true)
            .map(|d| d["category"].as_str().unwrap())
            .collect();
        assert_eq!(used, ["date_of_birth"], "{}", entry["id"]);
    }
}
