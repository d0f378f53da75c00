// The workbench page: builds a CDS Hooks order-select / order-sign request from a patient's record and a drafted
// order, sends it to a CDS service found through its discovery URL, shows the cards as an EHR would, and sends
// feedback for suggestions taken and cards dismissed. Plain JavaScript, no build step: it is served from the
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

const state = {
  patient: null, // { id, patientId, prefetch }
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
  select.addEventListener("change", () => loadBundled(select.value));
  if (patients.length) await loadBundled(patients[0].id);
}

async function loadBundled(id) {
  const response = await fetch(`/workbench/patients/${encodeURIComponent(id)}`);
  const patient = await response.json();
  setPatient({ id, patientId: patient.patientId, prefetch: patient.prefetch || {} });
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
    setPatient({ id: `fhir-${id}`, patientId: id, prefetch });
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

function setPatient(patient) {
  state.patient = patient;
  state.drafts = [];
  state.orderDeleted = false;
  const p = patient.prefetch;
  const conditions = entries(p.conditions).filter((r) => r.resourceType === "Condition");
  const medications = [...entries(p.medicationStatements), ...entries(p.medicationRequests)].filter((r) =>
    r.resourceType.startsWith("Medication") && r.resourceType !== "Medication",
  );
  const procedures = entries(p.procedures).filter((r) => r.resourceType === "Procedure");
  const list = (title, items, label) => {
    const shown = items.slice(-8).reverse();
    return [
      el("h3", {}, `${title} (${items.length})`),
      el(
        "ul",
        {},
        ...shown.map((r) => el("li", {}, `${label(r)} `, el("span", { class: "date" }, dateOf(r)))),
      ),
    ];
  };
  const status = (c) => conceptText(c.clinicalStatus) || "";
  $("patient-summary").replaceChildren(
    el("p", {}, `Patient id ${patient.patientId}`),
    ...list("Conditions", conditions, (c) => `${conceptText(c.code)}${status(c) ? ` (${status(c)})` : ""}`),
    ...list("Medications", medications, (m) => conceptText(m.medicationCodeableConcept) || m.medicationReference?.display || "medication"),
    ...list("Procedures", procedures, (r) => conceptText(r.code)),
  );
  const reason = $("reason");
  reason.replaceChildren(el("option", { value: "none" }, "No reason"));
  conditions.forEach((c, i) => {
    if (c.id) reason.append(el("option", { value: `condition|${i}` }, `Condition: ${conceptText(c.code)} ${dateOf(c)}`));
  });
  reason.append(el("option", { value: "other" }, "Another code or text…"));
  state.conditions = conditions;
  renderDrafts();
}

// ---- draft ------------------------------------------------------------------------------------------------

function dryNeedlingOrder() {
  const patientRef = { reference: `Patient/${state.patient.patientId}` };
  const coding = ORDERS[$("order-code").value];
  const order = {
    resourceType: "ServiceRequest",
    id: "dn-1",
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

function renderDrafts() {
  $("draft-list").replaceChildren(
    ...draftOrders().map((o) => el("li", {}, `${o.resourceType}/${o.id}: ${conceptText(o.code)}`)),
  );
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
  if (hook === "order-select") context.selections = state.orderDeleted ? [] : ["ServiceRequest/dn-1"];
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
  if (!response.ok) throw new Error(`discovery answered HTTP ${response.status}`);
  const { services } = await response.json();
  state.discovery = { url, services };
  return services;
}

const ADVICE = {
  400: "The service says the request is malformed: the OperationOutcome names the field.",
  401: "The service requires a signed JWT from a trusted EHR; this page sends none.",
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
    status.replaceChildren(el("p", { class: "problem" }, `Discovery failed: ${error.message}`));
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
        el("p", {}, ADVICE[response.status] || "See the response below."),
      ),
    );
    return;
  }
  const cards = (parsed && parsed.cards) || [];
  status.replaceChildren(el("p", { class: "ok" }, `HTTP ${response.status} in ${ms} ms: ${cards.length} card(s)`));
  $("cards").replaceChildren(...cards.map((card) => renderCard(card, url)));
}

// ---- cards and feedback -----------------------------------------------------------------------------------

function renderCard(card, serviceUrl) {
  const indicator = ["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info";
  const detail = el("div", { class: "detail" });
  if (card.detail) detail.innerHTML = DOMPurify.sanitize(marked.parse(card.detail));
  const node = el(
    "article",
    { class: `card ${indicator}`, "data-card": card.uuid || "" },
    el("div", { class: "indicator" }, indicator),
    el("div", { class: "summary" }, card.summary || ""),
    el("div", { class: "source" }, `Source: ${(card.source && card.source.label) || ""}`),
    detail,
  );
  const actions = el("div", { class: "actions" });
  for (const suggestion of card.suggestions || []) {
    actions.append(
      el(
        "button",
        {
          type: "button",
          class: "suggestion",
          onclick: async () => {
            applySuggestion(suggestion);
            await feedback(serviceUrl, {
              card: card.uuid,
              outcome: "accepted",
              acceptedSuggestions: [{ id: suggestion.uuid }],
              outcomeTimestamp: new Date().toISOString(),
            });
            node.classList.add("done");
          },
        },
        suggestion.label || "Apply",
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
  actions.append(
    el(
      "button",
      {
        type: "button",
        class: "dismiss",
        onclick: async () => {
          const entry = { card: card.uuid, outcome: "overridden", outcomeTimestamp: new Date().toISOString() };
          const chosen = reasons[Number(reasonSelect.value)];
          if (reasonSelect.value !== "" && chosen) entry.overrideReason = { reason: chosen };
          await feedback(serviceUrl, entry);
          node.classList.add("done");
        },
      },
      "Dismiss",
    ),
  );
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
        if (id === "ServiceRequest/dn-1") state.orderDeleted = true;
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
  for (const id of ["order-code", "reason", "body-site"]) $(id).addEventListener("change", renderDrafts);
  $("discovery").addEventListener("change", () => {
    state.discovery = null;
  });
  $("fhir-load-button").addEventListener("click", loadFromFhir);
  $("send").addEventListener("click", send);
  $("copy-curl").addEventListener("click", copyCurl);
  $("save-fixture").addEventListener("click", saveFixture);
  loadPatientList().catch((error) => {
    $("patient-summary").replaceChildren(el("p", { class: "problem" }, `Could not list patients: ${error.message}`));
  });
}

document.addEventListener("DOMContentLoaded", init);
