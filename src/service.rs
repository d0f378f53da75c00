//! One hook call from request bytes to cards: parse → find the dry-needling orders → gather the record →
//! assess → render. No HTTP here; [`crate::http`] maps [`HookError`] to status codes.
//!
//! Why this order: most order hooks carry no dry-needling order, so the draft orders are read first and the
//! (possibly megabytes of) prefetch is only scanned, not parsed, unless an order needs it. When one does, the
//! prefetch is read in the same pass as the request (clients send `context` before `prefetch`), so the record
//! costs one scan, not two.
//!
//! Missing data is a policy, applied here and not in [`crate::assess`]: the rules only say what they lack
//! ([`Verdict::NeedsData`]); [`MissingDataPolicy`] says whether that becomes the spec's 412 or a warning card, per
//! kind of data, because some EHRs (and the CDS Hooks sandbox) show a 412 as "all clear".

use std::collections::BTreeSet;

use time::Date;

use crate::assess::{Note, Verdict, assess, is_dry_needling};
use crate::content::{Knowledge, ServiceText};
use crate::fetch::{Allowlist, FetchFailure, Fetched, Fetcher, Search, Start, Target};
use crate::fhir::{Contents, Resource, parse_contents};
use crate::logsafe::caller_text;
use crate::record::{Availability, Coding, DataKind, Order, PatientRecord};
use crate::render::{RequestFacts, render_card, render_data_unavailable};
use crate::wire::{
    Card, CardsResponse, ContentDescription, Hook, HookRequest, PATIENT_MISMATCH, PrefetchValue, RequestError,
    ServiceDescription, ServiceExtension, parse_hook_request,
};

/// Why a hook call got no cards.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    BadRequest(#[from] RequestError),
    #[error("no CDS service has this id")]
    UnknownService,
    /// The caller's value is not quoted: error bodies never echo what the caller sent.
    #[error("this service handles `{expected}` requests; the request's `hook` names another")]
    WrongHook { expected: Hook },
    /// Over one of the [`Limits`] (413): the message names the field and the limit, never the content.
    #[error("{0}")]
    TooLarge(String),
    /// The request names a FHIR server its client may not name at all (403): a client bound to its issuer's
    /// FHIR server sent another one.
    #[error("`fhirServer` is not the FHIR server of the token's issuer")]
    ForeignFhirServer,
    /// Data the verdict needs could be had neither from prefetch nor from the FHIR server (412); with why the
    /// request's `fhirServer` was not asked for it, when it was not.
    #[error("data needed for the assessment is unavailable")]
    MissingData(Vec<DataKind>, NotFetched),
}

/// Why data was not asked of the request's `fhirServer`, for the 412 and the data-unavailable card: the
/// server refused whole, and the kinds of data whose search the token's scopes do not allow (those searches are
/// never sent; see [`crate::scopes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotFetched {
    /// Why the server was not called at all.
    pub server: Option<FetchFailure>,
    /// Kinds not searched for lack of scope, in [`DataKind::ALL`]'s order.
    pub out_of_scope: Vec<DataKind>,
}

/// What happened, for the request's log line: ids and counts only.
#[derive(Debug, Clone, Default)]
pub struct HookSummary {
    pub dry_needling_orders: usize,
    pub cards: usize,
    pub skipped_entries: usize,
    /// The kinds of data named on data-unavailable cards (the `card` missing-data policy), sorted, once each.
    /// Empty when every order was assessed; a 412 carries its kinds in [`HookError::MissingData`] instead.
    pub unavailable: Vec<DataKind>,
    /// Kinds of data a card says could not be checked (the order decided without them).
    pub unchecked: Vec<DataKind>,
    /// The request's `hookInstance`, for the card log (it names the call, not the patient).
    pub hook_instance: String,
    /// Each card's stance for the card log and analytics, in the answer's order: the template's
    /// [`crate::assess::stance`], `data_unavailable` for the card that stands in for a 412, or the testing aid's.
    pub stances: Vec<&'static str>,
}

/// What to answer when the verdict needs one kind of data that could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingDataAnswer {
    /// `412 Precondition Failed` with an OperationOutcome naming the data: the spec's answer.
    #[default]
    Status412,
    /// `200` with a warning card saying what could not be checked and what the guideline requires.
    Card,
}

/// The answer for each kind of data (`[missing_data]` in the configuration). The strictest wins: a call gets
/// data-unavailable cards only when every kind its undecided orders lack is set to [`MissingDataAnswer::Card`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MissingDataPolicy {
    /// Indexed like [`DataKind::ALL`].
    answers: [MissingDataAnswer; 4],
}

impl MissingDataPolicy {
    /// The same answer for every kind.
    pub fn all(answer: MissingDataAnswer) -> MissingDataPolicy {
        MissingDataPolicy { answers: [answer; 4] }
    }

    pub fn answer(&self, kind: DataKind) -> MissingDataAnswer {
        self.answers[kind as usize]
    }

    pub fn set(&mut self, kind: DataKind, answer: MissingDataAnswer) {
        self.answers[kind as usize] = answer;
    }

    /// Builder form of [`MissingDataPolicy::set`].
    pub fn with(mut self, kind: DataKind, answer: MissingDataAnswer) -> MissingDataPolicy {
        self.set(kind, answer);
        self
    }
}

/// A `[missing_data]` table as written, every key optional: the global one, or a tenant's (`[[client.tenants]]`
/// `missing_data = { … }`, docs/tenants.md), laid over a base policy by [`MissingDataOverride::over`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MissingDataOverride {
    /// `default`: the answer for every kind not listed.
    pub default: Option<MissingDataAnswer>,
    /// Each kind's own answer, indexed like [`DataKind::ALL`].
    pub kinds: [Option<MissingDataAnswer>; 4],
}

impl MissingDataOverride {
    /// The policy this table gives over `base`: a kind it lists takes its answer; else its `default`, when set;
    /// else `base`'s answer for that kind. Over the all-412 default this is the global `[missing_data]`; over the
    /// global policy, a tenant's.
    pub fn over(&self, base: MissingDataPolicy) -> MissingDataPolicy {
        let mut policy = match self.default {
            Some(answer) => MissingDataPolicy::all(answer),
            None => base,
        };
        for kind in DataKind::ALL {
            if let Some(answer) = self.kinds[kind as usize] {
                policy.set(kind, answer);
            }
        }
        policy
    }

    /// True when the table sets nothing.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.kinds.iter().all(Option::is_none)
    }
}

/// The prefetch key (and metrics label) of a search.
fn search_key(search: Search) -> &'static str {
    match search {
        Search::Data(kind) => kind.key(),
        Search::Allergies => ALLERGY_KEY,
    }
}

/// The metrics outcome of a search not sent because the token's scopes do not allow it.
pub const OUT_OF_SCOPE: &str = "out_of_scope";

/// The prefetch key for the Patient, whose birth date dates `onsetAge` and `onsetRange`. Not a [`DataKind`]: a
/// record without it is still complete, so it never causes a 412 and is not fetched when missing.
pub const PATIENT_KEY: &str = "patient";

/// The prefetch key for the patient's AllergyIntolerances. Like the Patient, not a [`DataKind`]: allergies change
/// no verdict (only which analgesic the card names first), so their absence never causes a 412.
pub const ALLERGY_KEY: &str = "allergyIntolerances";

/// Caps on what one request may ask for, so that the work and the answer stay bounded whatever the body holds
/// (the body itself is capped at the edge). Generous: the largest real record in `fixtures/real` has a few
/// hundred entries per key and one draft order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in `context.draftOrders`.
    pub max_draft_orders: usize,
    /// Cards in one response, which is one per dry-needling order the call is about.
    pub max_cards: usize,
    /// Entries (readable or not) in each prefetch key's Bundle.
    pub max_prefetch_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_draft_orders: 200,
            max_cards: 20,
            max_prefetch_entries: 20_000,
        }
    }
}

/// Finds the service for an id.
/// Where the source attributes are served (docs/source-attributes.md), relative to the base URL.
pub const SOURCE_ATTRIBUTES_PATH: &str = "/source-attributes";
/// The same attributes as a page for people (HTML), relative to the base URL.
pub const SOURCE_ATTRIBUTES_PAGE_PATH: &str = "/source-attributes.html";

/// A service's discovery entry: its texts from `cards/`, the prefetch templates when it reads the record, and
/// the content's version.
pub fn describe(service: &ServiceText, knowledge: &Knowledge, reads_record: bool) -> ServiceDescription {
    let version = &knowledge.version;
    ServiceDescription {
        hook: service.hook,
        title: service.title.clone(),
        description: service.description.clone(),
        id: service.id.clone(),
        prefetch: if reads_record {
            crate::wire::PREFETCH.into_iter().collect()
        } else {
            Default::default()
        },
        usage_requirements: service.usage_requirements.clone(),
        version: version.label.clone(),
        extension: ServiceExtension {
            content: ContentDescription {
                version: version.label.clone(),
                declared: version.declared.clone(),
                digest: version.digest.clone(),
                source_attributes: SOURCE_ATTRIBUTES_PATH.to_string(),
                source_attributes_page: SOURCE_ATTRIBUTES_PAGE_PATH.to_string(),
            },
        },
    }
}

pub fn find_service<'k>(knowledge: &'k Knowledge, id: &str) -> Option<&'k ServiceText> {
    knowledge.services.iter().find(|s| s.id == id)
}

/// The dry-needling orders among the draft orders, selected or not, and the codes of the other draft orders
/// (so that a card does not suggest what is already drafted). `null` has none. Anything but a readable Bundle
/// is a broken client and hears so (the envelope is strict; the FHIR content inside is not: unreadable
/// entries are skipped).
fn dry_needling_drafts(
    draft_orders: &serde_json::value::RawValue,
    knowledge: &Knowledge,
    limits: &Limits,
) -> Result<(Vec<Order>, Vec<Coding>), HookError> {
    if draft_orders.get() == "null" {
        return Ok((Vec::new(), Vec::new()));
    }
    let contents = parse_contents(draft_orders.get(), limits.max_draft_orders)
        .ok()
        .filter(|contents| contents.bundle)
        .ok_or_else(|| RequestError("`context.draftOrders` must be a FHIR Bundle".to_string()))?;
    if contents.resources.len() + contents.skipped > limits.max_draft_orders {
        return Err(HookError::TooLarge(format!(
            "`context.draftOrders` has more than {} entries, the most this service accepts",
            limits.max_draft_orders
        )));
    }
    let mut orders = Vec::new();
    let mut others = Vec::new();
    let mut conditions = Vec::new();
    for resource in contents.resources {
        match resource {
            Resource::Order(order) if is_dry_needling(&order, &knowledge.terminology) => orders.push(order),
            Resource::Order(order) => others.extend(order.code.codings),
            // A diagnosis drafted with the orders (order-sign), which an order's reason may point to.
            Resource::Condition(c) => conditions.push(c),
            _ => {}
        }
    }
    for order in &mut orders {
        order.contained_conditions.extend(conditions.iter().cloned());
    }
    Ok((orders, others))
}

/// The orders this call is about: the selected ones for order-select, all for order-sign.
fn selected_orders(request: &HookRequest, orders: Vec<Order>) -> Vec<Order> {
    if request.hook != Some(Hook::OrderSelect) {
        return orders;
    }
    let Some(selections) = &request.context.selections else {
        return Vec::new();
    };
    orders
        .into_iter()
        .filter(|order| {
            order.reference().is_some_and(|reference| {
                selections
                    .iter()
                    .any(|s| s == &reference || s.ends_with(&format!("/{reference}")))
            })
        })
        .collect()
}

/// Reads the record from prefetch. Each key: a Bundle or resource = present; `null` = no data; an
/// OperationOutcome with an error (alone or as an entry) or an unreadable value = failed; absent = missing. A
/// Bundle with a `next` page is only part of the data: it counts as failed until the rest is fetched, and the
/// page is returned so that it can be. The [`PATIENT_KEY`] (a Patient, or a Bundle with one) gives the birth
/// date, and changes no availability. `medicationReference`s are resolved later, by [`finish`], once the
/// record is gathered. A key with more entries than [`Limits::max_prefetch_entries`] is refused whole (413).
pub fn record_from_prefetch(
    prefetch: Option<Vec<(String, PrefetchValue<'_>)>>,
    limits: &Limits,
) -> Result<(PatientRecord, Vec<(DataKind, String)>), HookError> {
    let mut record = PatientRecord::default();
    let mut next_pages = Vec::new();
    let Some(mut prefetch) = prefetch else {
        return Ok((record, next_pages));
    };
    let within = |key: &str, contents: &Contents| {
        if contents.resources.len() + contents.skipped > limits.max_prefetch_entries {
            return Err(HookError::TooLarge(format!(
                "prefetch `{key}` has more than {} entries, the most this service accepts per key",
                limits.max_prefetch_entries
            )));
        }
        Ok(())
    };
    for kind in DataKind::ALL {
        let Some(at) = prefetch.iter().position(|(key, _)| key == kind.key()) else {
            continue;
        };
        let (_, value) = prefetch.swap_remove(at);
        let availability = match value.read(limits.max_prefetch_entries) {
            None => Availability::NoData,
            Some(Err(_)) => {
                record.skipped += 1;
                Availability::Failed
            }
            Some(Ok(mut contents)) => {
                within(kind.key(), &contents)?;
                let next = contents.next.take();
                let availability = add_contents(&mut record, contents);
                match next {
                    Some(next) if availability == Availability::Present => {
                        next_pages.push((kind, next));
                        Availability::Failed
                    }
                    _ => availability,
                }
            }
        };
        record.set_availability(kind, availability);
    }
    if let Some(at) = prefetch.iter().position(|(key, _)| key == ALLERGY_KEY) {
        record.allergies_known = true;
        match prefetch.swap_remove(at).1.read(limits.max_prefetch_entries) {
            None => {}
            Some(Err(_)) => record.skipped += 1,
            Some(Ok(contents)) => {
                within(ALLERGY_KEY, &contents)?;
                add_contents(&mut record, contents);
            }
        }
    }
    if let Some(at) = prefetch.iter().position(|(key, _)| key == PATIENT_KEY) {
        match prefetch.swap_remove(at).1.read(limits.max_prefetch_entries) {
            None => {}
            Some(Err(_)) => record.skipped += 1,
            Some(Ok(contents)) => {
                within(PATIENT_KEY, &contents)?;
                add_contents(&mut record, contents);
            }
        }
    }
    Ok((record, next_pages))
}

/// Adds a Bundle's (or a single resource's) contents to the record and says what it means for availability.
/// Resources are routed by their type, whatever key or search they came from: Medication resources (such as
/// those a search `_include`s) to [`PatientRecord::medication_definitions`], the first Patient's birth date
/// to [`PatientRecord::birth_date`].
pub fn add_contents(record: &mut PatientRecord, contents: Contents) -> Availability {
    record.skipped += contents.skipped;
    let mut failed = false;
    for resource in contents.resources {
        match resource {
            Resource::Condition(c) => record.conditions.push(c),
            Resource::Medication(m) => record.medications.push(m),
            Resource::Procedure(p) => record.procedures.push(p),
            Resource::MedicationDefinition {
                id: Some(id),
                code,
                form,
            } => record.medication_definitions.push((id, code, form)),
            Resource::Patient {
                birth_date: Some(birth_date),
            } => {
                record.birth_date.get_or_insert(birth_date);
            }
            Resource::Allergy { code, current: true } => record.allergies.push(code),
            Resource::Outcome { failed: true } => failed = true,
            Resource::Outcome { failed: false }
            | Resource::MedicationDefinition { id: None, .. }
            | Resource::Patient { birth_date: None }
            | Resource::Allergy { current: false, .. }
            | Resource::Order(_)
            | Resource::Other => {}
        }
    }
    if failed {
        Availability::Failed
    } else {
        Availability::Present
    }
}

/// One hook call after its synchronous first half: the request is valid and for this service.
pub struct Prepared<'a> {
    pub request: HookRequest<'a>,
    pub orders: Vec<Order>,
    /// The codes of the draft orders that are not dry needling.
    pub other_draft_codes: Vec<Coding>,
    pub record: PatientRecord,
    /// Prefetched Bundles whose `next` pages were not sent.
    next_pages: Vec<(DataKind, String)>,
    /// Why the request's `fhirServer` was not asked for some data, when [`gather`] did not: a 412 says so.
    not_fetched: NotFetched,
    pub summary: HookSummary,
}

impl Prepared<'_> {
    /// The data to fetch from the FHIR server: every kind prefetch did not settle, and the rest of every
    /// prefetched Bundle that has a `next` page. Nothing when no order needs a record.
    pub fn wanted(&self) -> Vec<(Search, Start)> {
        if self.orders.is_empty() {
            return Vec::new();
        }
        let mut wanted: Vec<(Search, Start)> = self
            .next_pages
            .iter()
            .map(|(kind, next)| (Search::Data(*kind), Start::NextPage(next.clone())))
            .collect();
        for kind in self.record.unknown_kinds() {
            if !wanted.iter().any(|(k, _)| *k == Search::Data(kind)) {
                wanted.push((Search::Data(kind), Start::Search));
            }
        }
        if !self.record.allergies_known {
            wanted.push((Search::Allergies, Start::Search));
        }
        wanted
    }
}

/// The first half of a hook call: parse, check the hook, find the dry-needling orders, read the prefetch.
pub fn prepare<'a>(
    knowledge: &Knowledge,
    limits: &Limits,
    service_id: &str,
    body: &'a [u8],
) -> Result<Prepared<'a>, HookError> {
    let service = find_service(knowledge, service_id).ok_or(HookError::UnknownService)?;
    prepare_for(knowledge, limits, service, body)
}

/// [`prepare`] for a service already looked up (the edge finds it once, from the path).
pub fn prepare_for<'a>(
    knowledge: &Knowledge,
    limits: &Limits,
    service: &ServiceText,
    body: &'a [u8],
) -> Result<Prepared<'a>, HookError> {
    // The draft orders are read as soon as the parser meets them: when one is a dry-needling order, the prefetch
    // (if it comes later, as clients send it) is read in the same pass.
    let mut drafts = Vec::new();
    let mut other_draft_codes = Vec::new();
    let mut drafts_refused = None;
    let mut request = parse_hook_request(body, limits.max_prefetch_entries, |draft_orders| {
        match dry_needling_drafts(draft_orders, knowledge, limits) {
            Ok(read) => (drafts, other_draft_codes) = read,
            Err(refused) => drafts_refused = Some(refused),
        }
        !drafts.is_empty()
    })?;
    // Recorded as soon as it is known, so that 400s and 412s are traceable too.
    tracing::Span::current().record(
        "hook_instance",
        tracing::field::display(caller_text(&request.hook_instance)),
    );
    if request.token_for_another_patient() {
        // Neither patient id is logged or answered; the client id the EHR knows this service by may be.
        let subject = request.fhir_authorization.as_ref().and_then(|a| a.subject.as_deref());
        tracing::warn!(
            subject = %caller_text(subject.unwrap_or("-")),
            "request refused: fhirAuthorization.patient is not context.patientId"
        );
        return Err(RequestError(PATIENT_MISMATCH.to_string()).into());
    }
    if request.hook != Some(service.hook) {
        return Err(HookError::WrongHook { expected: service.hook });
    }
    if let Some(refused) = drafts_refused {
        return Err(refused);
    }
    let orders = selected_orders(&request, drafts);
    if orders.len() > limits.max_cards {
        return Err(HookError::TooLarge(format!(
            "the request selects more than {} dry-needling orders, the most this service answers in one response",
            limits.max_cards
        )));
    }
    let (record, next_pages) = if orders.is_empty() {
        (PatientRecord::default(), Vec::new())
    } else {
        record_from_prefetch(request.prefetch.take(), limits)?
    };
    let summary = HookSummary {
        dry_needling_orders: orders.len(),
        hook_instance: request.hook_instance.clone(),
        ..HookSummary::default()
    };
    Ok(Prepared {
        request,
        orders,
        other_draft_codes,
        record,
        next_pages,
        not_fetched: NotFetched::default(),
        summary,
    })
}

/// Fetches what prefetch did not settle from the request's `fhirServer`, when it is allowed. `caller` is
/// the authenticated client's own allowlist. Only the searches `fhirAuthorization.scope` allows are sent (all
/// when it is absent); the others leave their data unavailable and are named in the 412 or the card. Failures
/// only leave data unavailable; they are logged by kind and reason, never with URLs.
pub async fn gather(prepared: &mut Prepared<'_>, fetcher: &Fetcher, caller: Option<&Allowlist>) {
    let mut wanted = prepared.wanted();
    if wanted.is_empty() {
        return;
    }
    let request = &prepared.request;
    let (Some(fhir_server), Some(patient_id)) = (request.fhir_server.as_deref(), request.context.patient_id.as_deref())
    else {
        return;
    };
    // Searches the token's scopes do not allow are never sent: their data is unavailable, as after a failed
    // search, and the 412 or the card names the scope.
    if let Some(authorization) = &request.fhir_authorization {
        let (allowed, out_of_scope): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|(search, _)| authorization.may_search(search.resource_type()));
        wanted = allowed;
        if !out_of_scope.is_empty() {
            tracing::info!(
                kinds = ?out_of_scope.iter().map(|(s, _)| s.resource_type()).collect::<Vec<_>>(),
                subject = %caller_text(authorization.subject.as_deref().unwrap_or("-")),
                "FHIR searches not sent: fhirAuthorization's scope does not allow them"
            );
        }
        for (search, _) in out_of_scope {
            metrics::counter!(
                crate::ops::metrics::FHIR_SEARCHES,
                "kind" => search_key(search),
                "outcome" => OUT_OF_SCOPE
            )
            .increment(1);
            if let Search::Data(kind) = search {
                prepared.record.set_availability(kind, Availability::Failed);
                prepared.not_fetched.out_of_scope.push(kind);
            }
        }
        prepared.not_fetched.out_of_scope.sort();
        if wanted.is_empty() {
            return;
        }
    }
    let request = &prepared.request;
    let token = request.fhir_authorization.as_ref().map(|a| a.access_token.as_str());
    let base = match fetcher.check_server(fhir_server, token.is_some(), caller) {
        Ok(base) => base,
        Err(reason) => {
            tracing::warn!(%reason, "fhirServer not contacted");
            prepared.not_fetched.server = Some(reason);
            for (kind, _) in &wanted {
                metrics::counter!(
                    crate::ops::metrics::FHIR_SEARCHES,
                    "kind" => search_key(*kind),
                    "outcome" => reason.label()
                )
                .increment(1);
            }
            return;
        }
    };
    let target = Target {
        access_token: token,
        patient_id,
    };
    let started = std::time::Instant::now();
    let restarted: Vec<Search> = wanted
        .iter()
        .filter(|(_, start)| *start == Start::Search)
        .map(|(kind, _)| *kind)
        .collect();
    let fetched = fetcher.fetch(base, target, wanted).await;
    let kinds = fetched.len();
    let record = &mut prepared.record;
    for Fetched {
        kind: search,
        pages,
        result,
    } in fetched
    {
        // Allergies change no verdict: what came is used, a failure is only counted.
        let Search::Data(kind) = search else {
            for page in pages {
                add_contents(record, page);
            }
            let outcome = match result {
                Ok(()) => "ok",
                Err(reason) => reason.label(),
            };
            metrics::counter!(crate::ops::metrics::FHIR_SEARCHES, "kind" => ALLERGY_KEY, "outcome" => outcome)
                .increment(1);
            continue;
        };
        // A search from the start that read anything replaces what the partial prefetch said, so nothing counts
        // twice (both are true; the search is the fuller or fresher of the two).
        if !pages.is_empty() && restarted.contains(&search) {
            record.clear(kind);
        }
        let mut availability = Availability::Present;
        for page in pages {
            if add_contents(record, page) == Availability::Failed {
                availability = Availability::Failed;
            }
        }
        let outcome = match result {
            Ok(()) => "ok",
            Err(reason) => {
                tracing::warn!(kind = kind.resource_type(), %reason, "FHIR search failed");
                availability = Availability::Failed;
                reason.label()
            }
        };
        metrics::counter!(crate::ops::metrics::FHIR_SEARCHES, "kind" => kind.key(), "outcome" => outcome).increment(1);
        record.set_availability(kind, availability);
    }
    // Recorded here so that a 412 after a failed fetch shows it too.
    let span = tracing::Span::current();
    span.record("fetched", kinds);
    span.record("fetch_ms", started.elapsed().as_millis() as u64);
    metrics::histogram!(crate::ops::metrics::FHIR_FETCH_DURATION).record(started.elapsed().as_secs_f64());
}

/// The second half: resolve the record's `medicationReference`s against the Medications gathered with it
/// (prefetched or fetched), then assess each order against the record and render the cards.
///
/// Orders the rules cannot decide for lack of data get a 412 naming that data, unless `missing_data` says
/// `card` for every kind they lack: then each of them gets the data-unavailable card instead (the others keep
/// their cards). One kind set to 412 keeps the whole answer a 412, exactly as without the policy.
pub fn finish(
    prepared: Prepared<'_>,
    knowledge: &Knowledge,
    today: Date,
    missing_data: &MissingDataPolicy,
) -> Result<(CardsResponse, HookSummary), HookError> {
    let Prepared {
        request,
        orders,
        other_draft_codes,
        mut record,
        mut summary,
        not_fetched,
        ..
    } = prepared;
    if orders.is_empty() {
        return Ok((CardsResponse { cards: Vec::new() }, summary));
    }
    record.resolve_medication_references();
    summary.skipped_entries = record.skipped;
    let facts = RequestFacts {
        patient_id: request.context.patient_id.clone(),
        encounter_id: request.context.encounter_id.clone(),
        other_draft_codes,
        out_of_scope: not_fetched.out_of_scope.clone(),
    };
    let Answered {
        cards,
        stances,
        unavailable,
        unchecked,
    } = answer(&orders, &record, &facts, knowledge, today, missing_data).map_err(|error| match error {
        HookError::MissingData(kinds, _) => {
            // Only the scopes of the data the 412 names.
            let out_of_scope = not_fetched
                .out_of_scope
                .iter()
                .copied()
                .filter(|kind| kinds.contains(kind))
                .collect();
            let not_fetched = NotFetched {
                server: not_fetched.server,
                out_of_scope,
            };
            HookError::MissingData(kinds, not_fetched)
        }
        error => error,
    })?;
    summary.cards = cards.len();
    summary.stances = stances;
    summary.unavailable = unavailable;
    summary.unchecked = unchecked;
    Ok((CardsResponse { cards }, summary))
}

/// The card log's stance of the data-unavailable card: no verdict on the order.
pub const DATA_UNAVAILABLE_STANCE: &str = "data_unavailable";

/// The cards of one call and what they could not check.
#[derive(Debug)]
pub struct Answered {
    pub cards: Vec<Card>,
    /// Each card's stance, in the same order (see [`HookSummary::stances`]).
    pub stances: Vec<&'static str>,
    /// The kinds of data named on data-unavailable cards, sorted, once each.
    pub unavailable: Vec<DataKind>,
    /// The kinds of data the decided cards' notes say could not be checked, once per card.
    pub unchecked: Vec<DataKind>,
}

/// The cards for the orders of one call, given the gathered record (its references resolved), and the kinds of
/// data named on data-unavailable cards; or the 412 (see [`finish`]). No I/O, so tests can drive it with any
/// record.
pub fn answer(
    orders: &[Order],
    record: &PatientRecord,
    facts: &RequestFacts,
    knowledge: &Knowledge,
    today: Date,
    missing_data: &MissingDataPolicy,
) -> Result<Answered, HookError> {
    // Each order's card, or what it lacks (rendered once the policy is known for the whole call).
    let mut answers = Vec::with_capacity(orders.len());
    let mut unchecked = Vec::new();
    let mut needed = BTreeSet::new();
    let mut lacking = BTreeSet::new();
    for order in orders {
        match assess(order, record, today, &knowledge.terminology, &knowledge.policy) {
            Verdict::Card(assessment) => {
                unchecked.extend(self::unchecked(&assessment.notes));
                let stance = crate::assess::stance(assessment.card).as_str();
                answers.push(Ok((render_card(&assessment, order, facts, knowledge), stance)));
            }
            Verdict::NeedsData(kinds) => {
                let lacks = lacked(&kinds, record);
                needed.extend(kinds);
                lacking.extend(lacks.iter().copied());
                answers.push(Err(lacks));
            }
        }
    }
    // The strictest answer wins. (An undecided order that named nothing it lacks could not get a card that says
    // what is missing; the rules never do that, but it too gets the 412.)
    let refused = lacking
        .iter()
        .any(|kind| missing_data.answer(*kind) == MissingDataAnswer::Status412)
        || answers.iter().any(|a| matches!(a, Err(lacks) if lacks.is_empty()));
    if refused {
        return Err(HookError::MissingData(
            needed.into_iter().collect(),
            NotFetched::default(),
        ));
    }
    if !lacking.is_empty() {
        tracing::info!(
            kinds = ?lacking.iter().map(|k| k.resource_type()).collect::<Vec<_>>(),
            "data unavailable: answered with a card, as [missing_data] asks"
        );
    }
    let (cards, stances) = orders
        .iter()
        .zip(answers)
        .map(|(order, answer)| match answer {
            Ok(answered) => answered,
            Err(lacks) => (
                render_data_unavailable(&lacks, order, facts, knowledge),
                DATA_UNAVAILABLE_STANCE,
            ),
        })
        .unzip();
    Ok(Answered {
        cards,
        stances,
        unavailable: lacking.into_iter().collect(),
        unchecked,
    })
}

/// What an undecided order lacks: the kinds the rules asked for and, when they stopped at the conditions
/// (before the care check), every other kind the record lacks too, since the verdict may turn on any of them.
/// So a policy cannot turn a 412 into a card by the order in which the rules happen to look.
fn lacked(needs: &[DataKind], record: &PatientRecord) -> Vec<DataKind> {
    let mut kinds: BTreeSet<DataKind> = needs.iter().copied().collect();
    if kinds.contains(&DataKind::Conditions) {
        kinds.extend(record.unknown_kinds());
    }
    kinds.into_iter().collect()
}

/// The kinds of data a card's notes say could not be checked.
fn unchecked(notes: &[Note]) -> Vec<DataKind> {
    let mut kinds = Vec::new();
    for note in notes {
        match note {
            Note::HistoryUnavailable(unavailable) => kinds.extend(unavailable),
            Note::ConditionsUnavailable => kinds.push(DataKind::Conditions),
            Note::Skipped(_) | Note::ReasonUnresolved(_) | Note::FromProblemList => {}
        }
    }
    kinds
}

/// Answers one hook call: prefetch first, then the FHIR server for what prefetch lacks.
pub async fn handle_hook(
    knowledge: &Knowledge,
    fetcher: &Fetcher,
    call: HookCall<'_>,
) -> Result<(CardsResponse, HookSummary), HookError> {
    let mut prepared = prepare_for(knowledge, call.limits, call.service, call.body)?;
    if let (Some(caller), Some(fhir_server)) = (call.caller, prepared.request.fhir_server.as_deref())
        && !caller.admits_base(fhir_server)
    {
        return Err(HookError::ForeignFhirServer);
    }
    gather(&mut prepared, fetcher, call.caller).await;
    finish(prepared, knowledge, call.today, call.missing_data)
}

/// The inputs of one hook call besides the shared state.
#[derive(Clone, Copy)]
pub struct HookCall<'a> {
    /// The service the call is for, looked up once by the caller (see [`find_service`]).
    pub service: &'a ServiceText,
    pub body: &'a [u8],
    pub today: Date,
    /// The authenticated client's FHIR server allowlist, if a client was authenticated.
    pub caller: Option<&'a Allowlist>,
    pub limits: &'a Limits,
    /// 412 or a card, per kind of data the verdict lacks.
    pub missing_data: &'a MissingDataPolicy,
}
