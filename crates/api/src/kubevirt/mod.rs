//! Types of the `kubevirt.io/v1` API group, with KubeVirt's field names.
//!
//! Every struct refuses unknown fields, so a manifest that names a field ferrovirt does not
//! model is refused with that field's path instead of being silently dropped. Fields that
//! KubeVirt defines but ferrovirt does not run yet are either modelled (and then refused by
//! name in [`crate::admission`]) or left out (and then refused at decode time, see
//! [`crate::admission::decode`]).
//!
//! The four top-level kinds implement [`k8s_openapi::Resource`], [`k8s_openapi::ListableResource`]
//! and [`k8s_openapi::Metadata`], so kube-rs' `Api<VirtualMachine>` works unchanged. Like
//! k8s-openapi's own types they have no `apiVersion`/`kind` fields: both are always written
//! on output, and checked (if present) on input.
//!
//! ferrovirt's own addition: `VirtualMachineInstance.status.memory.memoryOverhead` holds the
//! per-VM memory overhead that ferrovirt computed and added to the launcher pod's memory
//! request (KubeVirt reports its own overhead in the same field).

mod domain;
mod migration;
mod replicaset;
mod vm;
mod vmi;
mod volume;

pub use domain::*;
pub use migration::*;
pub use replicaset::*;
pub use vm::*;
pub use vmi::*;
pub use volume::*;

use serde::{Deserialize, Serialize};

/// Status of a condition: `"True"`, `"False"` or `"Unknown"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The system cannot tell.
    #[default]
    Unknown,
}

/// A reference to an object by name in the same namespace (`{name}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// Name of the referent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Marker deserializing only from the expected `apiVersion` of `K`.
struct ApiVersionTag<K>(std::marker::PhantomData<K>);

impl<'de, K: k8s_openapi::Resource> Deserialize<'de> for ApiVersionTag<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        if v == K::API_VERSION {
            Ok(ApiVersionTag(std::marker::PhantomData))
        } else {
            Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&v),
                &K::API_VERSION,
            ))
        }
    }
}

/// Marker deserializing only from the expected `kind` of `K`.
struct KindTag<K>(std::marker::PhantomData<K>);

impl<'de, K: k8s_openapi::Resource> Deserialize<'de> for KindTag<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = String::deserialize(d)?;
        if v == K::KIND {
            Ok(KindTag(std::marker::PhantomData))
        } else {
            Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&v),
                &K::KIND,
            ))
        }
    }
}

/// Implements the k8s-openapi traits and serde for a top-level kind with
/// `metadata`, `spec` and optional `status`.
macro_rules! kubevirt_resource {
    ($ty:ident, $spec:ty, $status:ty, $kind:literal, $plural:literal) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = $crate::API_VERSION;
            const GROUP: &'static str = $crate::GROUP;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $crate::VERSION;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = concat!($kind, "List");
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let len = 4 + usize::from(self.status.is_some());
                let mut state = serializer.serialize_struct($kind, len)?;
                state.serialize_field("apiVersion", <$ty as k8s_openapi::Resource>::API_VERSION)?;
                state.serialize_field("kind", <$ty as k8s_openapi::Resource>::KIND)?;
                state.serialize_field("metadata", &self.metadata)?;
                state.serialize_field("spec", &self.spec)?;
                if let Some(status) = &self.status {
                    state.serialize_field("status", status)?;
                }
                state.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Wire {
                    #[serde(rename = "apiVersion", default)]
                    _api_version: Option<$crate::kubevirt::ApiVersionTag<$ty>>,
                    #[serde(rename = "kind", default)]
                    _kind: Option<$crate::kubevirt::KindTag<$ty>>,
                    #[serde(default)]
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    spec: $spec,
                    #[serde(default)]
                    status: Option<$status>,
                }
                let wire = Wire::deserialize(deserializer)?;
                Ok($ty {
                    metadata: wire.metadata,
                    spec: wire.spec,
                    status: wire.status,
                })
            }
        }
    };
}

pub(crate) use kubevirt_resource;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::Resource;
    use serde_json::json;

    #[test]
    fn resource_constants() {
        assert_eq!(VirtualMachine::API_VERSION, "kubevirt.io/v1");
        assert_eq!(VirtualMachine::GROUP, "kubevirt.io");
        assert_eq!(VirtualMachine::VERSION, "v1");
        assert_eq!(VirtualMachine::KIND, "VirtualMachine");
        assert_eq!(VirtualMachine::URL_PATH_SEGMENT, "virtualmachines");
        assert_eq!(
            VirtualMachineInstance::URL_PATH_SEGMENT,
            "virtualmachineinstances"
        );
        assert_eq!(
            VirtualMachineInstanceReplicaSet::URL_PATH_SEGMENT,
            "virtualmachineinstancereplicasets"
        );
        assert_eq!(
            VirtualMachineInstanceMigration::URL_PATH_SEGMENT,
            "virtualmachineinstancemigrations"
        );
        assert_eq!(
            <VirtualMachineInstance as k8s_openapi::ListableResource>::LIST_KIND,
            "VirtualMachineInstanceList"
        );
    }

    #[test]
    fn api_version_and_kind_always_serialized() {
        let vm = VirtualMachine::default();
        let v = serde_json::to_value(&vm).unwrap();
        assert_eq!(v["apiVersion"], "kubevirt.io/v1");
        assert_eq!(v["kind"], "VirtualMachine");
        assert!(v.get("status").is_none());
        let back: VirtualMachine = serde_json::from_value(v).unwrap();
        assert_eq!(back, vm);
    }

    #[test]
    fn wrong_kind_or_api_version_is_refused() {
        let spec = json!({"template": {"spec": {"domain": {"devices": {}}}}});
        let wrong_kind =
            json!({"apiVersion": "kubevirt.io/v1", "kind": "Pod", "metadata": {}, "spec": spec});
        let err = serde_json::from_value::<VirtualMachine>(wrong_kind)
            .unwrap_err()
            .to_string();
        assert!(err.contains("VirtualMachine"), "{err}");
        let wrong_version =
            json!({"apiVersion": "kubevirt.io/v1alpha3", "kind": "VirtualMachine", "spec": spec});
        assert!(serde_json::from_value::<VirtualMachine>(wrong_version).is_err());
        let neither = json!({"spec": spec});
        assert!(serde_json::from_value::<VirtualMachine>(neither).is_ok());
    }
}
