//! The composition root: the application's state built from a deployment's configuration.
//!
//! Why a module of its own: deciding what a deployment serves (the access mode from the trusted clients and the
//! listen address, the FHIR allowlists, the testing aids' defaults, who may read analytics) needs both the
//! configuration and the edge's types. Kept in `http`, it made `http` and `config` import each other; here the
//! edge knows nothing of the configuration file, the configuration knows nothing of the state, and this one
//! function joins them (as crates.io's `App` does).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Verifier;
use crate::companion::SandboxCompanion;
use crate::config::Config;
use crate::content::Knowledge;
use crate::fetch::{Fetcher, http_client};
use crate::http::{Access, Admission, AnalyticsAccess, AppState, FhirRoutes, LoopbackHosts, StartError};
use crate::web::Workbench;

impl AppState {
    /// The state for a deployment: access mode from the trusted clients and the listen address, FHIR
    /// allowlists and limits from the configuration.
    ///
    /// Without trusted clients the service accepts unsigned requests, which is safe only while nobody but this
    /// machine can reach it: on any other address it refuses to start unless `insecure_no_auth` is given.
    pub fn configure(
        knowledge: Knowledge,
        config: Config,
        listen: SocketAddr,
        insecure_no_auth: bool,
    ) -> Result<AppState, StartError> {
        let http = http_client();
        let loopback = listen.ip().is_loopback();
        let access = if config.clients.is_empty() {
            if !loopback && !insecure_no_auth {
                return Err(StartError::NoTrustedClients(listen));
            }
            Access::Open
        } else {
            let Some(base) = config.public_base_url.as_deref() else {
                return Err(StartError::NoPublicBaseUrl);
            };
            // A tenant's `services` name the content's clinical services (the companion has its own switch).
            for client in &config.clients {
                for tenant in &client.tenants {
                    let unknown = tenant
                        .services
                        .iter()
                        .flatten()
                        .find(|id| !knowledge.services.iter().any(|s| &s.id == *id));
                    if let Some(service) = unknown {
                        let known: Vec<&str> = knowledge.services.iter().map(|s| s.id.as_str()).collect();
                        return Err(StartError::UnknownTenantService {
                            issuer: client.issuer.clone(),
                            tenant: tenant.id.clone(),
                            service: service.clone(),
                            known: known.join(", "),
                        });
                    }
                }
            }
            Access::Verify(Box::new(Verifier::new(config.clients, base, http.clone())))
        };
        // Every FHIR server, loopback ones included, must be on an allowlist the operator wrote: a caller never
        // picks one. (Open mode once allowed any loopback server, and then any web page could make the service
        // read a local server it named and show the data in a card.)
        let fetcher = Fetcher::new(http, config.fetch, config.allowlist);
        // The workbench is a development tool: on by default only where the service is open on loopback.
        let workbench = match config.workbench {
            Some(true) => Workbench::On,
            Some(false) => Workbench::Off,
            None if loopback && matches!(access, Access::Open) => Workbench::On,
            None => Workbench::Off,
        };
        // The sandbox companion too is a testing aid, with the workbench's default: on only where the service is
        // open on loopback; anywhere else (and always with trusted clients) only when the configuration says so.
        let sandbox_companion = match config.sandbox_companion {
            Some(true) => SandboxCompanion::On,
            Some(false) => SandboxCompanion::Off,
            None if loopback && matches!(access, Access::Open) => SandboxCompanion::On,
            None => SandboxCompanion::Off,
        };
        // The content as FHIR is the content, no patient's data: served where the hooks need no token, and with
        // trusted clients only when the configuration says so. Computed here, once, before the first request.
        let fhir_export = match (config.export_routes, &access) {
            (Some(true), _) | (None, Access::Open) => FhirRoutes::on(),
            _ => FhirRoutes::Off,
        };
        fhir_export.prepare(&knowledge);
        // Analytics answer without a credential only where nobody but this machine can call (open on loopback)
        // and none is configured; with trusted clients they need their own credential, or are off.
        let analytics = match (config.analytics_token_sha256, &access) {
            (Some(digest), _) => AnalyticsAccess::Token(digest),
            (None, Access::Open) if loopback => AnalyticsAccess::Open,
            (None, _) => AnalyticsAccess::Off,
        };
        let loopback_hosts_only = (loopback && matches!(access, Access::Open)).then(|| LoopbackHosts {
            public_host: config
                .public_base_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase)),
        });
        Ok(AppState {
            analytics,
            loopback_hosts_only,
            access: Arc::new(access),
            fetcher: Arc::new(fetcher),
            limits: config.limits,
            admission: Admission::new(config.admission),
            workbench,
            sandbox_companion,
            fhir_export,
            missing_data: config.missing_data,
            ..AppState::new(knowledge)
        })
    }
}
