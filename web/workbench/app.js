// The workbench page: builds a CDS Hooks order-select / order-sign request from a patient's record and a drafted
// order, sends it to a CDS service found through its discovery URL, shows the cards as an EHR would, and sends
// feedback for suggestions taken and cards dismissed (one outcome per card, as an EHR records it). After each
// answer the result is scrolled into view and focused. Plain JavaScript, no build step: it is served from the
// binary as is. Card detail Markdown goes through marked, then DOMPurify, before it reaches the page.
"use strict";

const CPT = "http://www.ama-assn.org/go/cpt";
const SNOMED = "http://snomed.info/sct";
const PREFETCH_KEYS = ["conditions", "medicationStatements", "medicationRequests", "procedures", "patient"];
const ORDERS = {
  "cpt|20560": { system: CPT, code: "20560", display: "Needle insertion(s) without injection(s); 1 or 2 muscle(s)" },
  "cpt|20561": { system: CPT, code: "20561", display: "Needle insertion(s) without injection(s); 3 or more muscles" },
  "sct|231082000": { system: SNOMED, code: "231082000", display: "Dry needling of muscle" },
  "text|Dry needling": null,
};
const OTHER_ORDERS = [
  { code: "97140", display: "Manual therapy techniques" },
  { code: "97110", display: "Therapeutic exercises" },
  { code: "97010", display: "Application of hot or cold packs" },
];

const ORDER_ID = "dn-1";
// Clinical statuses of a problem that is going on (FHIR R4 codes; STU3 has them as plain strings).
const ONGOING = ["active", "recurrence", "relapse"];

const state = {
  patient: null, // { id, patientId, prefetch, order }: order is the bundled fixture's drafted order, if any
  fhirPatient: null, // the patient last loaded from a FHIR server, offered again in the picker
  drafts: [], // ServiceRequests drafted besides the dry-needling order (suggestions add here)
  orderDeleted: false,
  lastRequest: null,
  lastUrl: null,
  discovery: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

// ---- patient ----------------------------------------------------------------------------------------------

async function loadPatientList() {
  const response = await fetch("/workbench/patients");
  const { patients } = await response.json();
  const select = $("patient");
  for (const p of patients) {
    select.append(el("option", { value: p.id }, `${p.kind === "real" ? "Real" : "Example"}: ${p.title}`));
  }
  select.addEventListener("change", () => {
    if (select.value === "fhir") {
      if (state.fhirPatient) setPatient(state.fhirPatient);
    } else {
      loadBundled(select.value);
    }
  });
  if (patients.length) await loadBundled(patients[0].id);
}

async function loadBundled(id) {
  const response = await fetch(`/workbench/patients/${encodeURIComponent(id)}`);
  const patient = await response.json();
  setPatient({ id, patientId: patient.patientId, prefetch: patient.prefetch || {}, order: patient.order || null });
}

async function loadFromFhir() {
  const base = $("fhir-base").value.replace(/\/+$/, "");
  const id = $("fhir-patient").value.trim();
  if (!base || !id) return;
  const summary = $("patient-summary");
  summary.textContent = "Loading…";
  const get = async (path) => {
    const response = await fetch(`${base}/${path}`, { headers: { Accept: "application/fhir+json" } });
    if (!response.ok) throw new Error(`${path.split("?")[0]}: HTTP ${response.status}`);
    return response.json();
  };
  const q = encodeURIComponent(id);
  try {
    const [conditions, statements, requests, procedures, patient] = await Promise.all([
      get(`Condition?patient=${q}`),
      get(`MedicationStatement?patient=${q}&_include=MedicationStatement:medication`).catch(() => null),
      get(`MedicationRequest?patient=${q}&_include=MedicationRequest:medication`),
      get(`Procedure?patient=${q}`),
      get(`Patient/${q}`).catch(() => null),
    ]);
    const prefetch = { conditions, medicationRequests: requests, procedures };
    if (statements) prefetch.medicationStatements = statements;
    if (patient) prefetch.patient = patient;
    if (!$("fhir-server").value) $("fhir-server").value = base;
    state.fhirPatient = { id: `fhir-${id}`, patientId: id, prefetch, order: null };
    // The picker names the patient now shown, not the bundled one picked before.
    const picker = $("patient");
    let option = picker.querySelector('option[value="fhir"]');
    if (!option) {
      option = el("option", { value: "fhir" });
      picker.prepend(option);
    }
    option.textContent = `FHIR server: ${id} (${base})`;
    picker.value = "fhir";
    setPatient(state.fhirPatient);
  } catch (error) {
    summary.replaceChildren(el("p", { class: "problem" }, `Could not load the patient: ${error.message}`));
  }
}

function entries(bundle) {
  if (!bundle || typeof bundle !== "object") return [];
  if (bundle.resourceType !== "Bundle") return [bundle];
  return (bundle.entry || []).map((e) => e.resource).filter(Boolean);
}

function conceptText(concept) {
  if (!concept) return "";
  if (concept.text) return concept.text;
  const coding = (concept.coding || [])[0];
  return coding ? coding.display || coding.code : "";
}

function dateOf(resource) {
  return (
    resource.onsetDateTime ||
    resource.recordedDate ||
    resource.authoredOn ||
    resource.effectiveDateTime ||
    (resource.effectivePeriod || {}).start ||
    resource.performedDateTime ||
    (resource.performedPeriod || {}).start ||
    ""
  ).slice(0, 10);
}

function clinicalStatus(condition) {
  const status = condition.clinicalStatus;
  if (typeof status === "string") return status;
  const coding = ((status && status.coding) || [])[0];
  return (coding && coding.code) || conceptText(status) || "";
}

function ongoing(condition) {
  return ONGOING.includes(clinicalStatus(condition).toLowerCase());
}

function setPatient(patient) {
  state.patient = patient;
  const p = patient.prefetch;
  const conditions = entries(p.conditions).filter((r) => r.resourceType === "Condition");
  const medications = [...entries(p.medicationStatements), ...entries(p.medicationRequests)].filter((r) =>
    r.resourceType.startsWith("Medication") && r.resourceType !== "Medication",
  );
  const procedures = entries(p.procedures).filter((r) => r.resourceType === "Procedure");
  const item = (label, r) => el("li", {}, `${label(r)} `, el("span", { class: "date" }, dateOf(r)));
  const list = (title, items, label) => {
    const shown = items.slice(-8).reverse();
    return [el("h3", {}, `${title} (${items.length})`), el("ul", {}, ...shown.map((r) => item(label, r)))];
  };
  const conditionLabel = (c) => `${conceptText(c.code)}${clinicalStatus(c) ? ` (${clinicalStatus(c)})` : ""}`;
  // Newest first: the problems a reason would be taken from, then the rest, folded away.
  const byDate = (a, b) => dateOf(b).localeCompare(dateOf(a));
  const active = conditions.filter(ongoing).sort(byDate);
  const rest = conditions.filter((c) => !ongoing(c)).sort(byDate);
  const others = rest.length
    ? [
        el(
          "details",
          {},
          el("summary", {}, `Resolved, inactive or without status (${rest.length})`),
          el("ul", {}, ...rest.map((c) => item(conditionLabel, c))),
        ),
      ]
    : [];
  $("patient-summary").replaceChildren(
    el("p", {}, `Patient id ${patient.patientId}`),
    el("h3", {}, `Active conditions (${active.length})`),
    active.length ? el("ul", {}, ...active.map((c) => item(conditionLabel, c))) : el("p", {}, "None recorded."),
    ...others,
    ...list("Medications", medications, (m) => conceptText(m.medicationCodeableConcept) || m.medicationReference?.display || "medication"),
    ...list("Procedures", procedures, (r) => conceptText(r.code)),
  );
  const reason = $("reason");
  const option = (c) => {
    const status = clinicalStatus(c);
    const label = `${conceptText(c.code)}${status ? `, ${status}` : ""}${dateOf(c) ? `, ${dateOf(c)}` : ""}`;
    return el("option", { value: `condition|${conditions.indexOf(c)}` }, label);
  };
  const group = (label, items) => {
    const usable = items.filter((c) => c.id);
    return usable.length ? [el("optgroup", { label }, ...usable.map(option))] : [];
  };
  reason.replaceChildren(
    el("option", { value: "none" }, "No reason"),
    ...group("Active problems", active),
    ...group("Resolved, inactive or without status", rest),
    el("option", { value: "other" }, "Another code or text…"),
  );
  state.conditions = conditions;
  $("patient-summary").dataset.patient = patient.id;
  for (const { code } of OTHER_ORDERS) $(`other-${code}`).checked = false;
  draftOrder(patient.order || {});
  resetDraft();
}

// "Reset the draft": the dry-needling order back as the form shows it, and nothing a suggestion added.
function resetDraft() {
  state.drafts = [];
  state.orderDeleted = false;
  renderDrafts();
}

// The form set to the patient's drafted order: the fixture's code, reason and body site (or a bare order).
function draftOrder(order) {
  const coding = ((order.code && order.code.coding) || [])[0];
  const known = (k) => ORDERS[k] && coding && ORDERS[k].system === coding.system && ORDERS[k].code === coding.code;
  $("order-code").value = Object.keys(ORDERS).find(known) || (order.code && !coding ? "text|Dry needling" : "cpt|20560");
  const reference = ((order.reasonReference || [])[0] || {}).reference;
  const concept = (order.reasonCode || [])[0];
  $("reason").value = "none";
  for (const id of ["reason-code", "reason-text"]) $(id).value = "";
  $("reason-system").value = SNOMED;
  if (reference) {
    const index = state.conditions.findIndex((c) => `Condition/${c.id}` === reference);
    if (index >= 0) $("reason").value = `condition|${index}`;
  } else if (concept) {
    const reasonCoding = (concept.coding || [])[0];
    const systems = [...$("reason-system").options].map((o) => o.value);
    $("reason").value = "other";
    $("reason-system").value = reasonCoding && systems.includes(reasonCoding.system) ? reasonCoding.system : "";
    $("reason-code").value = (reasonCoding && reasonCoding.code) || "";
    $("reason-text").value = concept.text || (reasonCoding && reasonCoding.display) || "";
  }
  $("reason-other").hidden = $("reason").value !== "other";
  $("body-site").value = conceptText((order.bodySite || [])[0]);
}

// ---- draft ------------------------------------------------------------------------------------------------

function dryNeedlingOrder() {
  const patientRef = { reference: `Patient/${state.patient.patientId}` };
  const coding = ORDERS[$("order-code").value];
  const order = {
    resourceType: "ServiceRequest",
    id: ORDER_ID,
    status: "draft",
    intent: "order",
    code: coding ? { coding: [coding], text: "Dry needling" } : { text: "Dry needling" },
    subject: patientRef,
  };
  const reason = $("reason").value;
  if (reason.startsWith("condition|")) {
    const condition = state.conditions[Number(reason.split("|")[1])];
    order.reasonReference = [{ reference: `Condition/${condition.id}`, display: conceptText(condition.code) }];
  } else if (reason === "other") {
    const system = $("reason-system").value;
    const code = $("reason-code").value.trim();
    const text = $("reason-text").value.trim();
    const concept = {};
    if (system && code) concept.coding = [{ system, code, display: text || undefined }];
    if (text) concept.text = text;
    if (concept.coding || concept.text) order.reasonCode = [concept];
  }
  const site = $("body-site").value.trim();
  if (site) order.bodySite = [{ text: site }];
  return order;
}

function otherOrder(code, display) {
  return {
    resourceType: "ServiceRequest",
    id: `other-${code}`,
    status: "draft",
    intent: "order",
    code: { coding: [{ system: CPT, code, display }], text: display },
    subject: { reference: `Patient/${state.patient.patientId}` },
  };
}

function draftOrders() {
  const orders = [];
  if (!state.orderDeleted) orders.push(dryNeedlingOrder());
  for (const { code, display } of OTHER_ORDERS) {
    if ($(`other-${code}`).checked) orders.push(otherOrder(code, display));
  }
  return [...orders, ...state.drafts];
}

// ", for <reason>" when the order has one.
function reasonOf(order) {
  const reference = (order.reasonReference || [])[0];
  const text = reference ? reference.display || reference.reference : conceptText((order.reasonCode || [])[0]);
  return text ? `, for ${text}` : "";
}

// The draft list and the form say the same thing: an order a suggestion removed is shown removed in the form
// (its fields disabled, a notice) and is absent from the list.
function renderDrafts() {
  if (!state.patient) return;
  const orders = draftOrders();
  $("draft-list").replaceChildren(
    ...(orders.length
      ? orders.map((o) => el("li", {}, `${o.resourceType}/${o.id}: ${conceptText(o.code)}${reasonOf(o)}`))
      : [el("li", {}, "None: the request's draftOrders is empty.")]),
  );
  $("order-fields").disabled = state.orderDeleted;
  $("order-removed").hidden = !state.orderDeleted;
}

// ---- request ----------------------------------------------------------------------------------------------

function operationOutcome() {
  return {
    resourceType: "OperationOutcome",
    issue: [{ severity: "error", code: "exception", diagnostics: "The EHR could not run this query (workbench)" }],
  };
}

function buildRequest(hook) {
  const orders = draftOrders();
  const context = {
    userId: "Practitioner/workbench",
    patientId: state.patient.patientId,
    draftOrders: { resourceType: "Bundle", type: "collection", entry: orders.map((resource) => ({ resource })) },
  };
  if (hook === "order-select") context.selections = state.orderDeleted ? [] : [`ServiceRequest/${ORDER_ID}`];
  const prefetch = {};
  for (const key of PREFETCH_KEYS) {
    const mode = $(`prefetch-${key}`).value;
    if (mode === "as-is" && state.patient.prefetch[key] !== undefined) prefetch[key] = state.patient.prefetch[key];
    else if (mode === "null") prefetch[key] = null;
    else if (mode === "outcome") prefetch[key] = operationOutcome();
  }
  const request = { hook, hookInstance: crypto.randomUUID(), context, prefetch };
  const server = $("fhir-server").value.trim();
  if (server) request.fhirServer = server;
  return request;
}

async function discover(url) {
  if (state.discovery && state.discovery.url === url) return state.discovery.services;
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    const error = new Error(`discovery answered HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  const { services } = await response.json();
  state.discovery = { url, services };
  return services;
}

const NO_TOKEN =
  "The service verifies who calls it (it has trusted clients configured) and this page sends no JWT, so it can " +
  "call only a service that runs without trusted clients: on your own machine, `cargo run --release` and this " +
  "page at http://127.0.0.1:8080/. To call this one, use the CDS Hooks sandbox or an EHR whose key it trusts.";

const DISCOVERY_ADVICE = {
  401: NO_TOKEN,
  403: "The service refused this page: open the workbench at the service's own loopback address (127.0.0.1 or localhost).",
  404: "No CDS Hooks discovery at this URL: it ends in /cds-services.",
};

const ADVICE = {
  400: "The service says the request is malformed: the OperationOutcome names the field.",
  401: NO_TOKEN,
  404: "No such service at this URL: check the discovery URL.",
  412: "The service needs data it did not get: send that prefetch key (as is or null), or give a fhirServer it may call.",
  413: "The request is over one of the service's limits.",
  503: "The service is busy; retry after the time in Retry-After.",
};

async function send() {
  if (!state.patient) return;
  const hook = $("hook").value;
  const status = $("status");
  status.replaceChildren("Sending…");
  $("cards").replaceChildren();
  let url;
  try {
    const discoveryUrl = $("discovery").value;
    const services = await discover(discoveryUrl);
    const service = services.find((s) => s.hook === hook);
    if (!service) throw new Error(`the service at ${discoveryUrl} has no ${hook} service`);
    url = `${discoveryUrl.replace(/\/+$/, "")}/${encodeURIComponent(service.id)}`;
  } catch (error) {
    const advice =
      DISCOVERY_ADVICE[error.status] ||
      (error.status
        ? "See the service's answer in its log."
        : "The browser could not reach it: check the URL, and that the service is running and allows this page's origin (CORS).");
    status.replaceChildren(
      el("div", { class: "problem", role: "alert" }, el("p", {}, `Discovery failed: ${error.message}`), el("p", {}, advice)),
    );
    showResult();
    return;
  }
  const request = buildRequest(hook);
  state.lastRequest = request;
  state.lastUrl = url;
  $("request-json").textContent = json(request);
  const started = performance.now();
  let response, body;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(request),
    });
    body = await response.text();
  } catch (error) {
    status.replaceChildren(el("p", { class: "problem" }, `The request failed: ${error.message}`));
    showResult();
    return;
  }
  const ms = Math.round(performance.now() - started);
  let parsed = null;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = null;
  }
  $("response-json").textContent = parsed ? json(parsed) : body;
  if (!response.ok) {
    const issues = (parsed && parsed.issue) || [];
    status.replaceChildren(
      el(
        "div",
        { class: "problem", role: "alert" },
        el("p", {}, el("strong", {}, `HTTP ${response.status}`), ` in ${ms} ms`),
        el("ul", {}, ...issues.map((i) => el("li", {}, `${i.code}: ${i.diagnostics || ""}`))),
        el("p", {}, advice(response.status, request, issues)),
      ),
    );
    showResult();
    return;
  }
  const cards = (parsed && parsed.cards) || [];
  status.replaceChildren(el("p", { class: "ok" }, `HTTP ${response.status} in ${ms} ms: ${cards.length} card(s)`));
  $("cards").replaceChildren(...cards.map((card) => renderCard(card, url)));
  showResult();
}

// The answer is below the form at 1280x800: scroll it into view and move focus to it (the first card, or the
// status line), so that something visibly changes and a screen reader reads it.
function showResult() {
  const target = $("cards").querySelector(".card") || $("status");
  $("cards-panel").scrollIntoView({ block: "start" });
  target.focus({ preventScroll: true });
}

// What to do about an error answer. A 412 after a fhirServer was given means the service did not get the data
// from it: why, as the service says in the OperationOutcome when it refused the server, or as far as this page
// can tell (the service's log has the exact reason of a server that failed).
function advice(status, request, issues) {
  if (status !== 412 || !request.fhirServer) return ADVICE[status] || "See the response below.";
  const refused = (issues || [])
    .map((i) => i.diagnostics || "")
    .find((d) => d.startsWith("the request's fhirServer was not called:"));
  let url;
  try {
    url = new URL(request.fhirServer);
  } catch {
    return `The fhirServer you gave, ${request.fhirServer}, is not a URL: the service did not call it.`;
  }
  const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
    return `The service did not call ${url.origin}: it calls FHIR servers over https only (plain http only on loopback).`;
  }
  if (refused) {
    return (
      `The service refused to call ${url.origin} (${refused.replace("the request's fhirServer was not called: ", "")}). ` +
      `It calls only FHIR servers its operator listed, and this page sends no fhirAuthorization token, so ` +
      `${url.origin} must be one of its open servers ([fhir] open_servers, or start it with --fhir-server ` +
      `${url.origin}). Or send the missing prefetch key (as is or null).`
    );
  }
  return (
    `The service still lacks data although you gave fhirServer ${url.origin}. It calls only FHIR servers its ` +
    `operator listed, and this page sends no fhirAuthorization token, so ${url.origin} must be one of its open ` +
    `servers ([fhir] open_servers, or start it with --fhir-server ${url.origin}); otherwise it was refused. If ` +
    "it is listed, the server failed (an error status, no Bundle, or too slow): the service's log says which. " +
    "Or send the missing prefetch key (as is or null)."
  );
}

// ---- cards and feedback -----------------------------------------------------------------------------------

function renderCard(card, serviceUrl) {
  const indicator = ["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info";
  const detail = el("div", { class: "detail" });
  if (card.detail) detail.innerHTML = DOMPurify.sanitize(marked.parse(card.detail));
  state.cardCount = (state.cardCount || 0) + 1;
  const summaryId = `card-summary-${state.cardCount}`;
  const node = el(
    "article",
    { class: `card ${indicator}`, "data-card": card.uuid || "", tabindex: "-1", "aria-labelledby": summaryId },
    el("div", { class: "indicator" }, indicator),
    el("div", { class: "summary", id: summaryId }, card.summary || ""),
    el("div", { class: "source" }, `Source: ${(card.source && card.source.label) || ""}`),
    detail,
  );
  const actions = el("div", { class: "actions" });
  // One outcome per card, as an EHR records it: once answered, the card's controls give way to the outcome.
  const answer = async (outcome, entry, apply) => {
    const controls = [...actions.querySelectorAll("button, select")];
    for (const control of controls) control.disabled = true;
    let result;
    try {
      result = await feedback(serviceUrl, entry);
    } catch (error) {
      result = { ok: false, status: error.message };
    }
    node.querySelector(".outcome")?.remove();
    if (!result.ok) {
      for (const control of controls) control.disabled = false;
      node.append(el("p", { class: "outcome failed", role: "alert" }, `Feedback not sent (${result.status}): try again.`));
      return;
    }
    const hadOrder = !state.orderDeleted;
    if (apply) apply();
    const removed = hadOrder && state.orderDeleted;
    node.classList.add("answered");
    node.dataset.outcome = entry.outcome;
    const line = el("p", { class: "outcome", tabindex: "-1" }, outcome);
    if (removed) line.append(el("span", { class: "note" }, ' The dry-needling order is now removed from the draft: "Reset the draft" (in 2. Draft) brings it back.'));
    actions.replaceWith(line);
    line.focus();
  };
  for (const suggestion of card.suggestions || []) {
    const label = suggestion.label || "Apply";
    const entry = () => ({
      card: card.uuid,
      outcome: "accepted",
      acceptedSuggestions: [{ id: suggestion.uuid }],
      outcomeTimestamp: new Date().toISOString(),
    });
    actions.append(
      el(
        "button",
        {
          type: "button",
          class: "suggestion",
          onclick: () => answer(`Accepted: ${label}`, entry(), () => applySuggestion(suggestion)),
        },
        label,
      ),
    );
  }
  const reasons = card.overrideReasons || [];
  const reasonSelect = el(
    "select",
    { "aria-label": "Reason for dismissing" },
    el("option", { value: "" }, "Dismiss without a reason"),
    ...reasons.map((r, i) => el("option", { value: String(i) }, r.display || r.code)),
  );
  if (reasons.length) actions.append(reasonSelect);
  const dismiss = () => {
    const entry = { card: card.uuid, outcome: "overridden", outcomeTimestamp: new Date().toISOString() };
    const chosen = reasons[Number(reasonSelect.value)];
    if (reasonSelect.value !== "" && chosen) entry.overrideReason = { reason: chosen };
    const why = entry.overrideReason ? `: ${chosen.display || chosen.code}` : " without a reason";
    return answer(`Dismissed${why}`, entry);
  };
  actions.append(el("button", { type: "button", class: "dismiss", onclick: dismiss }, "Dismiss"));
  node.append(actions);
  return node;
}

function applySuggestion(suggestion) {
  for (const action of suggestion.actions || []) {
    if (action.type === "create" && action.resource) {
      const resource = { ...action.resource, id: action.resource.id || `suggested-${state.drafts.length + 1}` };
      state.drafts.push(resource);
    } else if (action.type === "delete") {
      const target = action.resourceId || (action.resource && `${action.resource.resourceType}/${action.resource.id}`);
      const ids = Array.isArray(target) ? target : [target];
      for (const id of ids) {
        if (id === `ServiceRequest/${ORDER_ID}`) state.orderDeleted = true;
        const other = OTHER_ORDERS.find(({ code }) => id === `ServiceRequest/other-${code}`);
        if (other) $(`other-${other.code}`).checked = false;
        state.drafts = state.drafts.filter((d) => `${d.resourceType}/${d.id}` !== id);
      }
    }
  }
  renderDrafts();
}

async function feedback(serviceUrl, entry) {
  const body = { feedback: [entry] };
  const response = await fetch(`${serviceUrl}/feedback`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  $("feedback-json").textContent = `${json(body)}\n→ HTTP ${response.status} ${await response.text()}`;
  $("feedback-json").parentElement.open = true;
  return { ok: response.ok, status: `HTTP ${response.status}` };
}

// ---- record -----------------------------------------------------------------------------------------------

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

async function copyCurl() {
  if (!state.lastRequest) return;
  const command =
    `curl -s -X POST ${shellQuote(state.lastUrl)} -H 'Content-Type: application/json' ` +
    `--data-binary ${shellQuote(JSON.stringify(state.lastRequest))}`;
  try {
    await navigator.clipboard.writeText(command);
    $("status").append(el("p", { class: "ok" }, "curl command copied"));
  } catch {
    $("request-json").textContent = command;
  }
}

function saveFixture() {
  if (!state.lastRequest) return;
  const blob = new Blob([`${json(state.lastRequest)}\n`], { type: "application/json" });
  const link = el("a", {
    href: URL.createObjectURL(blob),
    download: `workbench-${state.patient.id}.${state.lastRequest.hook}.json`,
  });
  document.body.append(link);
  link.click();
  link.remove();
}

// ---- start ------------------------------------------------------------------------------------------------

function init() {
  $("discovery").value = `${location.origin}/cds-services`;
  const others = $("other-orders");
  for (const { code, display } of OTHER_ORDERS) {
    const box = el("input", { type: "checkbox", id: `other-${code}` });
    box.addEventListener("change", renderDrafts);
    others.append(el("label", {}, box, `CPT ${code} ${display}`));
  }
  const prefetch = $("prefetch-controls");
  for (const key of PREFETCH_KEYS) {
    const select = el(
      "select",
      { id: `prefetch-${key}` },
      el("option", { value: "as-is" }, "send as is"),
      el("option", { value: "null" }, "null (the patient has none)"),
      el("option", { value: "outcome" }, "an OperationOutcome (query failed)"),
      el("option", { value: "omit" }, "omit (not supplied)"),
    );
    prefetch.append(el("div", { class: "prefetch-row" }, el("label", { for: `prefetch-${key}` }, key), select));
  }
  $("reason").addEventListener("change", () => {
    $("reason-other").hidden = $("reason").value !== "other";
  });
  for (const id of ["order-code", "reason", "reason-system", "reason-code", "reason-text", "body-site"]) {
    $(id).addEventListener("change", renderDrafts);
  }
  $("discovery").addEventListener("change", () => {
    state.discovery = null;
  });
  $("fhir-load-button").addEventListener("click", loadFromFhir);
  $("reset-draft").addEventListener("click", resetDraft);
  $("send").addEventListener("click", send);
  $("copy-curl").addEventListener("click", copyCurl);
  $("save-fixture").addEventListener("click", saveFixture);
  loadPatientList().catch((error) => {
    $("patient-summary").replaceChildren(el("p", { class: "problem" }, `Could not list patients: ${error.message}`));
  });
}

document.addEventListener("DOMContentLoaded", init);
