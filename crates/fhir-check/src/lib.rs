//! Checks that a JSON resource is one fhir-sdk's R4 (r4b) models accept.
//!
//! Why a crate of its own: serde code is generic, so it is compiled in the crate that calls
//! `serde_json::from_value::<ServiceRequest>`, not in fhir-model. `ServiceRequest.contained` holds any resource,
//! so that one call instantiates deserialisers for every R4 resource type: about two thirds of the service's
//! LLVM IR (`cargo llvm-lines --release`), all at opt-level 3, for a check that runs a few times at start-up.
//! Behind this plain, non-generic function the code is instantiated here, and the workspace's release profile
//! builds this crate without optimisation.

#![forbid(unsafe_code)]

/// Ok when `value` deserialises as an R4 `ServiceRequest`; otherwise serde's message (which may quote values
/// from `value`: use it only for content the service ships, never for patient data).
pub fn service_request(value: serde_json::Value) -> Result<(), String> {
    serde_json::from_value::<fhir_sdk::r4b::resources::ServiceRequest>(value)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Ok when `value` deserialises as an R4 `ValueSet` (the FHIR export's value sets); otherwise serde's message.
pub fn value_set(value: serde_json::Value) -> Result<(), String> {
    serde_json::from_value::<fhir_sdk::r4b::resources::ValueSet>(value)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Ok when `value` deserialises as an R4 `PlanDefinition` (the FHIR export's services); otherwise serde's
/// message. fhir-sdk reads `Expression.language` as a closed list (`text/cql`, `text/fhirpath`…), where R4's
/// binding is extensible: a condition in words (`text/plain`, valid R4) fails here for that reason alone.
pub fn plan_definition(value: serde_json::Value) -> Result<(), String> {
    serde_json::from_value::<fhir_sdk::r4b::resources::PlanDefinition>(value)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_valid_and_refuses_an_invalid_service_request() {
        let valid = serde_json::json!({
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": "Patient/example"},
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97140"}]}
        });
        assert_eq!(service_request(valid.clone()), Ok(()));
        let mut no_status = valid.clone();
        no_status.as_object_mut().unwrap().remove("status");
        assert!(service_request(no_status).is_err());
        let mut bad_status = valid;
        bad_status["status"] = "not-a-status".into();
        assert!(service_request(bad_status).is_err());
    }
}
