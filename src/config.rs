//! The deployment's configuration file (TOML): the service's public URL, the EHRs it trusts, and the FHIR
//! servers it may call.
//!
//! Why a file and why so strict: trust decisions belong in one reviewable place, and a typo there must stop
//! the start with a message that names the line, rather than quietly trust too much or too little. Unknown keys
//! are errors; every URL, key and algorithm is checked here, once. See docs/trust.md.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use reqwest::Url;
use serde::Deserialize;

use crate::auth::{TrustOptions, TrustedClient};
use crate::fetch::{Allowlist, FetchSettings, safe_origin};
use crate::http::{AdmissionSettings, ServeSettings};
use crate::record::DataKind;
use crate::service::{Limits, MissingDataAnswer, MissingDataOverride, MissingDataPolicy};
use crate::store::{StoreConfig, StoreSettings};
use crate::tenant::Tenant;

/// A configuration that could not be used; the message says where and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Default)]
pub struct Config {
    /// The URL EHRs call the service at (without the `/cds-services` path); `aud` is checked against it.
    pub public_base_url: Option<String>,
    pub fetch: FetchSettings,
    /// FHIR servers any caller may name.
    pub allowlist: Allowlist,
    pub clients: Vec<TrustedClient>,
    /// Connection time-outs, the connection cap, the shutdown deadline.
    pub serve: ServeSettings,
    /// How many hook calls (and large bodies) run at once.
    pub admission: AdmissionSettings,
    /// Caps on one request's content.
    pub limits: Limits,
    /// `[workbench] enabled`: `None` leaves it to the mode (on only when open on loopback).
    pub workbench: Option<bool>,
    /// `[sandbox_companion] enabled`: `None` leaves it to the mode (on only when open on loopback).
    pub sandbox_companion: Option<bool>,
    /// `[export] routes`: the read-only `/fhir/ValueSet` and `/fhir/PlanDefinition` routes; `None` leaves it to
    /// the mode (on only when open).
    pub export_routes: Option<bool>,
    /// `[missing_data]`: 412 or a card, per kind of data the verdict lacks.
    pub missing_data: MissingDataPolicy,
    /// `[store]`: the card log and feedback store, retention, the card log's queue.
    pub store: StoreSettings,
    /// `[analytics] token_sha256`: the SHA-256 of the credential `/analytics` asks for.
    pub analytics_token_sha256: Option<[u8; 32]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    public_base_url: Option<String>,
    #[serde(default)]
    fhir: FhirSection,
    #[serde(default, rename = "client")]
    clients: Vec<ClientSection>,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    workbench: WorkbenchSection,
    #[serde(default)]
    sandbox_companion: SandboxCompanionSection,
    #[serde(default)]
    export: ExportSection,
    #[serde(default)]
    missing_data: MissingDataSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    analytics: AnalyticsSection,
}

/// `[store]` (docs/storage.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    backend: Option<String>,
    data_dir: Option<PathBuf>,
    postgres_url: Option<String>,
    retention_days: Option<u32>,
    keep_override_comments: Option<bool>,
    card_log_queue: Option<usize>,
}

/// `[analytics]` (docs/storage.md "Analytics").
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AnalyticsSection {
    token_sha256: Option<String>,
}

/// `[workbench]`: the tester's page at `/`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkbenchSection {
    enabled: Option<bool>,
}

/// `[sandbox_companion]`: the testing aid for the CDS Hooks sandbox (docs/sandbox.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SandboxCompanionSection {
    enabled: Option<bool>,
}

/// `[export]`: the content as FHIR on `/fhir/…` (docs/export.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExportSection {
    routes: Option<bool>,
}

/// `[server]`: every key optional; absent keys keep their defaults (see docs/invariants.md).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    request_deadline_secs: Option<u64>,
    min_receive_bytes_per_sec: Option<u64>,
    max_connections_per_peer: Option<usize>,
    max_concurrent_hooks: Option<usize>,
    max_concurrent_large: Option<usize>,
    large_body_bytes: Option<u64>,
    feedback_bytes_in_flight: Option<u64>,
}

/// `[limits]`: caps on one request's content.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    max_draft_orders: Option<usize>,
    max_cards: Option<usize>,
    max_prefetch_entries: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FhirSection {
    deadline_ms: Option<u64>,
    max_pages: Option<usize>,
    max_entries: Option<usize>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    servers: Vec<String>,
    #[serde(default)]
    open_servers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSection {
    issuer: String,
    jwks_url: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks: Option<String>,
    algorithms: Vec<String>,
    tenant: Option<String>,
    #[serde(default)]
    fhir_servers: Vec<String>,
    #[serde(default)]
    open_fhir_servers: Vec<String>,
    /// `aud` values accepted besides the URL called.
    #[serde(default)]
    audience: Vec<String>,
    /// `jku` URLs accepted besides `jwks_url`.
    #[serde(default)]
    jku: Vec<String>,
    #[serde(default)]
    fhir_server_is_issuer: bool,
    /// `[[client.tenants]]` (docs/tenants.md).
    #[serde(default)]
    tenants: Vec<TenantSection>,
}

/// `[[client.tenants]]`: one tenant of a client, and what its policy sets (the rest is the global policy's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSection {
    id: String,
    missing_data: Option<MissingDataSection>,
    sandbox_companion: Option<bool>,
    services: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates a configuration file. Relative `jwks_file` paths are relative to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, dir).map_err(error)
    }

    /// Parses and validates configuration text; `dir` resolves relative file paths. What the command line may still
    /// supply (`--public-base-url`) is checked by [`Config::check_complete`] once it has been applied.
    pub fn parse(text: &str, dir: &Path) -> Result<Config, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let public_base_url = match file.public_base_url {
            Some(url) => Some(base_url(&url)?),
            None => None,
        };
        let defaults = FetchSettings::default();
        let fhir = file.fhir;
        let fetch = FetchSettings {
            deadline: Duration::from_millis(fhir.deadline_ms.unwrap_or(defaults.deadline.as_millis() as u64)),
            max_pages: fhir.max_pages.unwrap_or(defaults.max_pages),
            max_entries: fhir.max_entries.unwrap_or(defaults.max_entries),
            max_body_bytes: fhir.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        };
        if fetch.deadline.is_zero() || fetch.deadline > Duration::from_secs(60) {
            return Err("[fhir] deadline_ms must be between 1 and 60000".to_string());
        }
        if fetch.max_pages == 0 || fetch.max_entries == 0 || fetch.max_body_bytes == 0 {
            return Err("[fhir] limits must be positive".to_string());
        }
        let allowlist = Allowlist {
            servers: origins(&fhir.servers, "[fhir] servers")?,
            open_servers: origins(&fhir.open_servers, "[fhir] open_servers")?,
            fhir_base: None,
        };
        let mut clients: Vec<TrustedClient> = Vec::new();
        for (i, section) in file.clients.into_iter().enumerate() {
            let client = client(section, dir).map_err(|e| format!("[[client]] #{}: {e}", i + 1))?;
            if clients.iter().any(|c| c.issuer == client.issuer) {
                return Err(format!(
                    "[[client]] #{}: issuer `{}` is listed twice (several tenants of one issuer are listed in its \
                     one [[client]] as [[client.tenants]]; see docs/tenants.md)",
                    i + 1,
                    client.issuer
                ));
            }
            clients.push(client);
        }
        let (serve, admission) = server(file.server)?;
        Ok(Config {
            public_base_url,
            fetch,
            allowlist,
            clients,
            serve,
            admission,
            limits: limits(file.limits)?,
            workbench: file.workbench.enabled,
            sandbox_companion: file.sandbox_companion.enabled,
            export_routes: file.export.routes,
            missing_data: missing_data(file.missing_data, "[missing_data]")?.over(MissingDataPolicy::default()),
            store: store(file.store, dir)?,
            analytics_token_sha256: analytics_token(file.analytics)?,
        })
    }
}

impl Config {
    /// Checks what the file and the command line must give together: with trusted clients, a public base URL
    /// (the file's `public_base_url`, or `--public-base-url` / `DRY_NEEDLING_CDS_PUBLIC_BASE_URL`, which replaces
    /// it), since tokens' `aud` is checked against it.
    pub fn check_complete(&self) -> Result<(), String> {
        if !self.clients.is_empty() && self.public_base_url.is_none() {
            return Err(
                "`public_base_url` is required when clients are trusted: tokens' `aud` is checked against it; \
                 set it in the file, or with --public-base-url or DRY_NEEDLING_CDS_PUBLIC_BASE_URL"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// Sets the public base URL (the `--public-base-url` flag), checked like the file's, replacing the file's.
    pub fn set_public_base_url(&mut self, url: &str) -> Result<(), String> {
        self.public_base_url = Some(base_url(url)?);
        Ok(())
    }

    /// Where SQLite keeps its file (`--data-dir`, `DRY_NEEDLING_CDS_DATA_DIR`), replacing the file's
    /// `data_dir`. No effect when the store is PostgreSQL or off.
    pub fn set_data_dir(&mut self, dir: &Path) {
        if let Some(StoreConfig::Sqlite { .. }) = self.store.backend {
            self.store.backend = Some(StoreConfig::sqlite_in(dir));
        }
    }

    /// Use PostgreSQL at `url` (`--postgres-url`, `DRY_NEEDLING_CDS_POSTGRES_URL`: a URL with a password is
    /// better kept out of the configuration file).
    pub fn set_postgres_url(&mut self, url: &str) -> Result<(), String> {
        self.store.backend = Some(StoreConfig::Postgres {
            url: postgres_url(url)?,
        });
        Ok(())
    }

    /// Adds FHIR server origins any caller may name (the `--fhir-server` flag), checked like the file's.
    pub fn add_open_servers(&mut self, servers: &[String]) -> Result<(), String> {
        for origin in origins(servers, "FHIR server")? {
            if !self.allowlist.open_servers.contains(&origin) {
                self.allowlist.open_servers.push(origin);
            }
        }
        Ok(())
    }
}

fn server(section: ServerSection) -> Result<(ServeSettings, AdmissionSettings), String> {
    let serve_defaults = ServeSettings::default();
    let secs = |value: Option<u64>, default: Duration, key: &str| match value {
        None => Ok(default),
        Some(s @ 1..=3600) => Ok(Duration::from_secs(s)),
        Some(_) => Err(format!("[server] {key} must be between 1 and 3600")),
    };
    let max_connections = section.max_connections.unwrap_or(serve_defaults.max_connections);
    let serve = ServeSettings {
        header_read_timeout: secs(
            section.header_read_timeout_secs,
            serve_defaults.header_read_timeout,
            "header_read_timeout_secs",
        )?,
        idle_timeout: secs(
            section.idle_timeout_secs,
            serve_defaults.idle_timeout,
            "idle_timeout_secs",
        )?,
        max_connections,
        shutdown_grace: secs(
            section.shutdown_grace_secs,
            serve_defaults.shutdown_grace,
            "shutdown_grace_secs",
        )?,
        // Unset, it is at least the header time-out, which it includes.
        request_deadline: secs(
            section.request_deadline_secs,
            serve_defaults
                .request_deadline
                .max(Duration::from_secs(section.header_read_timeout_secs.unwrap_or(0))),
            "request_deadline_secs",
        )?,
        min_receive_rate: section
            .min_receive_bytes_per_sec
            .unwrap_or(serve_defaults.min_receive_rate),
        // The default share follows the cap it is a share of.
        max_connections_per_peer: section
            .max_connections_per_peer
            .unwrap_or_else(|| crate::http::default_share(max_connections)),
    };
    if serve.request_deadline < serve.header_read_timeout {
        return Err(
            "[server] request_deadline_secs must be at least header_read_timeout_secs: a request's head is part of \
             it"
            .to_string(),
        );
    }
    if serve.max_connections_per_peer > serve.max_connections {
        return Err(
            "[server] max_connections_per_peer must not exceed max_connections (0 turns the share off)".to_string(),
        );
    }
    if serve.idle_timeout > serve.header_read_timeout {
        return Err(
            "[server] idle_timeout_secs must not exceed header_read_timeout_secs, which bounds the wait for the \
             next request anyway"
                .to_string(),
        );
    }
    let defaults = AdmissionSettings::default();
    let admission = AdmissionSettings {
        max_hooks: section.max_concurrent_hooks.unwrap_or(defaults.max_hooks),
        max_large: section.max_concurrent_large.unwrap_or(defaults.max_large),
        large_body_bytes: section.large_body_bytes.unwrap_or(defaults.large_body_bytes),
        feedback_bytes: section.feedback_bytes_in_flight.unwrap_or(defaults.feedback_bytes),
    };
    if serve.max_connections == 0 || admission.max_hooks == 0 || admission.max_large == 0 {
        return Err(
            "[server] max_connections, max_concurrent_hooks and max_concurrent_large must be positive".to_string(),
        );
    }
    Ok((serve, admission))
}

fn limits(section: LimitsSection) -> Result<Limits, String> {
    let defaults = Limits::default();
    let limits = Limits {
        max_draft_orders: section.max_draft_orders.unwrap_or(defaults.max_draft_orders),
        max_cards: section.max_cards.unwrap_or(defaults.max_cards),
        max_prefetch_entries: section.max_prefetch_entries.unwrap_or(defaults.max_prefetch_entries),
    };
    if limits.max_draft_orders == 0 || limits.max_cards == 0 || limits.max_prefetch_entries == 0 {
        return Err("[limits] values must be positive".to_string());
    }
    Ok(limits)
}

/// `[missing_data]`: what to answer when the verdict needs data that could not be had, per kind
/// (docs/missing-data.md). Values are strings, `"412"` or `"card"`; `default` covers the kinds not
/// listed. Kept as raw TOML values so that a wrong one (`412` without quotes, `"Card"`) is named with its key.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MissingDataSection {
    default: Option<toml::Value>,
    conditions: Option<toml::Value>,
    medication_statements: Option<toml::Value>,
    medication_requests: Option<toml::Value>,
    procedures: Option<toml::Value>,
}

/// A `[missing_data]` table as written (the global one, or a tenant's `missing_data`, named `what` in messages).
fn missing_data(section: MissingDataSection, what: &str) -> Result<MissingDataOverride, String> {
    let answer = |key: &str, value: Option<toml::Value>| match value {
        None => Ok(None),
        Some(toml::Value::String(text)) if text == "412" => Ok(Some(MissingDataAnswer::Status412)),
        Some(toml::Value::String(text)) if text == "card" => Ok(Some(MissingDataAnswer::Card)),
        Some(other) => Err(format!(
            "{what} {key} = {other}: the allowed values are \"412\" (the spec's answer) and \"card\""
        )),
    };
    let mut table = MissingDataOverride {
        default: answer("default", section.default)?,
        kinds: [None; 4],
    };
    for (kind, key, value) in [
        (DataKind::Conditions, "conditions", section.conditions),
        (
            DataKind::MedicationStatements,
            "medication_statements",
            section.medication_statements,
        ),
        (
            DataKind::MedicationRequests,
            "medication_requests",
            section.medication_requests,
        ),
        (DataKind::Procedures, "procedures", section.procedures),
    ] {
        table.kinds[kind as usize] = answer(key, value)?;
    }
    Ok(table)
}

/// `[[client.tenants]]`: ids present, not empty and not repeated; not beside the single-tenant `tenant`.
fn tenants(sections: Vec<TenantSection>, single: Option<&String>) -> Result<Vec<Tenant>, String> {
    if single.is_some() && !sections.is_empty() {
        return Err(
            "`tenant` and [[client.tenants]] are both set: list the one tenant as [[client.tenants]] id = \"…\", \
             or keep `tenant` alone"
                .to_string(),
        );
    }
    let mut tenants: Vec<Tenant> = Vec::new();
    for (i, section) in sections.into_iter().enumerate() {
        let id = section.id;
        let what = format!("[[client.tenants]] #{}", i + 1);
        if id.trim().is_empty() || id.trim() != id {
            return Err(format!(
                "{what}: id `{id}` must not be empty or start or end with spaces (it is matched exactly)"
            ));
        }
        if tenants.iter().any(|t| t.id == id) {
            return Err(format!("{what}: tenant `{id}` is listed twice"));
        }
        let missing_data = match section.missing_data {
            Some(table) => missing_data(table, &format!("{what} (`{id}`) missing_data"))?,
            None => MissingDataOverride::default(),
        };
        if let Some(services) = &section.services
            && services.is_empty()
        {
            return Err(format!(
                "{what} (`{id}`): services = [] would refuse every call; list its services, or leave `services` \
                     out for all"
            ));
        }
        tenants.push(Tenant {
            id,
            missing_data,
            sandbox_companion: section.sandbox_companion,
            services: section.services,
        });
    }
    Ok(tenants)
}

fn store(section: StoreSection, dir: &Path) -> Result<StoreSettings, String> {
    let defaults = StoreSettings::default();
    let backend = match section.backend.as_deref() {
        None if section.postgres_url.is_some() => "postgres",
        None => "sqlite",
        Some(backend) => backend,
    };
    let backend = match backend {
        "sqlite" => {
            if section.postgres_url.is_some() {
                return Err("[store] postgres_url is set but backend is \"sqlite\": remove one".to_string());
            }
            match section.data_dir {
                Some(data_dir) => Some(StoreConfig::sqlite_in(&dir.join(data_dir))),
                None => defaults.backend,
            }
        }
        "postgres" => {
            if section.data_dir.is_some() {
                return Err("[store] data_dir is for SQLite, but backend is \"postgres\": remove one".to_string());
            }
            let url = section.postgres_url.ok_or(
                "[store] backend = \"postgres\" needs postgres_url (or --postgres-url / DRY_NEEDLING_CDS_POSTGRES_URL)",
            );
            match url {
                Ok(url) => Some(StoreConfig::Postgres {
                    url: postgres_url(&url)?,
                }),
                // The URL may come from the environment instead; `main` checks that one was given.
                Err(_) => Some(StoreConfig::Postgres { url: String::new() }),
            }
        }
        "off" => None,
        other => {
            return Err(format!(
                "[store] backend = \"{other}\": the allowed values are \"sqlite\" (the default, a file in data_dir), \
                 \"postgres\" (several instances) and \"off\""
            ));
        }
    };
    let retention_days = section.retention_days.unwrap_or(defaults.retention_days);
    if !(1..=3650).contains(&retention_days) {
        return Err("[store] retention_days must be between 1 and 3650".to_string());
    }
    let queue_capacity = section.card_log_queue.unwrap_or(defaults.queue_capacity);
    if !(1..=1_000_000).contains(&queue_capacity) {
        return Err("[store] card_log_queue must be between 1 and 1000000".to_string());
    }
    Ok(StoreSettings {
        backend,
        retention_days,
        keep_override_comments: section.keep_override_comments.unwrap_or(false),
        queue_capacity,
    })
}

/// A PostgreSQL URL: `postgres://` or `postgresql://`. Errors never repeat the URL (it may hold a password).
fn postgres_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("the PostgreSQL URL is not a URL ({e})"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "the PostgreSQL URL must start with postgres:// or postgresql://, not {}://",
            url.scheme()
        ));
    }
    Ok(text.to_string())
}

/// `[analytics] token_sha256`: 64 hexadecimal digits, the SHA-256 of the credential (so the file holds no
/// secret: `printf %s "$TOKEN" | sha256sum`).
fn analytics_token(section: AnalyticsSection) -> Result<Option<[u8; 32]>, String> {
    let Some(hex) = section.token_sha256 else {
        return Ok(None);
    };
    let hex = hex.trim();
    let bytes: Option<Vec<u8>> = (hex.len() == 64 && hex.is_ascii())
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .flatten();
    match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        Some(digest) => Ok(Some(digest)),
        None => Err(
            "[analytics] token_sha256 must be 64 hexadecimal digits: the output of `printf %s \"$TOKEN\" | sha256sum`"
                .to_string(),
        ),
    }
}

fn base_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("public_base_url `{text}`: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "public_base_url `{text}` must be an http(s) URL without query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Origins (`scheme://host[:port]`): https, or http on loopback; no path.
fn origins(list: &[String], what: &str) -> Result<Vec<String>, String> {
    list.iter()
        .map(|text| {
            let url = Url::parse(text).map_err(|e| format!("{what}: `{text}`: {e}"))?;
            let origin =
                safe_origin(&url).ok_or_else(|| format!("{what}: `{text}` must be https (http only on loopback)"))?;
            if url.path() != "/" || url.query().is_some() {
                return Err(format!(
                    "{what}: `{text}` must be an origin (scheme://host[:port]), without a path"
                ));
            }
            Ok(origin)
        })
        .collect()
}

fn client(section: ClientSection, dir: &Path) -> Result<TrustedClient, String> {
    let issuer = section.issuer.trim().to_string();
    if issuer.is_empty() {
        return Err("issuer is empty".to_string());
    }
    let key_url = |what: &str, text: &str| {
        let url = Url::parse(text).map_err(|e| format!("{what} `{text}`: {e}"))?;
        safe_origin(&url).ok_or_else(|| format!("{what} `{text}` must be https (http only on loopback)"))?;
        if url.fragment().is_some() {
            return Err(format!("{what} `{text}` must not have a fragment"));
        }
        Ok(url)
    };
    let jwks_url = match &section.jwks_url {
        Some(text) => Some(key_url("jwks_url", text)?),
        None => None,
    };
    let jku = section
        .jku
        .iter()
        .map(|text| key_url("jku", text))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys = JwkSet { keys: Vec::new() };
    if let Some(file) = &section.jwks_file {
        // Relative to the configuration file's folder, not to where the service was started: the file and its
        // keys move together. The message gives both, so a wrong guess about which is meant is plain.
        let path = dir.join(file);
        let shown = if file.is_absolute() {
            format!("jwks_file `{}`", file.display())
        } else {
            format!(
                "jwks_file `{}` (relative to the configuration file's folder: {})",
                file.display(),
                absolute(&path).display()
            )
        };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{shown}: {e}"))?;
        keys.keys.extend(jwks(&text).map_err(|e| format!("{shown}: {e}"))?.keys);
    }
    if let Some(text) = &section.jwks {
        keys.keys.extend(jwks(text).map_err(|e| format!("jwks: {e}"))?.keys);
    }
    if keys.keys.is_empty() && jwks_url.is_none() && jku.is_empty() {
        return Err("no keys: give jwks_url, jku, jwks_file or jwks".to_string());
    }
    let mut audiences = Vec::new();
    for aud in &section.audience {
        let aud = aud.trim();
        if aud.is_empty() {
            return Err("audience: an empty value would match nothing; remove it".to_string());
        }
        audiences.push(aud.to_string());
    }
    let mut fhir = Allowlist {
        servers: origins(&section.fhir_servers, "fhir_servers")?,
        open_servers: origins(&section.open_fhir_servers, "open_fhir_servers")?,
        fhir_base: None,
    };
    if section.fhir_server_is_issuer {
        // The issuer is a FHIR base URL: its origin is this client's FHIR server (called with its token), and
        // the only one it may name.
        let url = Url::parse(&issuer)
            .ok()
            .filter(|url| safe_origin(url).is_some() && url.query().is_none() && url.fragment().is_none())
            .ok_or_else(|| {
                format!(
                    "fhir_server_is_issuer: the issuer `{issuer}` must be an https FHIR base URL (http only on \
                     loopback)"
                )
            })?;
        let origin = safe_origin(&url).unwrap_or_default();
        if !fhir.servers.contains(&origin) {
            fhir.servers.push(origin);
        }
        fhir.fhir_base = Some(url.as_str().trim_end_matches('/').to_string());
    }
    if section.algorithms.is_empty() {
        return Err("algorithms is empty".to_string());
    }
    let mut algorithms = Vec::new();
    for name in &section.algorithms {
        let alg = Algorithm::from_str(name).map_err(|_| format!("algorithm `{name}` is not supported"))?;
        if alg.family() == AlgorithmFamily::Hmac {
            return Err(format!(
                "algorithm `{name}` is symmetric (HMAC); CDS Hooks clients sign with public keys"
            ));
        }
        algorithms.push(alg);
    }
    let options = TrustOptions {
        audiences,
        jku,
        fhir_server_is_issuer: section.fhir_server_is_issuer,
    };
    let tenants = tenants(section.tenants, section.tenant.as_ref())?;
    Ok(
        TrustedClient::new(issuer, jwks_url, keys, algorithms, section.tenant, fhir)
            .with_options(options)
            .with_tenants(tenants),
    )
}

/// `path` made absolute against the working directory, for messages (it need not exist).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A JWKS whose keys all have a `kid` and none is symmetric.
fn jwks(text: &str) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|_| "not a JSON Web Key Set".to_string())?;
    for key in &set.keys {
        let kid = key.common.key_id.as_deref().ok_or("a key has no `kid`")?;
        match key.algorithm {
            AlgorithmParameters::EllipticCurve(_)
            | AlgorithmParameters::RSA(_)
            | AlgorithmParameters::OctetKeyPair(_) => {}
            AlgorithmParameters::OctetKey(_) => return Err(format!("key `{kid}` is symmetric (oct): refused")),
            _ => return Err(format!("key `{kid}` has an unsupported type")),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config = Config::parse(text, Path::new("."))?;
        config.check_complete()?;
        Ok(config)
    }

    const SANDBOX_JWKS: &str = include_str!("../config/sandbox-jwks.json");

    #[test]
    fn empty_file_is_the_default() {
        let config = parse("").unwrap();
        assert!(config.clients.is_empty());
        assert_eq!(config.fetch, FetchSettings::default());
    }

    #[test]
    fn a_full_client() {
        let text = format!(
            r#"
            public_base_url = "https://cds.example.org/"
            [fhir]
            deadline_ms = 1500
            open_servers = ["https://launch.smarthealthit.org"]
            [[client]]
            issuer = "https://sandbox.cds-hooks.org"
            jwks_url = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
            jwks = '''{SANDBOX_JWKS}'''
            algorithms = ["ES384"]
            fhir_servers = ["https://ehr.example.org"]
            "#
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.public_base_url.as_deref(), Some("https://cds.example.org"));
        assert_eq!(config.fetch.deadline, Duration::from_millis(1500));
        assert_eq!(config.allowlist.open_servers, ["https://launch.smarthealthit.org"]);
        assert_eq!(config.clients[0].keys.keys.len(), 1);
        assert_eq!(config.clients[0].fhir.servers, ["https://ehr.example.org"]);
    }

    #[test]
    fn shipped_configurations_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let sandbox = Config::load(&dir.join("sandbox.toml")).unwrap();
        assert_eq!(sandbox.clients[0].issuer, "https://sandbox.cds-hooks.org");
        assert_eq!(
            sandbox.clients[0].keys.keys.len(),
            1,
            "the sandbox key comes from the local file"
        );
        let example = Config::load(&dir.join("example.toml")).unwrap();
        assert_eq!(example.clients[0].fhir.servers, ["https://ehr.example.org"]);
        assert_eq!(
            example.store,
            StoreSettings::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            example.fetch,
            FetchSettings::default(),
            "the example shows the defaults"
        );
        assert_eq!(example.limits, Limits::default(), "the example shows the defaults");
        let defaults = ServeSettings::default();
        assert_eq!(
            (
                example.serve.header_read_timeout,
                example.serve.idle_timeout,
                example.serve.shutdown_grace
            ),
            (
                defaults.header_read_timeout,
                defaults.idle_timeout,
                defaults.shutdown_grace
            ),
            "the example shows the defaults"
        );
        assert_eq!(example.admission.max_hooks, AdmissionSettings::default().max_hooks);
        assert_eq!(
            example.missing_data,
            MissingDataPolicy::default(),
            "the example shows the defaults"
        );
        let text = std::fs::read_to_string(dir.join("example.toml")).unwrap();
        assert!(
            text.contains("[missing_data]"),
            "the example shows the [missing_data] table"
        );
    }

    #[test]
    fn the_missing_data_policy_per_kind() {
        use MissingDataAnswer::{Card, Status412};
        assert_eq!(parse("").unwrap().missing_data, MissingDataPolicy::all(Status412));
        let config = parse("[missing_data]\nconditions = \"card\"\nprocedures = \"412\"\n").unwrap();
        let policy = config.missing_data;
        assert_eq!(policy.answer(DataKind::Conditions), Card);
        assert_eq!(policy.answer(DataKind::MedicationStatements), Status412);
        assert_eq!(policy.answer(DataKind::MedicationRequests), Status412);
        assert_eq!(policy.answer(DataKind::Procedures), Status412);
        // `default` covers the kinds not listed; listed ones keep their own.
        let config = parse("[missing_data]\ndefault = \"card\"\nmedication_requests = \"412\"\n").unwrap();
        assert_eq!(
            config.missing_data,
            MissingDataPolicy::all(Card).with(DataKind::MedicationRequests, Status412)
        );
        for (text, named) in [
            ("[missing_data]\nconditions = 412", "conditions = 412"),
            ("[missing_data]\nconditions = \"Card\"", "conditions = \"Card\""),
            ("[missing_data]\nprocedures = \"warn\"", "procedures = \"warn\""),
            ("[missing_data]\ndefault = true", "default = true"),
            ("[missing_data]\nmedication_statements = \"\"", "medication_statements"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(named), "{text}: {error}");
            assert!(
                error.contains("\"412\"") && error.contains("\"card\""),
                "{text}: {error}"
            );
        }
        let error = parse("[missing_data]\npatient = \"card\"").unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
    }

    #[test]
    fn a_missing_jwks_file_names_the_path_written_and_the_path_read() {
        let dir = std::env::temp_dir().join("dn-cds-config-test");
        let error = Config::parse(
            "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://e\"\n\
             jwks_file = \"keys/missing.json\"\nalgorithms = [\"ES384\"]",
            &dir,
        )
        .unwrap_err();
        let resolved = dir.join("keys/missing.json");
        assert!(error.contains("`keys/missing.json`"), "{error}");
        assert!(error.contains(&resolved.display().to_string()), "{error}");
    }

    #[test]
    fn trust_options_are_read() {
        let config = parse(
            "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://fhir.example.org/api/FHIR/R4\"\n\
             jku = [\"https://keys.example.org/a.json\", \"https://keys.example.org/b.json\"]\n\
             audience = [\"urn:example:cds\"]\nfhir_server_is_issuer = true\nalgorithms = [\"RS384\"]",
        )
        .unwrap();
        let client = &config.clients[0];
        assert_eq!(client.options.audiences, ["urn:example:cds"]);
        assert_eq!(client.options.jku.len(), 2);
        assert!(client.options.fhir_server_is_issuer);
        assert_eq!(client.fhir.servers, ["https://fhir.example.org"]);
    }

    #[test]
    fn server_and_limits_sections_are_checked() {
        let parse = |text: &str| Config::parse(text, Path::new("."));
        let config =
            parse("[server]\nheader_read_timeout_secs = 20\nmax_connections = 5\n[limits]\nmax_cards = 3\n").unwrap();
        assert_eq!(config.serve.header_read_timeout, Duration::from_secs(20));
        assert_eq!(config.serve.idle_timeout, ServeSettings::default().idle_timeout);
        assert_eq!(config.serve.max_connections, 5);
        assert_eq!(config.limits.max_cards, 3);
        assert_eq!(config.limits.max_draft_orders, Limits::default().max_draft_orders);
        for (text, message) in [
            ("[server]\nheader_read_timeout_secs = 0", "between 1 and 3600"),
            (
                "[server]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3",
                "must not exceed",
            ),
            ("[server]\nmax_connections = 0", "must be positive"),
            ("[server]\nmax_concurrent_large = 0", "must be positive"),
            ("[limits]\nmax_prefetch_entries = 0", "must be positive"),
            ("[limits]\nmax_orders = 3", "unknown field"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let client = |extra: &str| {
            format!(
                "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://ehr.example.org\"\n{extra}"
            )
        };
        let cases = [
            ("unknown = 1", "unknown field"),
            (
                "[[client]]\nissuer = \"x\"\njwks_url = \"https://x\"\nalgorithms = [\"ES384\"]",
                "public_base_url",
            ),
            (
                &client("jwks_url = \"https://e/jwks\"\nalgorithms = [\"HS256\"]"),
                "symmetric",
            ),
            (
                &client("jwks_url = \"https://e/jwks\"\nalgorithms = [\"none\"]"),
                "not supported",
            ),
            (
                &client("jwks_url = \"http://e/jwks\"\nalgorithms = [\"ES384\"]"),
                "must be https",
            ),
            (&client("algorithms = [\"ES384\"]"), "no keys"),
            (
                &client(
                    "jwks = '{\"keys\":[{\"kty\":\"oct\",\"kid\":\"k\",\"k\":\"c2VjcmV0\"}]}'\nalgorithms = [\"ES384\"]",
                ),
                "symmetric (oct)",
            ),
            (
                &client("jwks_url = \"https://e/jwks\"\nalgorithms = [\"ES384\"]\nfhir_servers = [\"https://e/fhir\"]"),
                "without a path",
            ),
            (
                &client("jwks_file = \"missing.json\"\nalgorithms = [\"ES384\"]"),
                "missing.json",
            ),
            (
                &client("jku = [\"http://keys.example.org/jwks\"]\nalgorithms = [\"ES384\"]"),
                "jku `http://keys.example.org/jwks` must be https",
            ),
            (
                &client("jwks_url = \"https://e/jwks\"\naudience = [\" \"]\nalgorithms = [\"ES384\"]"),
                "audience: an empty value",
            ),
            (
                &client("jwks_file = \"keys/missing.json\"\nalgorithms = [\"ES384\"]"),
                "relative to the configuration file's folder",
            ),
            ("[fhir]\ndeadline_ms = 0", "deadline_ms"),
            ("[fhir]\nservers = [\"http://ehr.example.org\"]", "must be https"),
        ];
        for (text, expected) in cases {
            let error = parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(error.contains(expected), "{text}\n=> {error}");
        }
    }

    #[test]
    fn the_store_section() {
        use crate::store::StoreConfig;
        let dir = Path::new("/etc/cds");
        let parsed = |text: &str| Config::parse(text, dir);
        assert_eq!(parsed("").unwrap().store, StoreSettings::default());
        let sqlite =
            parsed("[store]\ndata_dir = \"db\"\nretention_days = 30\nkeep_override_comments = true\n").unwrap();
        assert_eq!(
            sqlite.store.backend,
            Some(StoreConfig::sqlite_in(Path::new("/etc/cds/db"))),
            "relative to the file"
        );
        assert_eq!(
            (sqlite.store.retention_days, sqlite.store.keep_override_comments),
            (30, true)
        );
        let postgres = parsed("[store]\npostgres_url = \"postgres://cds@db/cds\"\n").unwrap();
        assert_eq!(
            postgres.store.backend,
            Some(StoreConfig::Postgres {
                url: "postgres://cds@db/cds".into()
            }),
            "a URL alone chooses PostgreSQL"
        );
        assert_eq!(parsed("[store]\nbackend = \"off\"\n").unwrap().store.backend, None);
        for (text, named) in [
            ("[store]\nbackend = \"mysql\"", "backend = \"mysql\""),
            (
                "[store]\nbackend = \"sqlite\"\npostgres_url = \"postgres://x/y\"",
                "remove one",
            ),
            (
                "[store]\nbackend = \"postgres\"\ndata_dir = \"d\"",
                "data_dir is for SQLite",
            ),
            ("[store]\npostgres_url = \"mysql://x/y\"", "postgres://"),
            ("[store]\nretention_days = 0", "retention_days"),
            ("[store]\ncard_log_queue = 0", "card_log_queue"),
            ("[store]\nretain = 3", "retain"),
            ("[analytics]\ntoken_sha256 = \"abc\"", "64 hexadecimal digits"),
        ] {
            let error = parsed(text).unwrap_err();
            assert!(error.contains(named), "{text}: {error}");
        }
        // The secret in a bad URL is never repeated.
        let error = parsed("[store]\npostgres_url = \"mysql://u:s3cret@x/y\"").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let token = parsed(&format!("[analytics]\ntoken_sha256 = \"{digest}\"")).unwrap();
        assert_eq!(token.analytics_token_sha256.map(|d| d[0]), Some(0x9f));
        // Flags: a data directory replaces SQLite's; a PostgreSQL URL replaces the backend.
        let mut config = parsed("").unwrap();
        config.set_data_dir(Path::new("/srv/data"));
        assert_eq!(
            config.store.backend,
            Some(StoreConfig::sqlite_in(Path::new("/srv/data")))
        );
        config.set_postgres_url("postgresql://cds@db/cds").unwrap();
        config.set_data_dir(Path::new("/elsewhere"));
        assert!(matches!(config.store.backend, Some(StoreConfig::Postgres { .. })));
        assert!(config.set_postgres_url("http://db").is_err());
    }
}
