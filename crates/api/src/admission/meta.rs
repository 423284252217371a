//! Object metadata rules shared by every kind (Kubernetes' `ValidateObjectMeta`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{FieldError, FieldPath};

/// Which Kubernetes name rule an object's name must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// At most 63 lowercase alphanumerics or `-`, starting and ending alphanumeric.
    Dns1123Label,
    /// Dot-separated DNS-1123 labels, at most 253 characters.
    Dns1123Subdomain,
}

/// Total size limit of all annotations (keys plus values), as in Kubernetes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_dns1123_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// Problems with `s` as a DNS-1123 label (empty when valid), in Kubernetes' words.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_MAX {
        errs.push(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !is_dns1123_label_shape(s) {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
             end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

/// Problems with `s` as a DNS-1123 subdomain (empty when valid), in Kubernetes' words.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(is_dns1123_label_shape) {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
             start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errs
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_alnum(first)
                && is_alnum(last)
                && b.iter()
                    .all(|&c| is_alnum(c) || c == b'-' || c == b'_' || c == b'.')
        }
        _ => false,
    }
}

/// Problems with `s` as a qualified name (`[prefix/]name`, used by label and annotation keys
/// and finalizers); empty when valid.
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|e| format!("prefix part {e}")),
                );
            }
            *name
        }
        _ => {
            errs.push(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
                 with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')"
                    .to_string(),
            );
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > LABEL_MAX {
            errs.push(format!(
                "name part must be no more than {LABEL_MAX} characters"
            ));
        }
        if !is_qualified_name_part(name) {
            errs.push(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
                 alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is \
                 '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                    .to_string(),
            );
        }
    }
    errs
}

/// Problems with `s` as a label value (empty when valid).
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_MAX {
        errs.push(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345', regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

fn name_errors(rule: NameRule, s: &str) -> Vec<String> {
    match rule {
        NameRule::Dns1123Label => dns1123_label_errors(s),
        NameRule::Dns1123Subdomain => dns1123_subdomain_errors(s),
    }
}

/// Validates a label map (keys qualified names, values at most 63 characters) at `path`.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels {
        for problem in qualified_name_errors(key) {
            errs.push(FieldError::invalid(path, format!("{key:?}: {problem}")));
        }
        for problem in label_value_errors(value) {
            errs.push(FieldError::invalid(
                path.key(key),
                format!("{value:?}: {problem}"),
            ));
        }
    }
    errs
}

/// Validates the metadata every object shares, under the path `metadata`: the name (required
/// unless `generateName` is set, following `name_rule`), the namespace (required if `namespaced`,
/// forbidden otherwise), labels, annotations (keys, total size at most 256 KiB) and finalizers.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    name_rule: NameRule,
) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();

    let name = meta.name.as_deref().unwrap_or_default();
    let generate_name = meta.generate_name.as_deref().unwrap_or_default();
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                path.child("name"),
                "name or generateName is required",
            ));
        } else {
            // The prefix gets a random suffix, so only check it without its trailing dash.
            let prefix = generate_name.strip_suffix('-').unwrap_or(generate_name);
            for problem in name_errors(name_rule, prefix) {
                errs.push(FieldError::invalid(
                    path.child("generateName"),
                    format!("{generate_name:?}: {problem}"),
                ));
            }
        }
    } else {
        for problem in name_errors(name_rule, name) {
            errs.push(FieldError::invalid(
                path.child("name"),
                format!("{name:?}: {problem}"),
            ));
        }
    }

    let namespace = meta.namespace.as_deref().unwrap_or_default();
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(
                path.child("namespace"),
                "namespace is required",
            ));
        } else {
            for problem in dns1123_label_errors(namespace) {
                errs.push(FieldError::invalid(
                    path.child("namespace"),
                    format!("{namespace:?}: {problem}"),
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        ));
    }

    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, &path.child("labels")));
    }

    if let Some(annotations) = &meta.annotations {
        let apath = path.child("annotations");
        let mut total = 0usize;
        for (key, value) in annotations {
            for problem in qualified_name_errors(&key.to_lowercase()) {
                errs.push(FieldError::invalid(&apath, format!("{key:?}: {problem}")));
            }
            total = total.saturating_add(key.len()).saturating_add(value.len());
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(
                &apath,
                format!("annotations are {total} bytes; they may not be longer than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
            ));
        }
    }

    if let Some(finalizers) = &meta.finalizers {
        let fpath = path.child("finalizers");
        for (i, finalizer) in finalizers.iter().enumerate() {
            for problem in qualified_name_errors(finalizer) {
                errs.push(FieldError::invalid(
                    fpath.index(i),
                    format!("{finalizer:?}: {problem}"),
                ));
            }
        }
        let has = |f: &str| finalizers.iter().any(|x| x == f);
        if has("orphan") && has("foregroundDeletion") {
            errs.push(FieldError::invalid(
                &fpath,
                "finalizers \"orphan\" and \"foregroundDeletion\" cannot both be set",
            ));
        }
    }

    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::FieldErrorKind;

    fn meta(name: &str, ns: &str) -> ObjectMeta {
        ObjectMeta {
            name: (!name.is_empty()).then(|| name.to_string()),
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert!(dns1123_label_errors("vm-1").is_empty());
        assert!(!dns1123_label_errors("VM").is_empty());
        assert!(!dns1123_label_errors("-a").is_empty());
        assert!(!dns1123_label_errors("a-").is_empty());
        assert!(!dns1123_label_errors("").is_empty());
        assert!(!dns1123_label_errors("a.b").is_empty());
        assert_eq!(dns1123_label_errors(&"a".repeat(64)).len(), 1);
        assert!(dns1123_subdomain_errors("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain_errors("a..b").is_empty());
        assert!(!dns1123_subdomain_errors(&"a".repeat(254)).is_empty());
        assert!(qualified_name_errors("kubevirt.io/vm").is_empty());
        assert!(qualified_name_errors("App_Name.1").is_empty());
        assert!(!qualified_name_errors("/x").is_empty());
        assert!(!qualified_name_errors("a/b/c").is_empty());
        assert!(!qualified_name_errors("Bad_Prefix/x").is_empty());
        assert!(!qualified_name_errors("x/").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_3").is_empty());
        assert!(!label_value_errors("has space").is_empty());
        assert!(!label_value_errors(&"v".repeat(64)).is_empty());
    }

    #[test]
    fn valid_meta() {
        assert!(
            validate_object_meta(&meta("vm1", "default"), true, NameRule::Dns1123Label).is_empty()
        );
        assert!(validate_object_meta(
            &meta("node1.example", ""),
            false,
            NameRule::Dns1123Subdomain
        )
        .is_empty());
    }

    #[test]
    fn name_required_unless_generate_name() {
        let errs = validate_object_meta(&meta("", "default"), true, NameRule::Dns1123Label);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "metadata.name");
        assert_eq!(errs[0].kind, FieldErrorKind::Required);
        let mut m = meta("", "default");
        m.generate_name = Some("vm-".into());
        assert!(validate_object_meta(&m, true, NameRule::Dns1123Label).is_empty());
        m.generate_name = Some("VM-".into());
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Label);
        assert_eq!(errs[0].path, "metadata.generateName");
    }

    #[test]
    fn name_rule() {
        let errs = validate_object_meta(&meta("My_VM", "default"), true, NameRule::Dns1123Label);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "metadata.name");
        assert!(
            errs[0]
                .message
                .starts_with("\"My_VM\": a lowercase RFC 1123 label"),
            "{}",
            errs[0].message
        );
        let errs = validate_object_meta(&meta("a.b", "default"), true, NameRule::Dns1123Label);
        assert_eq!(errs[0].path, "metadata.name");
        assert!(
            validate_object_meta(&meta("a.b", "default"), true, NameRule::Dns1123Subdomain)
                .is_empty()
        );
    }

    #[test]
    fn namespace_presence() {
        let errs = validate_object_meta(&meta("vm1", ""), true, NameRule::Dns1123Label);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("metadata.namespace", FieldErrorKind::Required)
        );
        let errs = validate_object_meta(&meta("n1", "default"), false, NameRule::Dns1123Subdomain);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("metadata.namespace", FieldErrorKind::Forbidden)
        );
        let errs = validate_object_meta(&meta("vm1", "Bad"), true, NameRule::Dns1123Label);
        assert_eq!(errs[0].path, "metadata.namespace");
    }

    #[test]
    fn labels() {
        let mut m = meta("vm1", "default");
        m.labels = Some(BTreeMap::from([
            ("ok.io/app".to_string(), "web".to_string()),
            ("bad key".to_string(), "x".to_string()),
            ("k".to_string(), "v".repeat(64)),
        ]));
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Label);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs
            .iter()
            .any(|e| e.path == "metadata.labels" && e.message.starts_with("\"bad key\"")));
        assert!(errs
            .iter()
            .any(|e| e.path == "metadata.labels[k]" && e.message.contains("63")));
    }

    #[test]
    fn annotations() {
        let mut m = meta("vm1", "default");
        m.annotations = Some(BTreeMap::from([(
            "Example.COM/Key".to_string(),
            "x".to_string(),
        )]));
        assert!(validate_object_meta(&m, true, NameRule::Dns1123Label).is_empty());
        m.annotations = Some(BTreeMap::from([("a b".to_string(), "x".to_string())]));
        assert_eq!(
            validate_object_meta(&m, true, NameRule::Dns1123Label)[0].path,
            "metadata.annotations"
        );
        m.annotations = Some(BTreeMap::from([(
            "big".to_string(),
            "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT),
        )]));
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Label);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("metadata.annotations", FieldErrorKind::TooLong)
        );
        m.annotations = Some(BTreeMap::from([(
            "b".to_string(),
            "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1),
        )]));
        assert!(validate_object_meta(&m, true, NameRule::Dns1123Label).is_empty());
    }

    #[test]
    fn finalizers() {
        let mut m = meta("vm1", "default");
        m.finalizers = Some(vec![
            "kubevirt.io/foregroundDeleteVirtualMachine".into(),
            "bad finalizer".into(),
        ]);
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Label);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "metadata.finalizers[1]");
        m.finalizers = Some(vec!["orphan".into(), "foregroundDeletion".into()]);
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Label);
        assert_eq!(errs[0].path, "metadata.finalizers");
    }
}
