//! Kubernetes `Status` objects for refused requests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use crate::admission::FieldError;

/// The `StatusCause` for one field error: reason, `<Kind label>: <detail>` and field path.
pub fn status_cause(error: &FieldError) -> StatusCause {
    StatusCause {
        reason: Some(error.cause_type().to_string()),
        message: Some(format!("{}: {}", error.kind.label(), error.message)),
        field: Some(error.path.clone()),
    }
}

/// A 422 `Invalid` status in the API server's style:
/// `VirtualMachine.kubevirt.io "vm1" is invalid: spec.running: Invalid value: ...; spec.x: ...`,
/// with `details.causes` listing each error.
pub fn invalid_status(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Status {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut message = format!("{qualified} {name:?} is invalid");
    if !errors.is_empty() {
        let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        message.push_str(": ");
        message.push_str(&parts.join("; "));
    }
    Status {
        code: Some(422),
        status: Some("Failure".to_string()),
        reason: Some("Invalid".to_string()),
        message: Some(message),
        details: Some(StatusDetails {
            name: Some(name.to_string()),
            group: Some(group.to_string()),
            kind: Some(kind.to_string()),
            causes: Some(errors.iter().map(status_cause).collect()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// [`invalid_status`] for a kind `K`, e.g. `invalid::<VirtualMachine>("vm1", &errors)`.
pub fn invalid<K: k8s_openapi::Resource>(name: &str, errors: &[FieldError]) -> Status {
    invalid_status(K::KIND, K::GROUP, name, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubevirt::VirtualMachine;
    use serde_json::json;

    #[test]
    fn invalid_vm_status() {
        let errors = vec![
            FieldError::invalid(
                "spec.running",
                "true: running and runStrategy are mutually exclusive",
            ),
            FieldError::not_supported_yet("spec.dataVolumeTemplates", "dataVolumeTemplates"),
        ];
        let status = invalid::<VirtualMachine>("vm1", &errors);
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["code"], 422);
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "Invalid");
        assert_eq!(
            v["message"],
            "VirtualMachine.kubevirt.io \"vm1\" is invalid: spec.running: Invalid value: true: running and \
             runStrategy are mutually exclusive; spec.dataVolumeTemplates: Unsupported value: dataVolumeTemplates \
             is not supported by ferrovirt yet"
        );
        assert_eq!(v["details"]["name"], "vm1");
        assert_eq!(v["details"]["group"], "kubevirt.io");
        assert_eq!(v["details"]["kind"], "VirtualMachine");
        assert_eq!(
            v["details"]["causes"],
            json!([
                {"reason": "FieldValueInvalid", "message": "Invalid value: true: running and runStrategy are mutually exclusive", "field": "spec.running"},
                {"reason": "FieldValueNotSupported", "message": "Unsupported value: dataVolumeTemplates is not supported by ferrovirt yet", "field": "spec.dataVolumeTemplates"}
            ])
        );
    }

    #[test]
    fn core_group_has_no_suffix() {
        let s = invalid_status("Pod", "", "p", &[]);
        assert_eq!(s.message.as_deref(), Some("Pod \"p\" is invalid"));
    }
}
