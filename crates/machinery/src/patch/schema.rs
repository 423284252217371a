//! Merge schemas: how each field of a kind merges under a strategic merge patch.
//!
//! Kubernetes keeps this in Go struct tags (`patchStrategy:"merge" patchMergeKey:"name"`) and
//! publishes it in OpenAPI as `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`.
//! A [`MergeSchema`] holds the same facts keyed by field path: the JSON keys from the object's
//! root joined by `.`, list indices left out (`spec.containers.env` is the `env` of every
//! container). A field with no entry merges as JSON merge patch does: objects merge, lists are
//! replaced.
//!
//! The built-in schemas ([`core_schema`]) were checked against `staging/src/k8s.io/api/core/v1/types.go`
//! and `apimachinery/pkg/apis/meta/v1/types.go`.

use std::collections::HashMap;
use std::sync::LazyLock;

/// How one field merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldStrategy {
    /// `patchStrategy:"replace"` or no strategy on a list: the patch value replaces the field.
    Replace,
    /// `patchStrategy:"merge"`. A list of objects merges element by element, matching elements by
    /// `key` (`patchMergeKey`); a list of primitives (no key) becomes the union of both lists.
    Merge {
        /// The merge key for lists of objects; `None` for lists of primitives.
        key: Option<String>,
    },
}

/// The merge strategies of one kind's fields, keyed by field path (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeSchema {
    fields: HashMap<String, FieldStrategy>,
}

impl MergeSchema {
    /// A schema with no entries: every object merges and every list is replaced.
    pub fn new() -> Self {
        Self::default()
    }

    /// A schema with the entries every object shares through `metadata` (ObjectMeta):
    /// `metadata.finalizers` is a set, `metadata.ownerReferences` merges by `uid`,
    /// `metadata.managedFields` is replaced. `labels` and `annotations` are maps and merge.
    pub fn with_object_meta() -> Self {
        Self::new()
            .merge_set("metadata.finalizers")
            .merge_by_key("metadata.ownerReferences", "uid")
            .replace("metadata.managedFields")
    }

    /// Records that the list at `path` holds objects that merge by `key`.
    pub fn merge_by_key(mut self, path: &str, key: &str) -> Self {
        self.fields.insert(
            path.to_owned(),
            FieldStrategy::Merge {
                key: Some(key.to_owned()),
            },
        );
        self
    }

    /// Records that the list at `path` holds primitives and merges as a set (union).
    pub fn merge_set(mut self, path: &str) -> Self {
        self.fields
            .insert(path.to_owned(), FieldStrategy::Merge { key: None });
        self
    }

    /// Records that the field at `path` (a list or an object) is replaced wholesale.
    pub fn replace(mut self, path: &str) -> Self {
        self.fields.insert(path.to_owned(), FieldStrategy::Replace);
        self
    }

    /// The strategy recorded for `path`, if any.
    pub fn strategy(&self, path: &str) -> Option<&FieldStrategy> {
        self.fields.get(path)
    }

    /// Every recorded field path and its strategy, in no particular order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldStrategy)> {
        self.fields.iter().map(|(path, s)| (path.as_str(), s))
    }
}

/// The merge schema of a core (`v1`, or `coordination.k8s.io` for Lease) kind, by its `kind`
/// name. `None` for every other kind: the API server must then refuse strategic merge patch with
/// 415, as Kubernetes does for custom resources.
pub fn core_schema(kind: &str) -> Option<&'static MergeSchema> {
    let schema: &'static LazyLock<MergeSchema> = match kind {
        "Pod" => &POD,
        "Node" => &NODE,
        "Namespace" => &NAMESPACE,
        "Service" => &SERVICE,
        "Event" | "Lease" | "ConfigMap" | "Secret" => &OBJECT_META_ONLY,
        _ => return None,
    };
    Some(schema)
}

static OBJECT_META_ONLY: LazyLock<MergeSchema> = LazyLock::new(MergeSchema::with_object_meta);

static POD: LazyLock<MergeSchema> = LazyLock::new(|| {
    let mut schema = MergeSchema::with_object_meta()
        .merge_by_key("spec.volumes", "name")
        .merge_by_key("spec.imagePullSecrets", "name")
        .merge_by_key("spec.hostAliases", "ip")
        .merge_by_key("spec.topologySpreadConstraints", "topologyKey")
        .merge_by_key("spec.schedulingGates", "name")
        .merge_by_key("spec.resourceClaims", "name")
        .replace("spec.tolerations")
        .merge_by_key("status.conditions", "type")
        .merge_by_key("status.podIPs", "ip")
        .merge_by_key("status.hostIPs", "ip")
        .merge_by_key("status.resourceClaimStatuses", "name");
    for containers in [
        "spec.containers",
        "spec.initContainers",
        "spec.ephemeralContainers",
    ] {
        schema = schema
            .merge_by_key(containers, "name")
            .merge_by_key(&format!("{containers}.env"), "name")
            .merge_by_key(&format!("{containers}.ports"), "containerPort")
            .merge_by_key(&format!("{containers}.volumeMounts"), "mountPath")
            .merge_by_key(&format!("{containers}.volumeDevices"), "devicePath");
    }
    schema
});

static NODE: LazyLock<MergeSchema> = LazyLock::new(|| {
    MergeSchema::with_object_meta()
        // NodeSpec.Taints has no patch strategy: a patch replaces the whole list.
        .replace("spec.taints")
        .merge_set("spec.podCIDRs")
        .merge_by_key("status.conditions", "type")
        .merge_by_key("status.addresses", "type")
});

static NAMESPACE: LazyLock<MergeSchema> =
    LazyLock::new(|| MergeSchema::with_object_meta().merge_by_key("status.conditions", "type"));

static SERVICE: LazyLock<MergeSchema> = LazyLock::new(|| {
    MergeSchema::with_object_meta()
        .merge_by_key("spec.ports", "port")
        .merge_by_key("status.conditions", "type")
});

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(kind: &str, path: &str) -> Option<FieldStrategy> {
        core_schema(kind).and_then(|s| s.strategy(path)).cloned()
    }

    fn by(key: &str) -> Option<FieldStrategy> {
        Some(FieldStrategy::Merge {
            key: Some(key.to_owned()),
        })
    }

    #[test]
    fn pod_merge_keys_match_kubernetes() {
        assert_eq!(key_of("Pod", "spec.containers"), by("name"));
        assert_eq!(key_of("Pod", "spec.initContainers"), by("name"));
        assert_eq!(key_of("Pod", "spec.containers.env"), by("name"));
        assert_eq!(key_of("Pod", "spec.initContainers.env"), by("name"));
        assert_eq!(key_of("Pod", "spec.containers.ports"), by("containerPort"));
        assert_eq!(
            key_of("Pod", "spec.containers.volumeMounts"),
            by("mountPath")
        );
        assert_eq!(key_of("Pod", "spec.volumes"), by("name"));
        assert_eq!(key_of("Pod", "spec.imagePullSecrets"), by("name"));
        assert_eq!(
            key_of("Pod", "spec.tolerations"),
            Some(FieldStrategy::Replace)
        );
        assert_eq!(key_of("Pod", "status.conditions"), by("type"));
        assert_eq!(key_of("Pod", "metadata.ownerReferences"), by("uid"));
        assert_eq!(
            key_of("Pod", "metadata.finalizers"),
            Some(FieldStrategy::Merge { key: None })
        );
        assert_eq!(key_of("Pod", "spec.containers.args"), None);
    }

    #[test]
    fn node_service_namespace_merge_keys_match_kubernetes() {
        assert_eq!(key_of("Node", "spec.taints"), Some(FieldStrategy::Replace));
        assert_eq!(key_of("Node", "status.conditions"), by("type"));
        assert_eq!(key_of("Node", "status.addresses"), by("type"));
        assert_eq!(key_of("Node", "metadata.ownerReferences"), by("uid"));
        assert_eq!(key_of("Service", "spec.ports"), by("port"));
        assert_eq!(key_of("Namespace", "status.conditions"), by("type"));
        for kind in ["Event", "Lease", "ConfigMap", "Secret"] {
            assert_eq!(
                key_of(kind, "metadata.ownerReferences"),
                by("uid"),
                "{kind}"
            );
        }
    }

    #[test]
    fn custom_kinds_have_no_schema() {
        assert!(core_schema("VirtualMachine").is_none());
        assert!(core_schema("VirtualMachineInstance").is_none());
        assert!(
            core_schema("pod").is_none(),
            "kind names are case-sensitive"
        );
    }
}
