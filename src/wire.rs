//! The CDS Hooks 2.0 JSON shapes: the hook request (read leniently), discovery, cards, feedback, and the
//! FHIR OperationOutcome used for error bodies.
//!
//! Why lenient and hand-checked: real clients send 1.x fields, `extension`s, `fhirServer: ""`, Bundles without
//! `type` and missing `selections` (../shared/sandbox/NOTES.md). Each top-level field is taken as raw JSON and
//! checked on its own, so unknown fields are ignored, a wrong shape gets a message naming the field, and no
//! message ever quotes a value (values may be patient data). Draft orders stay raw here and are read in
//! [`crate::fhir`]; so is the prefetch, in the same pass as the request when the draft orders show that it will
//! be needed, and later otherwise (only if it is).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::fhir::{Contents, PrefetchSeed, Unreadable, parse_prefetch_value};
use crate::scopes::Scopes;

/// A request the service cannot read; the message names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn error(message: impl Into<String>) -> RequestError {
    RequestError(message.into())
}

/// Describes a JSON error without quoting the input.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("the body is not valid JSON (line {}, column {})", e.line(), e.column())
        }
        Category::Data | Category::Io => "the body does not have the expected shape".to_string(),
    }
}

/// The request's top-level fields, each kept raw (and checked on its own later), except `prefetch`.
#[derive(Default)]
struct RawRequest<'a> {
    hook: Option<&'a RawValue>,
    hook_instance: Option<&'a RawValue>,
    fhir_server: Option<&'a RawValue>,
    fhir_authorization: Option<&'a RawValue>,
    /// `Err` when `context` is not an object.
    context: Option<Result<RawContext<'a>, ()>>,
    prefetch: Option<Prefetch<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum RequestKey {
    Hook,
    HookInstance,
    FhirServer,
    FhirAuthorization,
    Context,
    Prefetch,
    #[serde(other)]
    Other,
}

/// Reads the request object in one pass. `wants_prefetch` sees the draft orders as soon as `context` is read;
/// when it says yes and `prefetch` comes after `context` (as CDS clients send it), the prefetch is read as FHIR
/// there and then, so a large record is scanned once; otherwise it is kept raw.
struct RequestVisitor<F> {
    wants_prefetch: F,
    /// Entries read per prefetch key; the rest are counted, not built (see [`crate::fhir::parse_contents`]).
    max_prefetch_entries: usize,
}

impl<'de, F: FnMut(&RawValue) -> bool> serde::de::Visitor<'de> for RequestVisitor<F> {
    type Value = RawRequest<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawRequest::default();
        let mut read_prefetch = false;
        while let Some(key) = map.next_key::<RequestKey>()? {
            match key {
                RequestKey::Hook => raw.hook = Some(map.next_value()?),
                RequestKey::HookInstance => raw.hook_instance = Some(map.next_value()?),
                RequestKey::FhirServer => raw.fhir_server = Some(map.next_value()?),
                RequestKey::FhirAuthorization => raw.fhir_authorization = Some(map.next_value()?),
                RequestKey::Context => {
                    let context: &'de RawValue = map.next_value()?;
                    let context = serde_json::from_str::<RawContext>(context.get()).map_err(drop);
                    read_prefetch = context
                        .as_ref()
                        .ok()
                        .and_then(|c| c.draft_orders)
                        .is_some_and(&mut self.wants_prefetch);
                    raw.context = Some(context);
                }
                RequestKey::Prefetch => {
                    raw.prefetch = Some(map.next_value_seed(PrefetchVisitor {
                        read: read_prefetch,
                        max_entries: self.max_prefetch_entries,
                    })?);
                }
                RequestKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// `prefetch`: only the keys discovery declares are kept (any others cannot matter), each read as FHIR or
/// kept raw (see [`RequestVisitor`]). Anything but an object is remembered as such, so the error can name the
/// field.
enum Prefetch<'a> {
    Keys(Vec<(String, PrefetchValue<'a>)>),
    NotAnObject,
}

/// One prefetch key's value.
#[derive(Debug)]
pub enum PrefetchValue<'a> {
    /// Not read yet: read it with [`crate::fhir::parse_prefetch_value`] if it is needed.
    Raw(&'a RawValue),
    /// Already read, in the request's own pass.
    Read(Option<Result<Contents, Unreadable>>),
}

impl PrefetchValue<'_> {
    /// The value read as FHIR: `None` for `null`. A value still raw is read with at most `max_entries` entries
    /// built (one read in the request's pass already was).
    pub fn read(self, max_entries: usize) -> Option<Result<Contents, Unreadable>> {
        match self {
            PrefetchValue::Raw(raw) => parse_prefetch_value(raw.get(), max_entries),
            PrefetchValue::Read(read) => read,
        }
    }
}

struct PrefetchVisitor {
    read: bool,
    max_entries: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for PrefetchVisitor {
    type Value = Prefetch<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PrefetchVisitor {
    type Value = Prefetch<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys: Vec<(String, PrefetchValue<'de>)> = Vec::with_capacity(PREFETCH.len());
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !PREFETCH.iter().any(|(k, _)| *k == key) {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let value = if self.read {
                PrefetchValue::Read(map.next_value_seed(PrefetchSeed {
                    max_entries: self.max_entries,
                })?)
            } else {
                PrefetchValue::Raw(map.next_value()?)
            };
            // A repeated key: the last one wins, as in a JSON object read into a map.
            keys.retain(|(k, _)| *k != key);
            keys.push((key.into_owned(), value));
        }
        Ok(Prefetch::Keys(keys))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Prefetch::NotAnObject)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Prefetch::NotAnObject)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Prefetch::NotAnObject)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Prefetch::NotAnObject)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Prefetch::NotAnObject)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Prefetch::NotAnObject)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Prefetch::NotAnObject)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContext<'a> {
    #[serde(borrow)]
    patient_id: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    encounter_id: Option<&'a RawValue>,
    #[serde(borrow)]
    selections: Option<&'a RawValue>,
    #[serde(borrow)]
    draft_orders: Option<&'a RawValue>,
}

/// `fhirAuthorization` (snake_case fields, unlike the rest of the request).
#[derive(Clone, Deserialize)]
pub struct FhirAuthorization {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// The token's SMART scopes, read once here; `None` when `scope` is absent or blank (unknown scopes are
    /// not a refusal: every search is sent, as before scopes were read).
    #[serde(default, deserialize_with = "scopes")]
    pub scope: Option<Scopes>,
    /// The OAuth client id the EHR knows this service by: may be logged (through [`crate::logsafe`]).
    #[serde(default)]
    pub subject: Option<String>,
    /// The patient the token is restricted to, if it is: must be `context.patientId` (else 400). Never logged.
    #[serde(default)]
    pub patient: Option<String>,
}

impl FhirAuthorization {
    /// Whether this token may search `resource_type` (read and search; see [`crate::scopes`]). Unknown scopes
    /// allow every search: the FHIR server decides, as it did before.
    pub fn may_search(&self, resource_type: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.permits_search(resource_type))
    }
}

fn scopes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Scopes>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.filter(|t| !t.trim().is_empty()).map(|t| Scopes::parse(&t)))
}

/// The same patient id, whether written `id` or `Patient/id`.
fn same_patient(a: &str, b: &str) -> bool {
    let bare = |id: &str| id.strip_prefix("Patient/").unwrap_or(id).to_string();
    bare(a) == bare(b)
}

impl std::fmt::Debug for FhirAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token must never reach a log.
        f.debug_struct("FhirAuthorization")
            .field("access_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A hook call, checked for shape. Borrows the request body.
#[derive(Debug)]
pub struct HookRequest<'a> {
    /// `None` when the request names a hook no service here answers (its text is not kept: error bodies never
    /// echo what the caller sent).
    pub hook: Option<Hook>,
    pub hook_instance: String,
    /// `None` when absent or `""` (the sandbox sends that).
    pub fhir_server: Option<String>,
    pub fhir_authorization: Option<FhirAuthorization>,
    pub context: HookContext<'a>,
    /// `None` when the client sent no `prefetch` at all.
    pub prefetch: Option<Vec<(String, PrefetchValue<'a>)>>,
}

impl HookRequest<'_> {
    /// True when `fhirAuthorization.patient` names another patient than `context.patientId` (`id` and
    /// `Patient/id` are the same): a token issued for someone else. The request contradicts itself, and neither
    /// its prefetch nor a search with that token can be taken to be this patient's. False when either is absent.
    pub fn token_for_another_patient(&self) -> bool {
        let token_patient = self.fhir_authorization.as_ref().and_then(|a| a.patient.as_deref());
        match (token_patient, self.context.patient_id.as_deref()) {
            (Some(token_patient), Some(patient_id)) => !same_patient(token_patient, patient_id),
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
pub struct HookContext<'a> {
    pub patient_id: Option<String>,
    pub user_id: Option<String>,
    pub encounter_id: Option<String>,
    /// `None` when absent (order-sign, or the sandbox's tab re-click).
    pub selections: Option<Vec<String>>,
    /// The raw `draftOrders` Bundle, as sent. (The service reads its orders through `parse_hook_request`'s
    /// callback, the moment the parser meets them.)
    pub draft_orders: Option<&'a RawValue>,
}

fn optional_string(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, RequestError> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| error(format!("`{name}` must be a string"))),
    }
}

fn required_string(raw: Option<&RawValue>, name: &str) -> Result<String, RequestError> {
    match optional_string(raw, name)? {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(error(format!("`{name}` is required"))),
    }
}

/// The 400's message when `fhirAuthorization.patient` is not `context.patientId`.
pub const PATIENT_MISMATCH: &str = "`fhirAuthorization.patient` is not `context.patientId`: the access token was issued \
     for another patient than the one this call is about";

/// Reads a hook request body. `wants_prefetch` is called with the raw `draftOrders` (when there are any) as
/// soon as they are read, and says whether the prefetch will be needed; that decides only when the prefetch is
/// read, never what it reads as. Each prefetch key read has at most `max_prefetch_entries` entries built; the
/// rest are counted as skipped, so that a key over the cap is refused without its entries' memory.
pub fn parse_hook_request(
    body: &[u8],
    max_prefetch_entries: usize,
    wants_prefetch: impl FnMut(&RawValue) -> bool,
) -> Result<HookRequest<'_>, RequestError> {
    let text = std::str::from_utf8(body).map_err(|_| error("the body is not UTF-8 text"))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let raw = serde::Deserializer::deserialize_map(
        &mut deserializer,
        RequestVisitor {
            wants_prefetch,
            max_prefetch_entries,
        },
    )
    .and_then(|raw| deserializer.end().map(|()| raw))
    .map_err(|e| match e.classify() {
        serde_json::error::Category::Data => error("the body must be a JSON object"),
        _ => error(describe_json_error(&e)),
    })?;
    let hook = Hook::parse(&required_string(raw.hook, "hook")?);
    let hook_instance = required_string(raw.hook_instance, "hookInstance")?;
    let fhir_server = optional_string(raw.fhir_server, "fhirServer")?.filter(|s| !s.trim().is_empty());
    let fhir_authorization = match raw.fhir_authorization {
        None => None,
        Some(raw) => Some(serde_json::from_str::<FhirAuthorization>(raw.get()).map_err(|_| {
            error(
                "`fhirAuthorization` must be an object with an `access_token` string (and `scope`, \
                         `subject` and `patient` strings when given)",
            )
        })?),
    };
    // CDS Hooks 2.0: `fhirServer` is required whenever `fhirAuthorization` is given; a token without a server
    // is a broken client, not a request to ignore the token.
    if fhir_authorization.is_some() && fhir_server.is_none() {
        return Err(error("`fhirServer` is required when `fhirAuthorization` is given"));
    }
    let ctx = raw
        .context
        .ok_or_else(|| error("`context` is required"))?
        .map_err(|()| error("`context` must be an object"))?;
    let selections = match ctx.selections {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<Vec<String>>(raw.get())
                .map_err(|_| error("`context.selections` must be an array of strings"))?,
        ),
    };
    let context = HookContext {
        patient_id: optional_string(ctx.patient_id, "context.patientId")?,
        user_id: optional_string(ctx.user_id, "context.userId")?,
        encounter_id: optional_string(ctx.encounter_id, "context.encounterId")?,
        selections,
        draft_orders: ctx.draft_orders.filter(|raw| raw.get() != "null"),
    };
    let prefetch = match raw.prefetch {
        None => None,
        Some(Prefetch::Keys(keys)) => Some(keys),
        Some(Prefetch::NotAnObject) => return Err(error("`prefetch` must be an object")),
    };
    Ok(HookRequest {
        hook,
        hook_instance,
        fhir_server,
        fhir_authorization,
        context,
        prefetch,
    })
}

/// `{"cards": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct CardsResponse {
    pub cards: Vec<Card>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub uuid: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub indicator: Indicator,
    pub source: Source,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<SelectionBehavior>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<WireCoding>,
    /// CDS Hooks 2.0 `extension`: which card template answered, a stable id for integrators, feedback
    /// analytics and tests (the summary's wording may change; this does not).
    pub extension: CardExtension,
}

#[derive(Debug, Clone, Serialize)]
pub struct CardExtension {
    #[serde(rename = "dry-needling-cds-card")]
    pub card: &'static str,
    /// The guidance content's version that wrote the card (`declared+digest`, see
    /// [`crate::content::ContentVersion`]), so that an EHR's own log can tell cards before a content edit from
    /// cards after it.
    #[serde(rename = "dry-needling-cds-content-version")]
    pub content_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<WireCoding>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WireCoding {
    pub system: String,
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub label: String,
    pub uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionType,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

/// The CDS Hooks hooks this service answers: parsed once, from the request and from `cards/service.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    OrderSelect,
    OrderSign,
}

impl Hook {
    pub const ALL: [Hook; 2] = [Hook::OrderSelect, Hook::OrderSign];

    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::OrderSelect => "order-select",
            Hook::OrderSign => "order-sign",
        }
    }

    /// `order-select` or `order-sign`; any other hook is `None`.
    pub fn parse(text: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == text)
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card's urgency (CDS Hooks `indicator`); card templates in `cards/` name it in the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    /// As on the wire (and in the card log and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::Info => "info",
            Indicator::Warning => "warning",
            Indicator::Critical => "critical",
        }
    }
}

/// How many of a card's suggestions the clinician may take (CDS Hooks `selectionBehavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionBehavior {
    AtMostOne,
    Any,
}

/// What a suggestion's action does to the EHR's draft (CDS Hooks action `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Create,
    Update,
    Delete,
}

impl ActionType {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Create => "create",
            ActionType::Update => "update",
            ActionType::Delete => "delete",
        }
    }
}

/// One entry of the discovery document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDescription {
    pub hook: Hook,
    pub title: String,
    pub description: String,
    pub id: String,
    /// Left out when empty (the sandbox companion reads only the draft).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub prefetch: std::collections::BTreeMap<&'static str, &'static str>,
    pub usage_requirements: String,
    /// The guidance content's version (CDS Hooks 3.0 recommends a service `version`; 2.0 clients ignore it).
    pub version: String,
    pub extension: ServiceExtension,
}

/// What a discovery entry adds under `extension`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceExtension {
    #[serde(rename = "dry-needling-cds-content")]
    pub content: ContentDescription,
}

/// The content version's parts, and where its source attributes are published.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentDescription {
    /// `declared+digest`, as on every card.
    pub version: String,
    /// What `cards/service.toml` declares.
    pub declared: String,
    /// The digest of the content files.
    pub digest: String,
    /// The path of the source-attributes document (ONC HTI-1 decision support interventions), relative to
    /// the service's base URL.
    pub source_attributes: String,
    /// The same attributes as a page for people (HTML), relative to the service's base URL.
    pub source_attributes_page: String,
}

/// `{"services": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    pub services: Vec<ServiceDescription>,
}

/// The prefetch templates every service declares, keyed as the record gathering expects: one search per
/// [`crate::record::DataKind`] ([`crate::record::DataKind::key`]), and the Patient ([`crate::service::PATIENT_KEY`]),
/// which is optional. The medication searches `_include` the Medications their entries reference, so that a drug
/// named only by `medicationReference` comes in the same Bundle. Only `{{context.patientId}}` is used, which
/// every order hook provides.
pub const PREFETCH: [(&str, &str); 6] = [
    ("conditions", "Condition?patient={{context.patientId}}"),
    (
        "medicationStatements",
        "MedicationStatement?patient={{context.patientId}}&_include=MedicationStatement:medication",
    ),
    (
        "medicationRequests",
        "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication",
    ),
    ("procedures", "Procedure?patient={{context.patientId}}"),
    ("patient", "Patient/{{context.patientId}}"),
    (
        "allergyIntolerances",
        "AllergyIntolerance?patient={{context.patientId}}",
    ),
];

/// A feedback item's outcome (CDS Hooks 2.0): parsed from the wire's text once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Accepted,
    Overridden,
}

impl Outcome {
    /// As on the wire (and in the store, logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Overridden => "overridden",
        }
    }

    /// `accepted` or `overridden`, as on the wire.
    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "accepted" => Some(Outcome::Accepted),
            "overridden" => Some(Outcome::Overridden),
            _ => None,
        }
    }
}

/// What one feedback entry said, for the log (no patient data: ids and codes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub card: String,
    pub outcome: Outcome,
    pub accepted_suggestions: Vec<String>,
    /// `overrideReason.reason.code` and `.system`.
    pub override_reason: Option<String>,
    pub override_reason_system: Option<String>,
    /// `overrideReason.userComment`: free text that may mention the patient (never logged; stored only when
    /// the deployment asks for it).
    pub user_comment: Option<String>,
    pub outcome_timestamp: String,
    /// `outcomeTimestamp`, parsed.
    pub outcome_at: time::OffsetDateTime,
}

/// Checks a feedback body against CDS Hooks 2.0: `{"feedback": [{card, outcome, acceptedSuggestions,
/// overrideReason, outcomeTimestamp}]}`.
///
/// Read entry by entry as the parser meets them: each entry is held as JSON only while it is checked, so a
/// body costs about its checked entries, not a tree of the whole body (which was about nine times its size:
/// 200 bodies of 1 MiB at once took the process to 1.77 GB). The first bad entry ends the read.
pub fn parse_feedback(body: &[u8]) -> Result<Vec<Feedback>, RequestError> {
    let not_feedback = || error("the body must be an object with a `feedback` array");
    let mut refused = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = serde::Deserializer::deserialize_any(&mut deserializer, FeedbackBody { refused: &mut refused })
        .and_then(|entries| deserializer.end().map(|()| entries));
    let entries = match (read, refused) {
        (_, Some(refused)) => return Err(refused),
        (Ok(Some(entries)), None) => entries,
        (Ok(None), None) => return Err(not_feedback()),
        (Err(e), None) => {
            return Err(match e.classify() {
                serde_json::error::Category::Data => not_feedback(),
                _ => error(describe_json_error(&e)),
            });
        }
    };
    if entries.is_empty() {
        return Err(error("`feedback` must not be empty"));
    }
    Ok(entries)
}

/// The feedback body: an object whose `feedback` array is read by [`FeedbackEntries`]; `None` when it has no
/// such key. A refusal of an entry's content is put in `refused` (and the parse stopped).
struct FeedbackBody<'r> {
    refused: &'r mut Option<RequestError>,
}

impl<'de> serde::de::Visitor<'de> for FeedbackBody<'_> {
    type Value = Option<Vec<Feedback>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with a `feedback` array")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "feedback" {
                // A repeated key: the last one wins, as in a JSON object read into a map.
                entries = Some(map.next_value_seed(FeedbackEntries {
                    refused: &mut *self.refused,
                })?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(entries)
    }
}

/// The `feedback` array, each entry checked as soon as it is read.
struct FeedbackEntries<'r> {
    refused: &'r mut Option<RequestError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for FeedbackEntries<'_> {
    type Value = Vec<Feedback>;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FeedbackEntries<'_> {
    type Value = Vec<Feedback>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a `feedback` array")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<Value>()? {
            match parse_feedback_entry(entries.len(), &entry) {
                Ok(entry) => entries.push(entry),
                Err(refused) => {
                    *self.refused = Some(refused);
                    return Err(serde::de::Error::custom("a feedback entry was refused"));
                }
            }
        }
        Ok(entries)
    }
}

fn parse_feedback_entry(i: usize, entry: &Value) -> Result<Feedback, RequestError> {
    let at = |field: &str| format!("`feedback[{i}].{field}`");
    if !entry.is_object() {
        return Err(error(format!("`feedback[{i}]` must be an object")));
    }
    let card = entry
        .get("card")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error(format!("{} is required (the card's uuid)", at("card"))))?;
    let outcome = entry
        .get("outcome")
        .and_then(Value::as_str)
        .and_then(Outcome::parse)
        .ok_or_else(|| error(format!("{} must be `accepted` or `overridden`", at("outcome"))))?;
    let accepted_suggestions = match entry.get("acceptedSuggestions") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.get("id").and_then(Value::as_str).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| error(format!("each of {} needs an `id` string", at("acceptedSuggestions"))))?,
        Some(_) => {
            return Err(error(format!("{} must be an array", at("acceptedSuggestions"))));
        }
    };
    if outcome == Outcome::Accepted && accepted_suggestions.is_empty() {
        return Err(error(format!(
            "{} is required when the outcome is `accepted`",
            at("acceptedSuggestions")
        )));
    }
    let (override_reason, override_reason_system, user_comment) = match entry.get("overrideReason") {
        None => (None, None, None),
        Some(reason @ Value::Object(_)) => {
            let user_comment = match reason.get("userComment") {
                None => None,
                Some(Value::String(comment)) => Some(comment.clone()),
                Some(_) => return Err(error(format!("{} must be a string", at("overrideReason.userComment")))),
            };
            let (code, system) = match reason.get("reason") {
                None => (None, None),
                Some(coding) => {
                    let code = coding.get("code").and_then(Value::as_str).ok_or_else(|| {
                        error(format!(
                            "{} must be a Coding with a `code`",
                            at("overrideReason.reason")
                        ))
                    })?;
                    let system = match coding.get("system") {
                        None => None,
                        Some(Value::String(system)) => Some(system.clone()),
                        Some(_) => {
                            return Err(error(format!(
                                "{} must be a string",
                                at("overrideReason.reason.system")
                            )));
                        }
                    };
                    (Some(code.to_string()), system)
                }
            };
            (code, system, user_comment)
        }
        Some(_) => return Err(error(format!("{} must be an object", at("overrideReason")))),
    };
    let (outcome_timestamp, outcome_at) = entry
        .get("outcomeTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| {
            Some((
                t,
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?,
            ))
        })
        .ok_or_else(|| {
            error(format!(
                "{} is required, as an ISO 8601 instant with a time zone",
                at("outcomeTimestamp")
            ))
        })?;
    Ok(Feedback {
        card: card.to_string(),
        outcome,
        accepted_suggestions,
        override_reason,
        override_reason_system,
        user_comment,
        outcome_timestamp: outcome_timestamp.to_string(),
        outcome_at,
    })
}

/// A FHIR OperationOutcome with one issue per message: the body of every error.
pub fn operation_outcome(code: &str, messages: &[String]) -> Value {
    let issues: Vec<Value> = messages
        .iter()
        .map(|m| json!({"severity": "error", "code": code, "diagnostics": m}))
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_declares_every_data_kind_by_its_key() {
        // `DataKind::key` is the one table of data kinds; the prefetch templates are keyed by it.
        for kind in crate::record::DataKind::ALL {
            let (_, query) = PREFETCH
                .iter()
                .find(|(key, _)| *key == kind.key())
                .unwrap_or_else(|| panic!("{kind:?} has no prefetch template"));
            assert!(query.starts_with(kind.resource_type()), "{kind:?}: {query}");
        }
    }

    #[test]
    fn lenient_request() {
        let body = br#"{"hook":"order-select","hookInstance":"x","fhirServer":"","extension":{"a":1},
            "unknown":[1,2],"context":{"patientId":"p","draftOrders":null}}"#;
        let r = parse_hook_request(body, usize::MAX, |_| false).unwrap();
        assert_eq!(r.fhir_server, None);
        assert!(r.context.draft_orders.is_none());
        assert!(r.context.selections.is_none());
        assert!(r.prefetch.is_none());
    }

    #[test]
    fn shape_errors_name_the_field_not_the_value() {
        let cases: [(&[u8], &str); 7] = [
            (b"{", "not valid JSON"),
            (b"[1]", "JSON object"),
            (br#"{"hookInstance":"x","context":{}}"#, "`hook` is required"),
            (br#"{"hook":"order-select","context":{}}"#, "`hookInstance` is required"),
            (
                br#"{"hook":"order-select","hookInstance":"x"}"#,
                "`context` is required",
            ),
            (
                br#"{"hook":"order-select","hookInstance":"x","context":{"patientId":12345}}"#,
                "context.patientId",
            ),
            (
                br#"{"hook":"order-select","hookInstance":"x","context":{},"prefetch":[]}"#,
                "`prefetch`",
            ),
        ];
        for (body, expected) in cases {
            let message = parse_hook_request(body, usize::MAX, |_| false).unwrap_err().0;
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("12345"), "{message}");
        }
    }
}
