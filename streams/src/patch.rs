//! JSON patches of API objects: RFC 7386 merge patches and Kubernetes' strategic merge patches (the image stream's
//! `spec.tags` merged by name). Pure functions over `serde_json::Value`; [`crate::objects`] re-exports them and the
//! registry's HTTP edge calls them for `PATCH` of image streams and image stream tags.

use serde_json::Value;

/// How a PATCH body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`): lists are replaced whole.
    Merge,
    /// Kubernetes' strategic merge patch (`application/strategic-merge-patch+json`, what `kubectl apply` sends
    /// when the OpenAPI document allows it): like a merge patch, except that the lists of [`KEYED_LISTS`] are
    /// merged item by item on their key, and the directives `$patch`, `$setElementOrder/…`, `$retainKeys` and
    /// `$deleteFromPrimitiveList/…` are honoured.
    Strategic,
}

/// The lists merged by key in a strategic merge patch: (field name, key).
pub const KEYED_LISTS: [(&str, &str); 1] = [("tags", "name")];

/// Applies `patch` to `target` as `kind` says.
pub fn apply_patch(target: &mut Value, patch: &Value, kind: PatchKind) {
    match kind {
        PatchKind::Merge => merge_patch(target, patch),
        PatchKind::Strategic => strategic_merge(target, patch),
    }
}

/// Applies a strategic merge patch (see [`PatchKind::Strategic`]).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if fields.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in fields {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(gone)) = (t.get_mut(field), v) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let key = KEYED_LISTS.iter().find(|(f, _)| f == k).map(|(_, key)| *key);
        match (key, t.get_mut(k), v) {
            (Some(key), Some(Value::Array(items)), Value::Array(changes)) => {
                for change in changes {
                    let id = change.get(key);
                    let at = items.iter().position(|i| id.is_some() && i.get(key) == id);
                    match (change.get("$patch").and_then(Value::as_str), at) {
                        (Some("delete"), Some(i)) => {
                            items.remove(i);
                        }
                        (Some("delete"), None) => {}
                        (_, Some(i)) => strategic_merge(&mut items[i], change),
                        (_, None) => items.push(without_directives(change)),
                    }
                }
                if let Some(Value::Array(order)) = fields.get(&format!("$setElementOrder/{k}")) {
                    let rank = |i: &Value| order.iter().position(|o| o.get(key) == i.get(key)).unwrap_or(usize::MAX);
                    items.sort_by_key(rank);
                }
            }
            (_, Some(existing), _) => strategic_merge(existing, v),
            (_, None, _) => {
                t.insert(k.clone(), without_directives(v));
            }
        }
    }
    if let Some(Value::Array(keep)) = fields.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
}

/// `v` with every `$`-directive removed, at any depth.
fn without_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), without_directives(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// Applies an RFC 7386 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_patches_tags_by_name() {
        let mut doc = json!({"spec": {"lookupPolicy": {"local": false}, "tags": [
            {"name": "a", "from": {"kind": "DockerImage", "name": "x"}, "generation": 3},
            {"name": "b", "from": {"kind": "DockerImage", "name": "y"}},
            {"name": "c"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/tags": [{"name": "c"}, {"name": "a"}, {"name": "d"}],
            "tags": [{"name": "a", "from": {"name": "x2"}}, {"name": "b", "$patch": "delete"}, {"name": "d", "reference": true}],
            "lookupPolicy": null}});
        strategic_merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"spec": {"tags": [
            {"name": "c"},
            {"name": "a", "from": {"kind": "DockerImage", "name": "x2"}, "generation": 3},
            {"name": "d", "reference": true}]}})
        );
        // The same patch read as a JSON merge patch replaces the list whole.
        let mut doc2 = json!({"spec": {"tags": [{"name": "a", "generation": 3}]}});
        merge_patch(&mut doc2, &json!({"spec": {"tags": [{"name": "a"}]}}));
        assert_eq!(doc2, json!({"spec": {"tags": [{"name": "a"}]}}));
        let mut doc3 = json!({"metadata": {"labels": {"k": "v"}, "x": 1}});
        strategic_merge(&mut doc3, &json!({"metadata": {"$retainKeys": ["labels"], "labels": {"j": "w"}}}));
        assert_eq!(doc3, json!({"metadata": {"labels": {"k": "v", "j": "w"}}}));
    }
}
