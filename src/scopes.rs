//! The SMART on FHIR scopes of `fhirAuthorization.scope`, read once where the request is read
//! ([`crate::wire::parse_hook_request`]), and the one question the fetch asks of them: may this token search
//! this resource type ([`Scopes::permits_search`])?
//!
//! Why: a search the token cannot perform is refused by the FHIR server (a 401 or 403, or worse an empty Bundle
//! that reads as "the patient has none"), after a round trip inside the clinician's wait. Knowing the scopes, the
//! service sends only the searches the token allows, and says which scope is missing instead of a vague 412.
//!
//! The rules (docs/scopes.md has the table):
//! - Resource scopes are `context/Type.permissions`, `context` one of `patient`, `user`, `system` (all three
//!   count: the context decides *which* records the server shows, not whether the search may be sent), `Type` a
//!   FHIR resource type or `*`. SMART v1 permissions: `read` (read and search), `write`, `*` (everything);
//!   SMART v2: the letters `c r u d s`, at least one, each once, in that order.
//! - A search needs **both** `r` and `s` in v2: it answers with the resources themselves, which is reading them,
//!   and SMART's own "read and search" is `rs`. `r` alone allows only reads by id; `s` alone only the search
//!   interaction, whose results a server may withhold. v1 `read` (and `*`) grants both.
//! - Grants add up across scopes: `patient/Condition.r patient/Condition.s` allows the search.
//! - A scope with query parameters (`patient/Observation.rs?category=…`) grants only the resources matching
//!   them; the service's searches ask for all of the patient's resources of a type, and a filtered answer would
//!   look complete while missing facts. So a parameterised scope grants nothing here (conservative); only an
//!   unparameterised scope for the type or `*` allows the search.
//! - Anything that is not a well-formed resource scope (`openid`, `fhirUser`, `launch`, `launch/patient`,
//!   `online_access`, `offline_access`, a misspelt permission) grants nothing and is otherwise ignored.
//! - An absent or blank `scope` is not a refusal: the token's reach is unknown, every search is sent and the
//!   server decides, as before the scopes were read.

/// The interactions a scope grants on a resource type, as SMART v2 letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    pub const CREATE: Permissions = Permissions(1);
    pub const READ: Permissions = Permissions(2);
    pub const UPDATE: Permissions = Permissions(4);
    pub const DELETE: Permissions = Permissions(8);
    pub const SEARCH: Permissions = Permissions(16);
    pub const NONE: Permissions = Permissions(0);
    pub const ALL: Permissions = Permissions(31);

    /// Every permission of `other` is in `self`.
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// SMART v1 `read`, `write`, `*`, or SMART v2 letters in the order `cruds`, each at most once; `None` for
    /// anything else.
    fn parse(text: &str) -> Option<Permissions> {
        match text {
            "read" => return Some(Permissions::READ.union(Permissions::SEARCH)),
            "write" => {
                return Some(Permissions(
                    Permissions::CREATE.0 | Permissions::UPDATE.0 | Permissions::DELETE.0,
                ));
            }
            "*" => return Some(Permissions::ALL),
            "" => return None,
            _ => {}
        }
        let mut granted = Permissions::NONE;
        let mut order = "cruds".chars().zip([
            Permissions::CREATE,
            Permissions::READ,
            Permissions::UPDATE,
            Permissions::DELETE,
            Permissions::SEARCH,
        ]);
        for letter in text.chars() {
            // Each letter must come after the previous one in `cruds`: `rs`, never `sr` or `rr`.
            let (_, permission) = order.by_ref().find(|(l, _)| *l == letter)?;
            granted = granted.union(permission);
        }
        Some(granted)
    }
}

/// Whose records a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Patient,
    User,
    System,
}

/// One resource scope, as granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub context: Context,
    /// `None` for `*`, every resource type.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
    /// The scope had query parameters (`?category=…`): it grants only the matching resources.
    pub parameterised: bool,
}

/// The resource scopes a token grants: what `fhirAuthorization.scope` says, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    grants: Vec<Grant>,
}

impl Scopes {
    /// Reads a space-separated OAuth scope string. Never fails: what is not a well-formed resource scope grants
    /// nothing.
    pub fn parse(text: &str) -> Scopes {
        Scopes {
            grants: text.split_ascii_whitespace().filter_map(grant).collect(),
        }
    }

    /// The resource scopes read, in the order given.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// What the unparameterised scopes together grant on `resource_type` (those for `*` included).
    pub fn permissions(&self, resource_type: &str) -> Permissions {
        self.grants
            .iter()
            .filter(|g| !g.parameterised)
            .filter(|g| g.resource_type.as_deref().is_none_or(|t| t == resource_type))
            .fold(Permissions::NONE, |granted, g| granted.union(g.permissions))
    }

    /// Whether the token may search `resource_type` for all of the patient's resources: read and search, from
    /// scopes without query parameters.
    pub fn permits_search(&self, resource_type: &str) -> bool {
        self.permissions(resource_type)
            .contains(Permissions::READ.union(Permissions::SEARCH))
    }
}

/// The scope that would let the service search `resource_type`, for messages: SMART v2 and v1 forms.
pub fn needed_for_search(resource_type: &str) -> String {
    format!("`patient/{resource_type}.rs` (SMART v2) or `patient/{resource_type}.read` (v1)")
}

/// One scope, if it is a well-formed resource scope.
fn grant(scope: &str) -> Option<Grant> {
    let (head, parameterised) = match scope.split_once('?') {
        Some((head, _)) => (head, true),
        None => (scope, false),
    };
    let (context, rest) = head.split_once('/')?;
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return None,
    };
    let (resource_type, permissions) = rest.split_once('.')?;
    let resource_type = match resource_type {
        "*" => None,
        name if is_resource_type(name) => Some(name.to_string()),
        _ => return None,
    };
    Some(Grant {
        context,
        resource_type,
        permissions: Permissions::parse(permissions)?,
        parameterised,
    })
}

/// A FHIR resource type's shape: an upper-case ASCII letter, then ASCII letters and digits.
fn is_resource_type(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [&str; 5] = [
        "Condition",
        "MedicationStatement",
        "MedicationRequest",
        "Procedure",
        "AllergyIntolerance",
    ];

    fn searchable(scope: &str) -> Vec<&'static str> {
        let scopes = Scopes::parse(scope);
        TYPES.into_iter().filter(|t| scopes.permits_search(t)).collect()
    }

    #[test]
    fn smart_v1_read_and_star_allow_search_write_does_not() {
        assert_eq!(searchable("patient/*.read"), TYPES);
        assert_eq!(searchable("user/*.read"), TYPES);
        assert_eq!(searchable("system/*.*"), TYPES);
        assert_eq!(searchable("patient/Condition.read"), ["Condition"]);
        assert_eq!(searchable("patient/Condition.*"), ["Condition"]);
        assert!(searchable("patient/*.write").is_empty());
        assert!(searchable("patient/Condition.write user/Procedure.write").is_empty());
    }

    #[test]
    fn smart_v2_needs_read_and_search() {
        assert_eq!(searchable("patient/Condition.rs"), ["Condition"]);
        assert_eq!(searchable("user/*.rs"), TYPES);
        assert_eq!(searchable("system/Procedure.cruds"), ["Procedure"]);
        assert_eq!(searchable("patient/*.cruds"), TYPES);
        // `r` alone reads by id; `s` alone searches without the right to read what comes back.
        assert!(searchable("patient/Condition.r").is_empty());
        assert!(searchable("patient/Condition.s").is_empty());
        assert!(searchable("system/Observation.r patient/*.cud").is_empty());
        // Grants add up across scopes.
        assert_eq!(searchable("patient/Condition.r user/Condition.s"), ["Condition"]);
        assert_eq!(searchable("patient/*.r patient/Procedure.s"), ["Procedure"]);
    }

    #[test]
    fn malformed_permissions_grant_nothing() {
        for scope in [
            "patient/Condition.sr",
            "patient/Condition.rrs",
            "patient/Condition.",
            "patient/Condition.READ",
            "patient/Condition.rsx",
            "patient/Condition.read.rs",
            "patient/condition.rs",
            "Patient/Condition.rs",
            "patient/Condition",
            "patient/.rs",
            "patient/Con-dition.rs",
            "*/Condition.rs",
            "patientCondition.rs",
        ] {
            assert!(searchable(scope).is_empty(), "{scope}");
        }
    }

    #[test]
    fn parameterised_scopes_grant_nothing_to_an_unfiltered_search() {
        assert!(searchable("patient/Condition.rs?category=problem-list-item").is_empty());
        assert!(searchable("patient/*.rs?_security=N").is_empty());
        // …but an unparameterised scope beside it still does.
        assert_eq!(
            searchable("patient/Condition.rs?category=encounter-diagnosis patient/Condition.read"),
            ["Condition"]
        );
        let scopes = Scopes::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        );
        assert_eq!(scopes.grants().len(), 1);
        assert!(scopes.grants()[0].parameterised);
        assert_eq!(scopes.grants()[0].resource_type.as_deref(), Some("Observation"));
        assert!(!scopes.permits_search("Observation"));
    }

    #[test]
    fn non_resource_scopes_are_ignored() {
        let scopes = Scopes::parse("openid fhirUser launch launch/patient online_access offline_access profile");
        assert!(scopes.grants().is_empty());
        let scopes = Scopes::parse(" openid\tpatient/Condition.rs\n launch/patient  ");
        assert_eq!(scopes.grants().len(), 1);
        assert_eq!(scopes.grants()[0].context, Context::Patient);
        assert!(scopes.permits_search("Condition"));
    }

    #[test]
    fn the_message_names_both_forms() {
        assert_eq!(
            needed_for_search("Procedure"),
            "`patient/Procedure.rs` (SMART v2) or `patient/Procedure.read` (v1)"
        );
    }

    fn scope_word() -> impl Strategy<Value = String> {
        let context = prop::sample::select(vec!["patient", "user", "system", "launch", "Patient", "*", ""]);
        let resource = prop::sample::select(vec!["*", "Condition", "Procedure", "Observation", "condition", ""]);
        let permission = prop::sample::select(vec![
            "read",
            "write",
            "*",
            "r",
            "s",
            "rs",
            "cruds",
            "sr",
            "cud",
            "rs?category=x",
            "",
            "READ",
        ]);
        (context, resource, permission, any::<bool>()).prop_map(|(c, r, p, slash)| {
            if slash {
                format!("{c}/{r}.{p}")
            } else {
                format!("{c}{r}{p}")
            }
        })
    }

    proptest! {
        /// Any text parses, and no grant comes from nothing: every grant has a permission.
        #[test]
        fn any_text_parses(text in "\\PC{0,80}") {
            let scopes = Scopes::parse(&text);
            prop_assert!(scopes.grants().iter().all(|g| g.permissions != Permissions::NONE));
        }

        /// Scopes only add: a search allowed by some scopes stays allowed whatever is added, in any order.
        #[test]
        fn adding_scopes_never_removes_a_permission(
            first in prop::collection::vec(scope_word(), 0..6),
            more in prop::collection::vec(scope_word(), 0..6),
        ) {
            let before = Scopes::parse(&first.join(" "));
            let mut all = more.clone();
            all.extend(first.iter().cloned());
            let after = Scopes::parse(&all.join(" "));
            for resource_type in ["Condition", "Procedure", "Observation"] {
                prop_assert!(!before.permits_search(resource_type) || after.permits_search(resource_type));
            }
        }

        /// Only an unparameterised scope with read and search (v1 `read`/`*`, v2 `r…s`) for the type or `*` allows
        /// the search.
        #[test]
        fn a_search_needs_an_unparameterised_read_and_search_scope(words in prop::collection::vec(scope_word(), 0..8)) {
            let scopes = Scopes::parse(&words.join(" "));
            let allows = |w: &str, t: &str| {
                let Some((context, rest)) = w.split_once('/') else { return (false, false) };
                let Some((resource, permission)) = rest.split_once('.') else { return (false, false) };
                let applies = ["patient", "user", "system"].contains(&context) && (resource == "*" || resource == t);
                let r = applies && ["read", "*", "r", "rs", "cruds"].contains(&permission);
                let s = applies && ["read", "*", "s", "rs", "cruds"].contains(&permission);
                (r, s)
            };
            for t in ["Condition", "Procedure"] {
                let read = words.iter().any(|w| allows(w, t).0);
                let search = words.iter().any(|w| allows(w, t).1);
                prop_assert_eq!(scopes.permits_search(t), read && search, "{:?} {}", words, t);
            }
        }
    }
}
