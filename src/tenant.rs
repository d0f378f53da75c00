//! Tenants: several sites behind one issuer, each with its own policy (docs/tenants.md).
//!
//! Oracle Health signs for all its tenants with one `iss` and tells them apart by the token's `tenant` claim;
//! Epic sites each have their own `iss`. So a trusted client (`[[client]]`) may list its tenants
//! (`[[client.tenants]]`), and each tenant may set what can differ between sites: the missing-data answer, the
//! sandbox companion, and which services it uses. Whatever a tenant does not set is the global policy's, read at
//! each call, so that a tenant never has to repeat the deployment's choices.
//!
//! The tenant is chosen by the *verified* token ([`crate::auth::Verified::tenant`]): a token whose `tenant` is
//! not listed for its issuer is refused before any policy is read, so a caller can never pick another site's
//! policy. No HTTP and no configuration file here: [`crate::config`] reads the tables, [`crate::http`] applies
//! the policy.

use crate::companion::SandboxCompanion;
use crate::service::{MissingDataOverride, MissingDataPolicy};

/// One tenant of a trusted client, as configured: its id (the token's `tenant` claim) and what it sets; `None`
/// (or an empty table) keeps the global policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    /// The `tenant` claim that chooses it: matched exactly (case and all).
    pub id: String,
    /// `missing_data = { … }`: laid over the global `[missing_data]`.
    pub missing_data: MissingDataOverride,
    /// `sandbox_companion = true | false`: `None` keeps the global setting.
    pub sandbox_companion: Option<bool>,
    /// `services = ["…"]`: the clinical services this tenant may call (and sees in discovery); `None`: all.
    pub services: Option<Vec<String>>,
}

impl Tenant {
    /// A tenant that sets nothing: the global policy under this id.
    pub fn new(id: impl Into<String>) -> Tenant {
        Tenant {
            id: id.into(),
            ..Tenant::default()
        }
    }

    /// The missing-data policy for this tenant's calls, `global` being `[missing_data]`.
    pub fn missing_data(&self, global: MissingDataPolicy) -> MissingDataPolicy {
        self.missing_data.over(global)
    }

    /// Whether the sandbox companion answers this tenant, `global` being the deployment's setting.
    pub fn sandbox_companion(&self, global: SandboxCompanion) -> SandboxCompanion {
        match self.sandbox_companion {
            Some(true) => SandboxCompanion::On,
            Some(false) => SandboxCompanion::Off,
            None => global,
        }
    }

    /// Whether this tenant may call the clinical service `id`.
    pub fn uses(&self, id: &str) -> bool {
        self.services.as_ref().is_none_or(|ids| ids.iter().any(|s| s == id))
    }
}

/// The policy one call runs under: the verified tenant's, or the global one (open mode, and clients without
/// `[[client.tenants]]`).
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy<'a> {
    pub tenant: Option<&'a Tenant>,
    pub global_missing_data: MissingDataPolicy,
    pub global_companion: SandboxCompanion,
}

impl CallPolicy<'_> {
    pub fn missing_data(&self) -> MissingDataPolicy {
        self.tenant
            .map_or(self.global_missing_data, |t| t.missing_data(self.global_missing_data))
    }

    pub fn sandbox_companion(&self) -> SandboxCompanion {
        self.tenant
            .map_or(self.global_companion, |t| t.sandbox_companion(self.global_companion))
    }

    pub fn uses(&self, service: &str) -> bool {
        self.tenant.is_none_or(|t| t.uses(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DataKind;
    use crate::service::MissingDataAnswer::{Card, Status412};

    #[test]
    fn what_a_tenant_does_not_set_is_the_global_policy() {
        let global = MissingDataPolicy::all(Status412).with(DataKind::Procedures, Card);
        let plain = Tenant::new("a");
        assert_eq!(plain.missing_data(global), global);
        assert_eq!(plain.sandbox_companion(SandboxCompanion::On), SandboxCompanion::On);
        assert_eq!(plain.sandbox_companion(SandboxCompanion::Off), SandboxCompanion::Off);
        assert!(plain.uses("anything"));
        let mut kinds = [None; 4];
        kinds[DataKind::Conditions as usize] = Some(Card);
        let tenant = Tenant {
            id: "b".into(),
            missing_data: MissingDataOverride { default: None, kinds },
            sandbox_companion: Some(false),
            services: Some(vec!["one".into()]),
        };
        assert_eq!(
            tenant.missing_data(global),
            global.with(DataKind::Conditions, Card),
            "a kind it sets, over the global's others"
        );
        assert_eq!(tenant.sandbox_companion(SandboxCompanion::On), SandboxCompanion::Off);
        assert!(tenant.uses("one") && !tenant.uses("two"));
        let all_card = Tenant {
            missing_data: MissingDataOverride {
                default: Some(Card),
                kinds: [None, None, Some(Status412), None],
            },
            ..Tenant::new("c")
        };
        assert_eq!(
            all_card.missing_data(MissingDataPolicy::default()),
            MissingDataPolicy::all(Card).with(DataKind::ALL[2], Status412),
            "its `default` replaces the global's kinds it does not list"
        );
    }
}
