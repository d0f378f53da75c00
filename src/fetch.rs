//! Getting what prefetch lacks from the EHR's FHIR server: the same searches as the prefetch templates, all at
//! once, within one deadline.
//!
//! Why it is this careful: `fhirServer` and its token are caller input. A careless fetcher is a server-side
//! request forgery tool (call any host from inside the hospital network) and a token leak (send the EHR's token
//! wherever a `next` link points). So only origins on an allowlist are contacted, https is required except on
//! loopback, redirects and `next` links never leave the origin, every body is size-capped, and every failure
//! only makes that kind of data unavailable: the caller then gets the core's answer for missing data, never a
//! hang or a 5xx. Nothing here logs a URL, a body or a token: URLs carry the patient id.
//!
//! The HTTP work goes through fhir-sdk's client (base URL, bearer header, origin check, no retries, time-out)
//! with one shared `reqwest` pool beneath it. Bodies are read by this module, not by fhir-sdk's typed search,
//! because the typed search has no size cap and parses a Bundle in one piece, so one malformed entry would
//! spoil the whole search; here each page is read entry by entry like prefetch.

use std::net::IpAddr;
use std::time::Duration;

use fhir_sdk::client::{Client, RequestSettings};
use fhir_sdk::version::FhirR4B;
use futures::future::join_all;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use tokio::time::{Instant, timeout_at};

use crate::fhir::{Contents, parse_contents};
use crate::record::DataKind;

/// Limits for fetching; see docs/fetching.md for the choice of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSettings {
    /// The whole fetch (all searches, all pages) must finish in this time.
    pub deadline: Duration,
    /// Pages per search, the first included.
    pub max_pages: usize,
    /// Entries per search, over all its pages.
    pub max_entries: usize,
    /// Bytes per response body.
    pub max_body_bytes: usize,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            deadline: Duration::from_millis(2000),
            max_pages: 50,
            max_entries: 5000,
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// FHIR server origins (`https://host[:port]`) a caller may name as `fhirServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Called only with the caller's `fhirAuthorization` token.
    pub servers: Vec<String>,
    /// May also be called without a token (open development servers such as the sandbox's).
    pub open_servers: Vec<String>,
    /// When set, the one FHIR base URL (no trailing slash) a caller may name at all: a client whose issuer is
    /// its FHIR server (Epic) names no other, and a request that does is refused whole.
    pub fhir_base: Option<String>,
}

impl Allowlist {
    /// Whether `origin` may be called, with or without a token.
    pub fn permits(&self, origin: &str, has_token: bool) -> bool {
        self.open_servers.iter().any(|o| o == origin) || (has_token && self.servers.iter().any(|o| o == origin))
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.open_servers.is_empty()
    }

    /// Whether a request naming `fhir_server` is within [`Allowlist::fhir_base`] (always, when unset). The
    /// comparison is of parsed URLs, ignoring one trailing slash: `https://ehr/FHIR/R4/` is `https://ehr/FHIR/R4`.
    pub fn admits_base(&self, fhir_server: &str) -> bool {
        let Some(base) = &self.fhir_base else {
            return true;
        };
        let normal = |text: &str| {
            Url::parse(text)
                .ok()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
        };
        normal(fhir_server).is_some_and(|server| Some(server) == normal(base))
    }
}

/// The origin of a URL the service may contact: https, or http on a loopback host. `None` for anything else
/// (plain http elsewhere, other schemes, no host).
pub fn safe_origin(url: &Url) -> Option<String> {
    let loopback = is_loopback(url);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return None,
    }
    url.host_str()?;
    Some(url.origin().ascii_serialization())
}

/// A loopback host: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Where and as whom to fetch, from the hook request.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub access_token: Option<&'a str>,
    pub patient_id: &'a str,
}

/// One kind of data to fetch: from the start, or from the `next` page of a prefetched Bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Search,
    NextPage(String),
}

/// Why a kind of data could not be fetched. Deliberately without detail: errors from the HTTP stack quote
/// URLs, and URLs carry the patient id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    #[error("it is not a valid https URL (or http on loopback), without credentials or a query")]
    BadServer,
    #[error(
        "its origin is not on this service's allowlist ([fhir] servers for calls with fhirAuthorization, \
         open_servers for calls without, or the client's own)"
    )]
    NotAllowed,
    #[error("fhirAuthorization's token cannot be sent in an HTTP header")]
    BadToken,
    #[error("the request could not be sent or had no answer")]
    Transport,
    #[error("the deadline passed")]
    Deadline,
    #[error("the server answered with an error status")]
    Status,
    #[error("a response body was larger than the limit")]
    TooLarge,
    #[error("a response was not a FHIR Bundle")]
    NotABundle,
    #[error("the server answered with an OperationOutcome error")]
    OutcomeError,
    #[error("a next link pointed to another origin")]
    OtherOrigin,
    #[error("more pages than the limit")]
    TooManyPages,
    #[error("more entries than the limit")]
    TooManyEntries,
}

impl FetchFailure {
    /// A fixed, short name: a metrics label.
    pub fn label(self) -> &'static str {
        match self {
            FetchFailure::BadServer => "bad_server",
            FetchFailure::NotAllowed => "not_allowed",
            FetchFailure::BadToken => "bad_token",
            FetchFailure::Transport => "transport",
            FetchFailure::Deadline => "deadline",
            FetchFailure::Status => "status",
            FetchFailure::TooLarge => "too_large",
            FetchFailure::NotABundle => "not_a_bundle",
            FetchFailure::OutcomeError => "outcome_error",
            FetchFailure::OtherOrigin => "other_origin",
            FetchFailure::TooManyPages => "too_many_pages",
            FetchFailure::TooManyEntries => "too_many_entries",
        }
    }
}

/// What one kind's fetch gave: the pages read (kept even on failure: what they say is true, only the absence
/// of a fact is not known), and whether the set is complete.
#[derive(Debug)]
pub struct Fetched {
    pub kind: Search,
    pub pages: Vec<Contents>,
    pub result: Result<(), FetchFailure>,
}

/// What one search fetches: a kind of data the rules need, or the patient's AllergyIntolerances (which change
/// no verdict, only which analgesic a card names first, so their absence is never a missing kind of data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    Data(DataKind),
    Allergies,
}

impl Search {
    /// The FHIR resource type searched.
    pub fn resource_type(self) -> &'static str {
        match self {
            Search::Data(kind) => kind.resource_type(),
            Search::Allergies => "AllergyIntolerance",
        }
    }
}

/// The shared HTTP machinery and policy. Cheap to share: one connection pool for the whole service.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    pub settings: FetchSettings,
    /// Origins any caller may name (from configuration).
    pub allowlist: Allowlist,
}

impl Fetcher {
    pub fn new(http: reqwest::Client, settings: FetchSettings, allowlist: Allowlist) -> Self {
        Fetcher {
            http,
            settings,
            allowlist,
        }
    }

    /// Decides whether this request's `fhirServer` may be called; `caller` is the authenticated client's own
    /// allowlist, if any. Returns the parsed base URL.
    pub fn check_server(
        &self,
        fhir_server: &str,
        has_token: bool,
        caller: Option<&Allowlist>,
    ) -> Result<Url, FetchFailure> {
        let mut url = Url::parse(fhir_server).map_err(|_| FetchFailure::BadServer)?;
        let origin = safe_origin(&url).ok_or(FetchFailure::BadServer)?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(FetchFailure::BadServer);
        }
        let allowed =
            self.allowlist.permits(&origin, has_token) || caller.is_some_and(|c| c.permits(&origin, has_token));
        if !allowed {
            return Err(FetchFailure::NotAllowed);
        }
        // A base URL must end with `/` for `join` to append rather than replace its last segment.
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(url)
    }

    /// Fetches every kind in `wanted` in parallel, within the deadline. Never fails as a whole: each kind
    /// reports its own result.
    pub async fn fetch(&self, base: Url, target: Target<'_>, wanted: Vec<(Search, Start)>) -> Vec<Fetched> {
        let deadline = Instant::now() + self.settings.deadline;
        let client = match self.client(&base, target.access_token) {
            Ok(client) => client,
            Err(failure) => {
                return wanted
                    .into_iter()
                    .map(|(kind, _)| Fetched {
                        kind,
                        pages: Vec::new(),
                        result: Err(failure),
                    })
                    .collect();
            }
        };
        let origin = base.origin();
        let searches = wanted.into_iter().map(|(kind, start)| {
            let client = &client;
            let origin = &origin;
            let base = &base;
            async move {
                let first = match start {
                    Start::Search => search_url(base, kind, target.patient_id),
                    Start::NextPage(next) => base.join(&next).ok(),
                };
                let mut pages = Vec::new();
                let result = match first {
                    None => Err(FetchFailure::OtherOrigin),
                    Some(first) => {
                        match timeout_at(deadline, self.fetch_pages(client, origin, first, &mut pages)).await {
                            Ok(result) => result,
                            Err(_) => Err(FetchFailure::Deadline),
                        }
                    }
                };
                Fetched { kind, pages, result }
            }
        });
        join_all(searches).await
    }

    /// A fhir-sdk client for one CDS request: it carries the caller's token (marked sensitive so no `Debug`
    /// prints it), refuses URLs of another origin, and never retries (the deadline leaves no room for it).
    fn client(&self, base: &Url, token: Option<&str>) -> Result<Client<FhirR4B>, FetchFailure> {
        let mut settings = RequestSettings::default()
            .retries(0)
            .timeout(Some(self.settings.deadline));
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| FetchFailure::BadToken)?;
            value.set_sensitive(true);
            settings = settings.header(AUTHORIZATION, value);
        }
        Client::<FhirR4B>::builder()
            .base_url(base.clone())
            .client(self.http.clone())
            .request_settings(settings)
            // R4 servers answer `fhirVersion=4.0`; R4B shares its major version, but some send none or 4.0.1
            // in odd forms: the body is checked by shape instead.
            .allow_version_mismatch()
            .build()
            .map_err(|_| FetchFailure::BadServer)
    }

    async fn fetch_pages(
        &self,
        client: &Client<FhirR4B>,
        origin: &url::Origin,
        first: Url,
        pages: &mut Vec<Contents>,
    ) -> Result<(), FetchFailure> {
        let mut url = first;
        let mut entries = 0;
        loop {
            if url.origin() != *origin {
                return Err(FetchFailure::OtherOrigin);
            }
            let body = self.get(client, url).await?;
            // Read no more entries than the fetch may still take: one past it already fails the fetch.
            let room = (self.settings.max_entries + 1).saturating_sub(entries);
            let mut contents = parse_contents(&body, room).map_err(|_| FetchFailure::NotABundle)?;
            if !contents.bundle {
                return Err(if contents.outcome_error() {
                    FetchFailure::OutcomeError
                } else {
                    FetchFailure::NotABundle
                });
            }
            entries += contents.resources.len() + contents.skipped;
            let next = contents.next.take();
            let failed = contents.outcome_error();
            pages.push(contents);
            if failed {
                return Err(FetchFailure::OutcomeError);
            }
            if entries > self.settings.max_entries {
                return Err(FetchFailure::TooManyEntries);
            }
            let Some(next) = next else {
                return Ok(());
            };
            if pages.len() >= self.settings.max_pages {
                return Err(FetchFailure::TooManyPages);
            }
            url = Url::parse(&next).map_err(|_| FetchFailure::OtherOrigin)?;
        }
    }

    /// One GET through the fhir-sdk client; the body is read here, in chunks, up to the cap.
    async fn get(&self, client: &Client<FhirR4B>, url: Url) -> Result<String, FetchFailure> {
        let mut response = client
            .send_custom_request(|http| http.get(url).header(ACCEPT, "application/fhir+json, application/json"))
            .await
            .map_err(|_| FetchFailure::Transport)?;
        if !response.status().is_success() {
            return Err(FetchFailure::Status);
        }
        let body = read_capped(&mut response, self.settings.max_body_bytes).await?;
        String::from_utf8(body).map_err(|_| FetchFailure::NotABundle)
    }
}

/// Reads a response body chunk by chunk, giving up as soon as it passes `limit` bytes (a declared
/// `Content-Length` over the limit is refused before reading anything).
pub async fn read_capped(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, FetchFailure> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchFailure::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| FetchFailure::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The prefetch template's search for one kind, with the patient id substituted (and encoded): the medication
/// searches `_include` the Medications their entries reference, as the templates do.
pub fn search_url(base: &Url, kind: Search, patient_id: &str) -> Option<Url> {
    let mut url = base.join(kind.resource_type()).ok()?;
    url.query_pairs_mut().append_pair("patient", patient_id);
    let include = match kind {
        Search::Data(DataKind::MedicationStatements) => Some("MedicationStatement:medication"),
        Search::Data(DataKind::MedicationRequests) => Some("MedicationRequest:medication"),
        Search::Data(DataKind::Conditions | DataKind::Procedures) | Search::Allergies => None,
    };
    if let Some(include) = include {
        // Written as the template writes it (`:` needs no escape in a query).
        let query = format!("{}&_include={include}", url.query().unwrap_or_default());
        url.set_query(Some(&query));
    }
    Some(url)
}

/// The shared HTTP client: time-outs, and redirects followed only within the origin of the request.
pub fn http_client() -> reqwest::Client {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin || attempt.previous().len() > 3 {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("dry-needling-cds/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher() -> Fetcher {
        let allowlist = Allowlist {
            servers: vec!["https://ehr.example.org".to_string()],
            open_servers: vec!["https://open.example.org".to_string(), "http://127.0.0.1:9".to_string()],
            fhir_base: None,
        };
        Fetcher::new(http_client(), FetchSettings::default(), allowlist)
    }

    #[test]
    fn only_allowlisted_safe_origins_are_called() {
        let f = fetcher();
        let ok = |server: &str, token: bool| f.check_server(server, token, None);
        assert!(ok("https://ehr.example.org/fhir", true).is_ok());
        assert_eq!(ok("https://ehr.example.org/fhir", false), Err(FetchFailure::NotAllowed));
        assert!(ok("https://open.example.org/r4", false).is_ok());
        assert_eq!(
            ok("https://ehr.example.org:8443/fhir", true),
            Err(FetchFailure::NotAllowed)
        );
        assert_eq!(ok("http://ehr.example.org/fhir", true), Err(FetchFailure::BadServer));
        assert_eq!(ok("https://evil.example.org/fhir", true), Err(FetchFailure::NotAllowed));
        assert_eq!(
            ok("https://user:pw@ehr.example.org/fhir", true),
            Err(FetchFailure::BadServer)
        );
        assert_eq!(ok("file:///etc/passwd", true), Err(FetchFailure::BadServer));
        assert_eq!(ok("not a url", true), Err(FetchFailure::BadServer));
        assert_eq!(ok("http://127.0.0.1:10/fhir", true), Err(FetchFailure::NotAllowed));
        let caller = Allowlist {
            servers: vec!["https://other.example.org".to_string()],
            open_servers: Vec::new(),
            fhir_base: None,
        };
        assert!(
            f.check_server("https://other.example.org/fhir", true, Some(&caller))
                .is_ok()
        );
    }

    #[test]
    fn loopback_only_the_listed_origin() {
        // A loopback server is called only when the operator listed it, port included: a caller cannot pick
        // another local port (or another name for the same host).
        let f = fetcher();
        assert!(f.check_server("http://127.0.0.1:9/fhir", false, None).is_ok());
        for other in [
            "http://localhost:9/fhir",
            "http://[::1]:9/fhir",
            "http://127.0.0.1:8080/fhir",
            "http://127.0.0.2:9/",
        ] {
            assert_eq!(
                f.check_server(other, false, None),
                Err(FetchFailure::NotAllowed),
                "{other}"
            );
        }
        assert_eq!(
            f.check_server("http://127.0.0.1.example.org/fhir", false, None),
            Err(FetchFailure::BadServer)
        );
    }

    #[test]
    fn search_urls_encode_the_patient_id() {
        let base = fetcher()
            .check_server("https://ehr.example.org/fhir/r4", true, None)
            .unwrap();
        let url = search_url(&base, Search::Data(DataKind::MedicationStatements), "a b&c=d").unwrap();
        assert_eq!(
            url.as_str(),
            "https://ehr.example.org/fhir/r4/MedicationStatement?patient=a+b%26c%3Dd&_include=MedicationStatement:medication"
        );
        let url = search_url(&base, Search::Data(DataKind::Conditions), "p#1").unwrap();
        assert_eq!(url.as_str(), "https://ehr.example.org/fhir/r4/Condition?patient=p%231");
        let url = search_url(&base, Search::Allergies, "p1").unwrap();
        assert_eq!(
            url.as_str(),
            "https://ehr.example.org/fhir/r4/AllergyIntolerance?patient=p1"
        );
    }
}
