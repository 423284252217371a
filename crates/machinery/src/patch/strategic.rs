//! Strategic merge patch (Kubernetes `sig-api-machinery/strategic-merge-patch.md`).
//!
//! A JSON merge patch whose lists merge as the kind's [`MergeSchema`] says:
//!
//! - objects merge recursively; `null` deletes a key; a scalar, or a value of another type than
//!   the stored one, replaces it;
//! - a list with no strategy (or `Replace`) is replaced by the patch's list;
//! - a list with strategy `Merge` and a merge key merges element by element: a patch element
//!   whose key matches a stored element merges into it, the others are appended;
//! - a list with strategy `Merge` and no key (primitives, like `finalizers`) becomes the union.
//!
//! Directives, all removed from the result:
//!
//! | directive                                    | meaning                                          |
//! |----------------------------------------------|--------------------------------------------------|
//! | `$patch: replace` in an object               | the object is replaced by the rest of the patch  |
//! | `$patch: delete` in an object                | the object is deleted (like `null`)              |
//! | `$patch: merge` in an object                 | merge (the default, accepted for completeness)   |
//! | `{"$patch": "replace"}` as a list element    | the list is replaced by the other elements       |
//! | `{"key": v, "$patch": "delete"}` in a list   | every stored element with key `v` is removed     |
//! | `{"$patch": "merge"}` as a list element      | the list merges even without a `Merge` strategy  |
//! | `$retainKeys: [k, ...]`                      | stored keys not listed are cleared first         |
//! | `$deleteFromPrimitiveList/<f>: [v, ...]`     | the values are removed from the list `f`         |
//! | `$setElementOrder/<f>: [...]`                | the order of the merged list `f`                 |
//!
//! Any other `$`-key, or another `$patch` value, is an error.
//!
//! Order of a merged list: elements named by the patch (or by `$setElementOrder`) follow the
//! patch's order; stored elements the patch does not name keep their relative order; the two
//! sequences interleave by the stored order, and new elements that have no stored position go
//! after the stored elements before them (so a new container or finalizer is appended).

use serde_json::{Map, Value};

use super::schema::{FieldStrategy, MergeSchema};
use super::{json_kind, PatchError, PatchType};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

type Object = Map<String, Value>;

/// Applies a strategic merge patch to `doc` and returns the result.
///
/// `patch` must be a JSON object. `doc` is the stored object (anything but an object counts as
/// `{}`). `schema` says which lists merge and by which key; [`super::core_schema`] has the
/// schemas of the core kinds. On error `doc` is untouched.
pub fn apply_strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &MergeSchema,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::WrongShape {
            patch_type: PatchType::StrategicMerge,
            expected: "object",
            found: json_kind(patch),
        });
    };
    let original = match doc {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut merger = Merger {
        schema,
        path: Vec::new(),
    };
    let merged = merger.merge_object(original, patch)?.unwrap_or_default();
    Ok(Value::Object(merged))
}

/// A `$patch` directive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Replace,
    Delete,
    Merge,
}

/// How a list merges.
enum ListMode {
    /// The patch's list replaces the stored one.
    Replace,
    /// Objects merge element by element, matched by this key.
    MergeByKey(String),
    /// Primitives: the union of both lists.
    MergeSet,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

struct Merger<'a> {
    schema: &'a MergeSchema,
    /// Where in the patch we are: for the schema (keys only) and for error messages.
    path: Vec<Segment>,
}

impl Merger<'_> {
    fn schema_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            if let Segment::Key(key) = segment {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
        }
        out
    }

    fn display_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            out.push_str("the patch root");
        }
        out
    }

    fn strategy(&self) -> Option<&FieldStrategy> {
        self.schema.strategy(&self.schema_path())
    }

    fn invalid(&self, reason: impl Into<String>) -> PatchError {
        PatchError::InvalidStrategicPatch {
            path: self.display_path(),
            reason: reason.into(),
        }
    }

    fn with<T>(
        &mut self,
        segment: Segment,
        f: impl FnOnce(&mut Self) -> Result<T, PatchError>,
    ) -> Result<T, PatchError> {
        self.path.push(segment);
        let result = f(self);
        self.path.pop();
        result
    }

    fn parse_directive(&self, value: &Value) -> Result<Directive, PatchError> {
        match value.as_str() {
            Some("replace") => Ok(Directive::Replace),
            Some("delete") => Ok(Directive::Delete),
            Some("merge") => Ok(Directive::Merge),
            _ => Err(PatchError::UnknownDirective {
                path: self.display_path(),
                directive: format!("{DIRECTIVE}: {value}"),
            }),
        }
    }

    /// Merges `patch` into `original`. `None` means the object is deleted (`$patch: delete`).
    fn merge_object(
        &mut self,
        mut original: Object,
        patch: &Object,
    ) -> Result<Option<Object>, PatchError> {
        let mut directive = None;
        for (key, value) in patch {
            if key == DIRECTIVE {
                directive = Some(self.parse_directive(value)?);
            } else if key.starts_with('$') && key != RETAIN_KEYS {
                let field = key
                    .strip_prefix(DELETE_FROM_PRIMITIVE_LIST)
                    .or_else(|| key.strip_prefix(SET_ELEMENT_ORDER));
                match field {
                    Some(field) if !field.is_empty() => {}
                    _ => {
                        return Err(PatchError::UnknownDirective {
                            path: self.display_path(),
                            directive: key.clone(),
                        })
                    }
                }
            }
        }
        match directive {
            Some(Directive::Delete) => return Ok(None),
            Some(Directive::Replace) => original = Map::new(),
            Some(Directive::Merge) | None => {}
        }

        if let Some(retain) = patch.get(RETAIN_KEYS) {
            self.retain_keys(&mut original, patch, retain)?;
        }

        for (key, values) in patch {
            if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                self.with(Segment::Key(key.clone()), |m| {
                    m.delete_from_primitive_list(&mut original, field, values)
                })?;
            }
        }

        for (key, value) in patch {
            if key.starts_with('$') {
                continue;
            }
            let order = patch.get(&format!("{SET_ELEMENT_ORDER}{key}"));
            self.with(Segment::Key(key.clone()), |m| {
                if value.is_null() {
                    original.shift_remove(key);
                    return Ok(());
                }
                let existing = original.get_mut(key).map(std::mem::take);
                match m.merge_value(existing, value, order)? {
                    Some(merged) => {
                        original.insert(key.clone(), merged);
                    }
                    None => {
                        original.shift_remove(key);
                    }
                }
                Ok(())
            })?;
        }

        // `$setElementOrder` for lists the patch does not otherwise touch: only a reorder.
        for (key, order) in patch {
            let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
                continue;
            };
            if patch.contains_key(field) {
                continue;
            }
            self.with(Segment::Key(field.to_owned()), |m| {
                // Only merged lists have an identity to order by.
                if !matches!(m.strategy(), Some(FieldStrategy::Merge { .. })) {
                    return Ok(());
                }
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    let stored = std::mem::take(list);
                    *list = m.merge_list(stored, &[], Some(order))?;
                }
                Ok(())
            })?;
        }

        Ok(Some(original))
    }

    fn retain_keys(
        &self,
        original: &mut Object,
        patch: &Object,
        retain: &Value,
    ) -> Result<(), PatchError> {
        let keys: Vec<&str> = match retain {
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str().ok_or_else(|| {
                        self.invalid(format!("{RETAIN_KEYS} must be a list of strings"))
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(self.invalid(format!("{RETAIN_KEYS} must be a list of strings"))),
        };
        if let Some((key, _)) = patch
            .iter()
            .find(|(k, v)| !k.starts_with('$') && !v.is_null() && !keys.contains(&k.as_str()))
        {
            return Err(self.invalid(format!(
                "the patch sets {key:?}, which its {RETAIN_KEYS} list does not name"
            )));
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
        Ok(())
    }

    fn delete_from_primitive_list(
        &self,
        original: &mut Object,
        field: &str,
        values: &Value,
    ) -> Result<(), PatchError> {
        let Value::Array(values) = values else {
            return Err(self.invalid("the value must be a list of primitives"));
        };
        if values.iter().any(|v| v.is_object() || v.is_array()) {
            return Err(self.invalid("the value must be a list of primitives"));
        }
        match original.get_mut(field) {
            Some(Value::Array(list)) => list.retain(|item| !values.contains(item)),
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(self.invalid(format!(
                    "the field {field:?} is {}, not a list",
                    json_kind(other)
                )))
            }
        }
        Ok(())
    }

    /// Merges a non-null patch value into the stored value, if any. `None` deletes the field.
    fn merge_value(
        &mut self,
        existing: Option<Value>,
        patch: &Value,
        order: Option<&Value>,
    ) -> Result<Option<Value>, PatchError> {
        match (existing, patch) {
            (Some(Value::Object(stored)), Value::Object(patch)) => {
                let stored = if self.strategy() == Some(&FieldStrategy::Replace) {
                    Map::new()
                } else {
                    stored
                };
                Ok(self.merge_object(stored, patch)?.map(Value::Object))
            }
            (Some(Value::Array(stored)), Value::Array(patch)) => {
                Ok(Some(Value::Array(self.merge_list(stored, patch, order)?)))
            }
            // Absent, or of another type: the patch value replaces it, its directives applied.
            (_, Value::Object(patch)) => {
                Ok(self.merge_object(Map::new(), patch)?.map(Value::Object))
            }
            (_, Value::Array(patch)) => Ok(Some(Value::Array(self.merge_list(
                Vec::new(),
                patch,
                order,
            )?))),
            (_, scalar) => Ok(Some(scalar.clone())),
        }
    }

    /// The `$patch` directive of a list element, if it is an object that has one.
    fn element_directive(&self, element: &Value) -> Result<Option<Directive>, PatchError> {
        match element.as_object().and_then(|m| m.get(DIRECTIVE)) {
            Some(value) => self.parse_directive(value).map(Some),
            None => Ok(None),
        }
    }

    fn merge_list(
        &mut self,
        stored: Vec<Value>,
        patch: &[Value],
        order: Option<&Value>,
    ) -> Result<Vec<Value>, PatchError> {
        let mut replace = false;
        let mut force_merge = false;
        let mut has_delete = false;
        for (i, element) in patch.iter().enumerate() {
            let directive = self.with(Segment::Index(i), |m| m.element_directive(element))?;
            match directive {
                Some(Directive::Replace) => replace = true,
                Some(Directive::Merge) => force_merge = true,
                Some(Directive::Delete) => has_delete = true,
                None => {}
            }
        }
        let order = match order {
            Some(Value::Array(order)) => Some(order.as_slice()),
            Some(_) => {
                return Err(self.invalid(format!("{SET_ELEMENT_ORDER}<field> must be a list")))
            }
            None => None,
        };

        let mode = match self.strategy() {
            _ if replace => ListMode::Replace,
            Some(FieldStrategy::Merge { key: Some(key) }) => ListMode::MergeByKey(key.clone()),
            Some(FieldStrategy::Merge { key: None }) => ListMode::MergeSet,
            _ if force_merge => ListMode::MergeSet,
            _ => ListMode::Replace,
        };
        match mode {
            ListMode::MergeByKey(key) => self.merge_list_by_key(stored, patch, &key, order),
            ListMode::MergeSet => self.merge_primitive_list(stored, patch, order),
            ListMode::Replace => {
                // Elements carrying `$patch` are directives, not values.
                if has_delete && !replace {
                    return Err(self.invalid(
                        "\"$patch: delete\" needs a list that merges by key, and this list is \
                         replaced as a whole",
                    ));
                }
                let mut items = Vec::with_capacity(patch.len());
                for (i, element) in patch.iter().enumerate() {
                    if element
                        .as_object()
                        .is_some_and(|m| m.contains_key(DIRECTIVE))
                    {
                        continue;
                    }
                    items.extend(self.with(Segment::Index(i), |m| m.clean_element(element))?);
                }
                Ok(items)
            }
        }
    }

    /// A list element of a replaced list: objects have their directives applied.
    fn clean_element(&mut self, element: &Value) -> Result<Option<Value>, PatchError> {
        match element {
            Value::Object(patch) => Ok(self.merge_object(Map::new(), patch)?.map(Value::Object)),
            other => Ok(Some(other.clone())),
        }
    }

    fn merge_primitive_list(
        &mut self,
        stored: Vec<Value>,
        patch: &[Value],
        order: Option<&[Value]>,
    ) -> Result<Vec<Value>, PatchError> {
        let mut items: Vec<&Value> = Vec::new();
        for (i, element) in patch.iter().enumerate() {
            match element {
                Value::Object(m) if m.contains_key(DIRECTIVE) && m.len() == 1 => {}
                Value::Object(_) | Value::Array(_) => {
                    return self.with(Segment::Index(i), |m| {
                        Err(m.invalid(
                            "this list merges as a set of primitives and has no merge key, \
                             so its elements cannot be objects or lists",
                        ))
                    })
                }
                primitive => items.push(primitive),
            }
        }
        let mut merged: Vec<Value> = Vec::with_capacity(stored.len() + items.len());
        for value in stored.iter().chain(items.iter().copied()) {
            if !merged.contains(value) {
                merged.push(value.clone());
            }
        }
        let named: Vec<Value> = match order {
            Some(order) => {
                if let Some(bad) = order.iter().find(|v| v.is_object() || v.is_array()) {
                    return Err(self.invalid(format!(
                        "{SET_ELEMENT_ORDER}<field> of a list of primitives must hold primitives, \
                         found {}",
                        json_kind(bad)
                    )));
                }
                let ids: Vec<Value> = items.iter().map(|v| (*v).clone()).collect();
                self.check_order(&ids, order)?;
                order.to_vec()
            }
            None => items.into_iter().cloned().collect(),
        };
        Ok(arrange(merged, &named, &stored, |v: &Value| {
            Some(v.clone())
        }))
    }

    fn merge_list_by_key(
        &mut self,
        stored: Vec<Value>,
        patch: &[Value],
        key: &str,
        order: Option<&[Value]>,
    ) -> Result<Vec<Value>, PatchError> {
        let identity = |v: &Value| v.as_object().and_then(|m| m.get(key)).cloned();
        let mut list = stored.clone();

        // Deletions first, then merges: `[{name: a, $patch: delete}, {name: a, ...}]` re-creates.
        let mut merges: Vec<(usize, &Object, Value)> = Vec::new();
        for (i, element) in patch.iter().enumerate() {
            self.with(Segment::Index(i), |m| {
                let Value::Object(object) = element else {
                    return Err(m.invalid(format!(
                        "this list merges by the key {key:?}, so its elements must be objects, \
                         found {}",
                        json_kind(element)
                    )));
                };
                let directive = match object.get(DIRECTIVE) {
                    Some(value) => Some(m.parse_directive(value)?),
                    None => None,
                };
                let Some(id) = object.get(key) else {
                    if directive.is_some() && object.len() == 1 {
                        // A bare `{"$patch": "merge"}` list marker.
                        return Ok(());
                    }
                    return Err(PatchError::MissingMergeKey {
                        path: m.display_path(),
                        key: key.to_owned(),
                    });
                };
                if directive == Some(Directive::Delete) {
                    list.retain(|stored| identity(stored).as_ref() != Some(id));
                } else {
                    merges.push((i, object, id.clone()));
                }
                Ok(())
            })?;
        }
        for (i, object, id) in &merges {
            self.with(Segment::Index(*i), |m| {
                let position = list.iter().position(|v| identity(v).as_ref() == Some(id));
                match position {
                    Some(position) => {
                        let stored = match std::mem::take(&mut list[position]) {
                            Value::Object(stored) => stored,
                            _ => Map::new(),
                        };
                        match m.merge_object(stored, object)? {
                            Some(merged) => list[position] = Value::Object(merged),
                            None => {
                                list.remove(position);
                            }
                        }
                    }
                    None => {
                        if let Some(new) = m.merge_object(Map::new(), object)? {
                            list.push(Value::Object(new));
                        }
                    }
                }
                Ok(())
            })?;
        }

        let patched_ids: Vec<Value> = merges.into_iter().map(|(_, _, id)| id).collect();
        let named = match order {
            Some(order) => {
                let ids = order
                    .iter()
                    .enumerate()
                    .map(|(i, entry)| {
                        identity(entry).ok_or_else(|| {
                            self.invalid(format!(
                                "entry {i} of {SET_ELEMENT_ORDER}<field> has no merge key {key:?}"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.check_order(&patched_ids, &ids)?;
                ids
            }
            None => patched_ids,
        };
        Ok(arrange(list, &named, &stored, identity))
    }

    /// `$setElementOrder` must name every element the patch list names, in the same order.
    fn check_order(&self, patched: &[Value], order: &[Value]) -> Result<(), PatchError> {
        let mut last = 0;
        for id in patched {
            let Some(position) = order.iter().position(|o| o == id) else {
                return Err(self.invalid(format!(
                    "the patch list names {id}, which {SET_ELEMENT_ORDER}<field> does not"
                )));
            };
            if position < last {
                return Err(self.invalid(format!(
                    "the patch list puts {id} in another order than {SET_ELEMENT_ORDER}<field>"
                )));
            }
            last = position;
        }
        Ok(())
    }
}

/// Orders a merged list: elements whose identity is in `named` follow `named`'s order, the
/// others keep their order, and the two interleave by their positions in `stored`.
fn arrange(
    list: Vec<Value>,
    named: &[Value],
    stored: &[Value],
    identity: impl Fn(&Value) -> Option<Value>,
) -> Vec<Value> {
    let stored_ids: Vec<Option<Value>> = stored.iter().map(&identity).collect();
    let stored_position = |id: &Option<Value>| -> Option<usize> {
        id.as_ref()
            .and_then(|id| stored_ids.iter().position(|s| s.as_ref() == Some(id)))
    };

    let mut right: Vec<(usize, Value, Option<Value>)> = Vec::new();
    let mut left: Vec<(Value, Option<Value>)> = Vec::new();
    for value in list {
        let id = identity(&value);
        match id
            .as_ref()
            .and_then(|id| named.iter().position(|n| n == id))
        {
            Some(rank) => right.push((rank, value, id)),
            None => left.push((value, id)),
        }
    }
    right.sort_by_key(|(rank, _, _)| *rank);

    // A named element that was not stored takes the stored position of the next named element
    // that was; with none after it, it goes after every unnamed element.
    let mut effective: Vec<Option<usize>> = vec![None; right.len()];
    let mut next = None;
    for (i, (_, _, id)) in right.iter().enumerate().rev() {
        if let Some(position) = stored_position(id) {
            next = Some(position);
        }
        effective[i] = next;
    }

    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().zip(effective).peekable();
    loop {
        let take_right = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((_, left_id)), Some((_, right_position))) => {
                let left_position = stored_position(left_id).unwrap_or(usize::MAX);
                right_position.is_some_and(|r| r < left_position)
            }
        };
        if take_right {
            if let Some(((_, value, _), _)) = right.next() {
                out.push(value);
            }
        } else if let Some((value, _)) = left.next() {
            out.push(value);
        }
    }
    out
}

#[cfg(test)]
mod tests;
