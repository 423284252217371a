use serde_json::json;

use super::*;

fn body(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn content_types_map_to_patch_types() {
    assert_eq!(
        PatchType::from_content_type("application/json-patch+json"),
        Some(PatchType::Json)
    );
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json"),
        Some(PatchType::Merge)
    );
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json"),
        Some(PatchType::StrategicMerge)
    );
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        Some(PatchType::Apply)
    );
    assert_eq!(
        PatchType::from_content_type("Application/Merge-Patch+JSON; charset=utf-8"),
        Some(PatchType::Merge)
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    assert_eq!(PatchType::from_content_type(""), None);
    for t in PatchType::ALL {
        assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
    }
}

#[test]
fn json_patch_applies_operations_in_order() {
    let doc =
        json!({"metadata": {"name": "vm1", "finalizers": ["a", "b"]}, "spec": {"running": false}});
    let patch = body(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": "a"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
        {"op": "replace", "path": "/spec/running", "value": true},
        {"op": "add", "path": "/metadata/labels", "value": {"app": "x"}},
        {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels/name"},
        {"op": "move", "from": "/metadata/labels/app", "path": "/metadata/app"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "c"}
    ]));
    let out = apply_json_patch(&doc, &patch).unwrap();
    assert_eq!(
        out,
        json!({
            "metadata": {"name": "vm1", "finalizers": ["b", "c"], "labels": {"name": "vm1"}, "app": "x"},
            "spec": {"running": true}
        })
    );
}

#[test]
fn json_patch_failed_test_names_operation_and_changes_nothing() {
    let doc = json!({"metadata": {"finalizers": ["x"]}});
    let patch = body(json!([
        {"op": "remove", "path": "/metadata/finalizers/0"},
        {"op": "test", "path": "/metadata/finalizers", "value": ["y"]},
    ]));
    let err = apply_json_patch(&doc, &patch).unwrap_err();
    match &err {
        PatchError::TestFailed { index, path } => {
            assert_eq!(*index, 1);
            assert_eq!(path, "/metadata/finalizers");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("operation 1 (test)"), "{err}");
    assert_eq!(doc, json!({"metadata": {"finalizers": ["x"]}}));
}

#[test]
fn json_patch_bad_path_names_operation_and_path() {
    let doc = json!({"a": 1});
    let patch = body(json!([
        {"op": "add", "path": "/b", "value": 2},
        {"op": "remove", "path": "/nope/deeper"}
    ]));
    let err = apply_json_patch(&doc, &patch).unwrap_err();
    let PatchError::OperationFailed {
        index, op, path, ..
    } = &err
    else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!((*index, *op, path.as_str()), (1, "remove", "/nope/deeper"));
    assert_eq!(
        err.to_string(),
        "json patch operation 1 (remove) failed at path \"/nope/deeper\": the path does not exist"
    );

    let err = apply_json_patch(
        &doc,
        &body(json!([{"op": "move", "from": "/x", "path": "/y"}])),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"from\" path \"/x\" does not exist"),
        "{err}"
    );

    let err = apply_json_patch(
        &doc,
        &body(json!([{"op": "add", "path": "/a/b/c", "value": 1}])),
    )
    .unwrap_err();
    assert!(err.to_string().contains("operation 0 (add)"), "{err}");
}

#[test]
fn json_patch_test_on_missing_path_fails() {
    // kube-rs' finalizer helper: `test` that a list is absent or as expected.
    let doc = json!({"metadata": {}});
    let patch = body(json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]));
    assert!(apply_json_patch(&doc, &patch).is_err());
}

#[test]
fn json_patch_malformed_bodies_are_explained() {
    let doc = json!({});
    let err = apply_json_patch(&doc, b"[{\"op\": \"add\",\n \"path\": }]").unwrap_err();
    match err {
        PatchError::MalformedBody { line, column, .. } => assert_eq!((line, column), (2, 10)),
        other => panic!("unexpected error {other:?}"),
    }

    let err = apply_json_patch(&doc, b"{\"op\": \"add\"}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "application/json-patch+json patch must be a JSON array of operations, found an object"
    );

    let err =
        apply_json_patch(&doc, &body(json!([{"op": "frobnicate", "path": "/a"}]))).unwrap_err();
    assert!(
        matches!(err, PatchError::InvalidOperation { index: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("frobnicate"), "{err}");

    let err =
        apply_json_patch(&doc, &body(json!([{"op": "add", "path": "a", "value": 1}]))).unwrap_err();
    assert!(
        matches!(err, PatchError::InvalidOperation { index: 0, .. }),
        "{err:?}"
    );

    let err =
        apply_json_patch(&doc, &body(json!([{"op": "remove", "path": "/a"}, 3]))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "json patch operation 1 is invalid: an operation must be a JSON object, found a number"
    );
}

#[test]
fn json_patch_operation_limit() {
    let ops: Vec<_> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "", "value": {}}))
        .collect();
    let err = apply_json_patch(&json!({}), &body(json!(ops))).unwrap_err();
    assert!(matches!(
        err,
        PatchError::TooManyOperations { count: 10_001, .. }
    ));
}

#[test]
fn merge_patch_follows_rfc_7386() {
    let doc = json!({
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged"
    });
    let patch = body(json!({
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": null},
        "tags": ["example"]
    }));
    let out = apply_merge_patch(&doc, &patch).unwrap();
    assert_eq!(
        out,
        json!({
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890"
        })
    );
}

#[test]
fn merge_patch_keeps_key_order() {
    let doc = json!({"a": 1, "b": 2, "c": 3, "d": 4});
    let out = apply_merge_patch(&doc, br#"{"b": null, "e": 5}"#).unwrap();
    let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["a", "c", "d", "e"]);
}

#[test]
fn merge_patch_nulls_inside_new_objects_are_dropped() {
    let out =
        apply_merge_patch(&json!({"a": 1}), br#"{"b": {"c": null, "d": {"e": null}}}"#).unwrap();
    assert_eq!(out, json!({"a": 1, "b": {"d": {}}}));
    let out = apply_merge_patch(&json!({"a": "scalar"}), br#"{"a": {"x": 1, "y": null}}"#).unwrap();
    assert_eq!(out, json!({"a": {"x": 1}}));
}

#[test]
fn merge_patch_must_be_an_object() {
    let err = apply_merge_patch(&json!({}), b"[1]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "application/merge-patch+json patch must be a JSON object, found an array"
    );
    let err = apply_merge_patch(&json!({}), b"").unwrap_err();
    assert!(matches!(err, PatchError::MalformedBody { .. }));
    assert!(
        err.to_string().starts_with("malformed patch body: "),
        "{err}"
    );
}

#[test]
fn apply_patch_dispatches_by_type() {
    let node = json!({"kind": "Node", "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
    let schema = core_schema("Node");
    let out = apply_patch(
        &node,
        PatchType::StrategicMerge,
        br#"{"spec": {"unschedulable": true}}"#,
        schema,
    )
    .unwrap();
    assert_eq!(out["spec"]["unschedulable"], json!(true));
    assert_eq!(out["spec"]["taints"][0]["key"], json!("a"));

    let out = apply_patch(
        &node,
        PatchType::Merge,
        br#"{"spec": {"taints": null}}"#,
        None,
    )
    .unwrap();
    assert_eq!(out, json!({"kind": "Node", "spec": {}}));

    let out = apply_patch(
        &node,
        PatchType::Json,
        br#"[{"op": "remove", "path": "/spec/taints/0"}]"#,
        None,
    )
    .unwrap();
    assert_eq!(out, json!({"kind": "Node", "spec": {"taints": []}}));

    let err = apply_patch(&node, PatchType::StrategicMerge, b"{}", None).unwrap_err();
    assert!(matches!(err, PatchError::StrategicMergeUnsupported));
    let err = apply_patch(&node, PatchType::Apply, b"{}", schema).unwrap_err();
    assert_eq!(
        err.to_string(),
        "patch type application/apply-patch+yaml is not supported"
    );
}
