//! JSON merge patches (RFC 7386) computed from two versions of a document, so that a write sends
//! only what changed and removes what was dropped (a merge patch removes a key with `null`).

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`, or `None` when they are equal. Objects are
/// compared key by key; anything else (arrays included) is replaced whole.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(p) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), without_nulls(nv));
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Some(Value::Object(patch))
        }
        // A null in a merge patch means "remove", so a new value is sent without nulls inside.
        _ => Some(without_nulls(new)),
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7386 application, to check that applying the diff gives `new` back.
    fn apply(target: &Value, patch: &Value) -> Value {
        match patch {
            Value::Object(p) => {
                let mut t = target.as_object().cloned().unwrap_or_default();
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        let cur = t.get(k).cloned().unwrap_or(Value::Null);
                        t.insert(k.clone(), apply(&cur, v));
                    }
                }
                Value::Object(t)
            }
            other => other.clone(),
        }
    }

    #[test]
    fn only_changes_are_sent() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": true});
        let new = json!({"a": 1, "b": {"c": 2, "d": 4}, "e": [1], "added": {"x": 1}});
        let p = merge_diff(&old, &new).unwrap();
        assert_eq!(p, json!({"b": {"d": 4}, "e": [1], "added": {"x": 1}, "gone": null}));
        assert_eq!(apply(&old, &p), new);
        assert_eq!(merge_diff(&new, &new), None);
    }

    proptest::proptest! {
        #[test]
        fn applying_the_diff_gives_the_new_document(
            a in proptest::collection::btree_map("[a-d]", 0i32..3, 0..4),
            b in proptest::collection::btree_map("[a-d]", 0i32..3, 0..4),
            nested in proptest::bool::ANY,
        ) {
            let to_obj = |m: &std::collections::BTreeMap<String, i32>| {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), if nested && *v == 2 { json!({"n": v}) } else { json!(v) })).collect())
            };
            let (old, new) = (json!({"s": to_obj(&a)}), json!({"s": to_obj(&b)}));
            match merge_diff(&old, &new) {
                Some(p) => proptest::prop_assert_eq!(apply(&old, &p), new),
                None => proptest::prop_assert_eq!(old, new),
            }
        }
    }
}
