use serde_json::{json, Value};

use super::*;
use crate::patch::core_schema;

fn pod() -> &'static MergeSchema {
    core_schema("Pod").unwrap()
}

fn node() -> &'static MergeSchema {
    core_schema("Node").unwrap()
}

fn smp(doc: Value, patch: Value, schema: &MergeSchema) -> Value {
    apply_strategic_merge_patch(&doc, &patch, schema).unwrap()
}

fn smp_err(doc: Value, patch: Value, schema: &MergeSchema) -> PatchError {
    apply_strategic_merge_patch(&doc, &patch, schema).unwrap_err()
}

#[test]
fn maps_merge_and_null_deletes() {
    let out = smp(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}, "name": "n"}}),
        json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}, "name": "n"}})
    );
}

#[test]
fn cordon_sets_unschedulable_and_keeps_everything_else() {
    let stored = json!({
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    });
    let out = smp(
        stored.clone(),
        json!({"spec": {"unschedulable": true}}),
        node(),
    );
    let mut expected = stored;
    expected["spec"]["unschedulable"] = json!(true);
    assert_eq!(out, expected);
}

#[test]
fn containers_merge_by_name() {
    let stored = json!({"spec": {"containers": [
        {"name": "nginx", "image": "nginx-1.0"}
    ]}});
    let out = smp(
        stored,
        json!({"spec": {"containers": [{"name": "log-tailer", "image": "log-tailer-1.0"}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [
            {"name": "nginx", "image": "nginx-1.0"},
            {"name": "log-tailer", "image": "log-tailer-1.0"}
        ]}})
    );
}

#[test]
fn nested_lists_merge_by_their_own_keys() {
    let stored = json!({"spec": {"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}],
         "volumeMounts": [{"name": "data", "mountPath": "/data"}],
         "args": ["--one", "--two"]},
        {"name": "b", "image": "b:1"}
    ]}});
    let patch = json!({"spec": {"containers": [
        {"name": "a", "image": "a:2",
         "env": [{"name": "Y", "value": "two"}, {"name": "Z", "value": "3"}],
         "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
         "volumeMounts": [{"name": "cache", "mountPath": "/data"}],
         "args": ["--three"]}
    ]}});
    let out = smp(stored, patch, pod());
    assert_eq!(
        out,
        json!({"spec": {"containers": [
            {"name": "a", "image": "a:2",
             "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "two"}, {"name": "Z", "value": "3"}],
             "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}],
             "volumeMounts": [{"name": "cache", "mountPath": "/data"}],
             "args": ["--three"]},
            {"name": "b", "image": "b:1"}
        ]}})
    );
}

#[test]
fn lists_without_strategy_are_replaced() {
    let out = smp(
        json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
        json!({"spec": {"tolerations": [{"key": "c"}]}}),
        pod(),
    );
    assert_eq!(out, json!({"spec": {"tolerations": [{"key": "c"}]}}));

    // Node taints have no merge key in Kubernetes: the list is replaced.
    let out = smp(
        json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}}),
        json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}),
        node(),
    );
    assert_eq!(
        out,
        json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}})
    );
}

#[test]
fn finalizers_merge_as_a_set() {
    let out = smp(
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["b", "c", "c"]}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {"finalizers": ["a", "b", "c"]}}));
}

#[test]
fn delete_from_primitive_list() {
    let out = smp(
        json!({"metadata": {"finalizers": ["a", "b", "c", "b"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "c"]}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {"finalizers": ["a"]}}));

    // Deleting from a list that is not there is a no-op, and never creates it.
    let out = smp(
        json!({"metadata": {}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {}}));

    let out = smp(
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["z"]}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {"finalizers": ["b", "z"]}}));
}

#[test]
fn patch_delete_in_list_removes_by_merge_key() {
    let out = smp(
        json!({"spec": {"containers": [{"name": "nginx"}, {"name": "log-tailer"}]}}),
        json!({"spec": {"containers": [{"name": "log-tailer", "$patch": "delete"}]}}),
        pod(),
    );
    assert_eq!(out, json!({"spec": {"containers": [{"name": "nginx"}]}}));

    // Deletes come first, so a delete and a re-add in one patch re-creates the element.
    let out = smp(
        json!({"spec": {"containers": [{"name": "a", "image": "old", "args": ["x"]}]}}),
        json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}, {"name": "a", "image": "new"}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [{"name": "a", "image": "new"}]}})
    );

    // Deleting a condition from a node's status by type.
    let out = smp(
        json!({"status": {"conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}]}}),
        json!({"status": {"conditions": [{"type": "MemoryPressure", "$patch": "delete"}]}}),
        node(),
    );
    assert_eq!(out, json!({"status": {"conditions": [{"type": "Ready"}]}}));
}

#[test]
fn patch_delete_needs_the_merge_key() {
    let err = smp_err(
        json!({"spec": {"containers": [{"name": "a"}]}}),
        json!({"spec": {"containers": [{"$patch": "delete", "image": "x"}]}}),
        pod(),
    );
    assert_eq!(
        err.to_string(),
        "strategic merge patch element at spec.containers[0] has no merge key \"name\""
    );
}

#[test]
fn patch_replace_in_list_replaces_it() {
    let out = smp(
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {"containers": [{"name": "c", "image": "c"}, {"$patch": "replace"}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [{"name": "c", "image": "c"}]}})
    );
}

#[test]
fn patch_replace_on_a_map_replaces_it() {
    let out = smp(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {"labels": {"c": "3"}}}));
}

#[test]
fn patch_delete_on_a_map_deletes_it() {
    let out = smp(
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}, "type": "RollingUpdate"}}}),
        json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"strategy": {"type": "RollingUpdate"}}})
    );

    // At the root, `$patch: delete` leaves an empty object.
    let out = smp(json!({"a": 1}), json!({"$patch": "delete"}), pod());
    assert_eq!(out, json!({}));
}

#[test]
fn patch_merge_directive_is_accepted() {
    let out = smp(
        json!({"metadata": {"labels": {"a": "1"}}}),
        json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {"labels": {"a": "1", "b": "2"}}}));

    // A `{"$patch": "merge"}` element makes a list without strategy merge as a set.
    let out = smp(
        json!({"spec": {"containers": [{"name": "a", "args": ["x"]}]}}),
        json!({"spec": {"containers": [{"name": "a", "args": ["y", {"$patch": "merge"}]}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}})
    );
}

#[test]
fn retain_keys_clears_unlisted_fields() {
    let out = smp(
        json!({"spec": {"union": {"foo": "a", "other": "b", "keep": "k"}}}),
        json!({"spec": {"union": {"$retainKeys": ["another", "bar", "keep"], "another": "d", "bar": "c"}}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"union": {"keep": "k", "another": "d", "bar": "c"}}})
    );

    let err = smp_err(
        json!({}),
        json!({"spec": {"$retainKeys": ["a"], "b": 1}}),
        pod(),
    );
    assert!(err.to_string().contains("\"b\""), "{err}");
    let err = smp_err(json!({}), json!({"spec": {"$retainKeys": "a"}}), pod());
    assert!(
        err.to_string()
            .contains("$retainKeys must be a list of strings"),
        "{err}"
    );
}

#[test]
fn set_element_order_orders_merged_lists() {
    // From the preserve-order proposal: server-only elements keep their place.
    let out = smp(
        json!({"spec": {"containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}]}}),
        json!({"spec": {"containers": [{"name": "a", "x": 1}, {"name": "b", "x": 2}, {"name": "d"}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [
            {"name": "c"}, {"name": "a", "x": 1}, {"name": "b", "x": 2}, {"name": "d"}
        ]}})
    );

    // Reorder only.
    let out = smp(
        json!({"metadata": {"finalizers": ["b", "a"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": ["a", "b"]}}),
        pod(),
    );
    assert_eq!(out, json!({"metadata": {"finalizers": ["a", "b"]}}));

    let out = smp(
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "new"}, {"name": "a"}],
            "containers": [{"name": "new", "image": "n"}]
        }}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"spec": {"containers": [
            {"name": "b", "image": "b"}, {"name": "new", "image": "n"}, {"name": "a", "image": "a"}
        ]}})
    );
}

#[test]
fn set_element_order_must_agree_with_the_patch_list() {
    let err = smp_err(
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": ["a"], "finalizers": ["b"]}}),
        pod(),
    );
    assert!(err.to_string().contains("$setElementOrder"), "{err}");
    let err = smp_err(
        json!({}),
        json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"], "finalizers": ["a", "b"]}}),
        pod(),
    );
    assert!(err.to_string().contains("another order"), "{err}");
}

#[test]
fn set_element_order_is_stripped_for_replaced_lists() {
    let out = smp(
        json!({"spec": {"tolerations": [{"key": "a"}]}}),
        json!({"spec": {"$setElementOrder/tolerations": [{"key": "b"}], "tolerations": [{"key": "b"}]}}),
        pod(),
    );
    assert_eq!(out, json!({"spec": {"tolerations": [{"key": "b"}]}}));
    let out = smp(
        json!({"spec": {"tolerations": [{"key": "a"}]}}),
        json!({"spec": {"$setElementOrder/tolerations": [{"key": "b"}]}}),
        pod(),
    );
    assert_eq!(out, json!({"spec": {"tolerations": [{"key": "a"}]}}));
}

#[test]
fn unknown_directives_are_refused() {
    let err = smp_err(json!({}), json!({"metadata": {"$frobnicate": 1}}), pod());
    assert_eq!(
        err.to_string(),
        "unknown strategic merge patch directive $frobnicate at metadata"
    );
    let err = smp_err(
        json!({}),
        json!({"spec": {"containers": [{"name": "a", "$patch": "explode"}]}}),
        pod(),
    );
    assert_eq!(
        err.to_string(),
        "unknown strategic merge patch directive $patch: \"explode\" at spec.containers[0]"
    );
    let err = smp_err(json!({}), json!({"$setElementOrder/": []}), pod());
    assert!(matches!(err, PatchError::UnknownDirective { .. }));
}

#[test]
fn delete_in_a_replaced_list_is_refused() {
    let err = smp_err(
        json!({"spec": {"tolerations": [{"key": "a"}]}}),
        json!({"spec": {"tolerations": [{"key": "a", "$patch": "delete"}]}}),
        pod(),
    );
    assert!(err.to_string().contains("spec.tolerations"), "{err}");
}

#[test]
fn elements_of_keyed_lists_must_be_objects_with_the_key() {
    let err = smp_err(json!({}), json!({"spec": {"containers": ["nginx"]}}), pod());
    assert!(err.to_string().contains("must be objects"), "{err}");
    let err = smp_err(
        json!({}),
        json!({"spec": {"containers": [{"image": "x"}]}}),
        pod(),
    );
    assert!(matches!(err, PatchError::MissingMergeKey { .. }), "{err:?}");
    let err = smp_err(
        json!({}),
        json!({"metadata": {"finalizers": [{"a": 1}]}}),
        pod(),
    );
    assert!(err.to_string().contains("metadata.finalizers[0]"), "{err}");
}

#[test]
fn new_values_have_their_directives_and_nulls_stripped() {
    let out = smp(
        json!({}),
        json!({"metadata": {"labels": {"a": "1", "b": null}, "finalizers": ["x"]},
               "spec": {"containers": [{"name": "a", "env": [{"name": "gone", "$patch": "delete"}]}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
               "spec": {"containers": [{"name": "a", "env": []}]}})
    );
}

#[test]
fn type_changes_replace() {
    let out = smp(json!({"a": [1, 2]}), json!({"a": {"b": 1}}), pod());
    assert_eq!(out, json!({"a": {"b": 1}}));
    let out = smp(json!({"a": {"b": 1}}), json!({"a": "s"}), pod());
    assert_eq!(out, json!({"a": "s"}));
}

#[test]
fn owner_references_merge_by_uid() {
    let out = smp(
        json!({"metadata": {"ownerReferences": [{"uid": "1", "kind": "VirtualMachineInstance", "name": "a"}]}}),
        json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}, {"uid": "2", "kind": "X"}]}}),
        pod(),
    );
    assert_eq!(
        out,
        json!({"metadata": {"ownerReferences": [
            {"uid": "1", "kind": "VirtualMachineInstance", "name": "a", "controller": true},
            {"uid": "2", "kind": "X"}
        ]}})
    );
}

#[test]
fn service_ports_merge_by_port() {
    let schema = core_schema("Service").unwrap();
    let out = smp(
        json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
        schema,
    );
    assert_eq!(
        out,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}]}})
    );
}

#[test]
fn node_status_conditions_merge_by_type() {
    let out = smp(
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
            {"type": "MemoryPressure", "status": "False"}
        ], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
               "addresses": [{"type": "Hostname", "address": "n1"}]}}),
        node(),
    );
    assert_eq!(
        out,
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": "False"}
        ], "addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "Hostname", "address": "n1"}
        ]}})
    );
}

#[test]
fn patch_must_be_an_object() {
    let err = smp_err(json!({}), json!([1]), pod());
    assert_eq!(
        err.to_string(),
        "application/strategic-merge-patch+json patch must be a JSON object, found an array"
    );
}

#[test]
fn empty_schema_behaves_like_merge_patch_with_lists_replaced() {
    let schema = MergeSchema::new();
    let out = smp(
        json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": [1]}}),
        json!({"metadata": {"finalizers": ["b"]}, "spec": {"x": [2]}}),
        &schema,
    );
    assert_eq!(
        out,
        json!({"metadata": {"finalizers": ["b"]}, "spec": {"x": [2]}})
    );
}

#[test]
fn key_order_is_kept() {
    let out = smp(
        json!({"a": 1, "b": 2, "c": 3}),
        json!({"a": null, "b": 20, "d": 4}),
        pod(),
    );
    let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["b", "c", "d"]);
}
