//! The `fieldPath` of an image-change trigger: the small JSONPath subset OpenShift accepts
//! (`spec.template.spec.containers[?(@.name='web')].image`, `spec.containers[0].image`), parsed into steps and
//! resolved against an object into the JSON Pointer a patch names. Pure; used by [`super::triggers`] and the
//! `set triggers` verb. Only a container's `image` (containers or init containers, of a pod or a pod template)
//! may be named, as in OpenShift: a trigger cannot rewrite anything else.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `.name`
    Field(String),
    /// `[3]`
    Index(usize),
    /// `[?(@.key='value')]` (or `==`, either quote): the one array element whose `key` is `value`.
    Filter { key: String, value: String },
}

/// A parsed field path; [`FieldPath::to_string`] gives back its canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    steps: Vec<Step>,
}

/// Why a field path was refused, or did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("field path {0:?} is not valid: {1}")]
    Syntax(String, &'static str),
    #[error("field path {0:?} does not name a container's image (containers[…].image or initContainers[…].image)")]
    NotAnImage(String),
    #[error("field path {path:?} selects nothing in the object: no {missing}")]
    NoMatch { path: String, missing: String },
}

impl FieldPath {
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The path of container `name`'s image under a pod spec at `prefix` (`spec` for a Pod, `spec.template.spec`
    /// for a Deployment): what `set triggers -c NAME` writes.
    pub fn container_image(prefix: &str, name: &str) -> FieldPath {
        let mut steps: Vec<Step> = prefix.split('.').map(|f| Step::Field(f.to_owned())).collect();
        steps.push(Step::Field("containers".into()));
        steps.push(Step::Filter { key: "name".into(), value: name.to_owned() });
        steps.push(Step::Field("image".into()));
        FieldPath { steps }
    }

    /// Finds the field in `object`: its JSON Pointer and its current value (`None` when the `image` field itself
    /// is absent; everything before it must exist).
    pub fn resolve<'a>(&self, object: &'a Value) -> Result<(String, Option<&'a Value>), PathError> {
        let mut at = object;
        let mut pointer = String::new();
        let last = self.steps.len() - 1;
        for (i, step) in self.steps.iter().enumerate() {
            let no = |missing: String| PathError::NoMatch { path: self.to_string(), missing };
            match step {
                Step::Field(f) => {
                    pointer.push('/');
                    pointer.push_str(&f.replace('~', "~0").replace('/', "~1"));
                    match at.get(f) {
                        Some(v) => at = v,
                        None if i == last && at.is_object() => return Ok((pointer, None)),
                        None => return Err(no(format!("field {f:?}"))),
                    }
                }
                Step::Index(n) => match at.as_array().and_then(|a| a.get(*n)) {
                    Some(v) => {
                        pointer.push_str(&format!("/{n}"));
                        at = v;
                    }
                    None => return Err(no(format!("element {n}"))),
                },
                Step::Filter { key, value } => {
                    let found = at.as_array().and_then(|a| {
                        a.iter().position(|e| e.get(key).and_then(Value::as_str) == Some(value.as_str()))
                    });
                    match found {
                        Some(n) => {
                            pointer.push_str(&format!("/{n}"));
                            at = &at[n];
                        }
                        None => return Err(no(format!("element with {key} {value:?}"))),
                    }
                }
            }
        }
        Ok((pointer, Some(at)))
    }

    /// Whether the path ends in `containers[…].image` or `initContainers[…].image`.
    fn names_container_image(&self) -> bool {
        match self.steps.as_slice() {
            [.., Step::Field(list), Step::Index(_) | Step::Filter { .. }, Step::Field(image)] => {
                image == "image" && (list == "containers" || list == "initContainers")
            }
            _ => false,
        }
    }
}

impl FromStr for FieldPath {
    type Err = PathError;

    fn from_str(text: &str) -> Result<FieldPath, PathError> {
        let bad = |why| PathError::Syntax(text.to_owned(), why);
        let mut rest = text.trim();
        // kubectl's `{.spec…}` and JSONPath's `$.spec…` mean the same.
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            rest = inner;
        }
        rest = rest.strip_prefix('$').unwrap_or(rest);
        rest = rest.strip_prefix('.').unwrap_or(rest);
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let close = r.find(']').ok_or_else(|| bad("an unclosed ["))?;
                let inner = &r[..close];
                // A quoted value may hold a `]`: look for the `)]` that ends a filter.
                let (inner, after) = if inner.starts_with("?(") {
                    let end = r.find(")]").ok_or_else(|| bad("an unclosed [?("))?;
                    (&r[..end + 1], &r[end + 2..])
                } else {
                    (inner, &r[close + 1..])
                };
                steps.push(parse_bracket(inner).ok_or_else(|| bad("a selector other than [N] or [?(@.key='value')]"))?);
                rest = after;
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let field = &rest[..end];
                if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(bad("an empty or unusual field name"));
                }
                steps.push(Step::Field(field.to_owned()));
                rest = &rest[end..];
            }
            if let Some(r) = rest.strip_prefix('.') {
                if r.is_empty() || r.starts_with(['.', '[']) {
                    return Err(bad("a dot with no field after it"));
                }
                rest = r;
            }
        }
        if steps.is_empty() {
            return Err(bad("it is empty"));
        }
        let path = FieldPath { steps };
        if !path.names_container_image() {
            return Err(PathError::NotAnImage(text.to_owned()));
        }
        Ok(path)
    }
}

/// `3` or `?(@.name='web')` (the text between the brackets).
fn parse_bracket(inner: &str) -> Option<Step> {
    if let Ok(n) = inner.trim().parse::<usize>() {
        return Some(Step::Index(n));
    }
    let cond = inner.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let cond = cond.strip_prefix("@.")?;
    let (key, value) = cond.split_once("==").or_else(|| cond.split_once('='))?;
    let (key, value) = (key.trim(), value.trim());
    let unquoted = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some(Step::Filter { key: key.to_owned(), value: unquoted.to_owned() })
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Field(name) if i == 0 => write!(f, "{name}")?,
                Step::Field(name) => write!(f, ".{name}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::Filter { key, value } => write!(f, "[?(@.{key}=='{value}')]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "side", "image": "nginx"}, {"name": "web", "image": "example:latest"}],
        }}}})
    }

    #[test]
    fn the_seed_path_selects_the_web_container() {
        let p: FieldPath = "spec.template.spec.containers[?(@.name='web')].image".parse().unwrap();
        let d = deployment();
        let (pointer, value) = p.resolve(&d).unwrap();
        assert_eq!(pointer, "/spec/template/spec/containers/1/image");
        assert_eq!(value, Some(&json!("example:latest")));
    }

    #[test]
    fn other_spellings_mean_the_same() {
        let d = deployment();
        for text in [
            "spec.template.spec.containers[?(@.name==\"web\")].image",
            "{.spec.template.spec.containers[?(@.name == 'web')].image}",
            "$.spec.template.spec.containers[1].image",
        ] {
            let p: FieldPath = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.resolve(&d).unwrap().0, "/spec/template/spec/containers/1/image", "{text}");
        }
        let init: FieldPath = "spec.template.spec.initContainers[?(@.name='init')].image".parse().unwrap();
        assert_eq!(
            init.resolve(&d).unwrap(),
            ("/spec/template/spec/initContainers/0/image".into(), Some(&json!("busybox")))
        );
    }

    #[test]
    fn the_canonical_text_parses_back() {
        let p = FieldPath::container_image("spec.template.spec", "web");
        assert_eq!(p.to_string(), "spec.template.spec.containers[?(@.name=='web')].image");
        assert_eq!(p.to_string().parse::<FieldPath>().unwrap(), p);
    }

    #[test]
    fn a_missing_container_is_no_match() {
        let p: FieldPath = "spec.template.spec.containers[?(@.name='db')].image".parse().unwrap();
        let e = p.resolve(&deployment()).unwrap_err();
        assert!(matches!(&e, PathError::NoMatch { missing, .. } if missing.contains("\"db\"")), "{e}");
        let p: FieldPath = "spec.containers[0].image".parse().unwrap();
        assert!(matches!(p.resolve(&deployment()), Err(PathError::NoMatch { .. })));
    }

    #[test]
    fn an_absent_image_field_can_still_be_set() {
        let pod = json!({"spec": {"containers": [{"name": "web"}]}});
        let p: FieldPath = "spec.containers[?(@.name='web')].image".parse().unwrap();
        assert_eq!(p.resolve(&pod).unwrap(), ("/spec/containers/0/image".into(), None));
    }

    #[test]
    fn bad_paths_are_refused() {
        for text in [
            "",
            "spec..containers[0].image",
            "spec.containers[0.image",
            "spec.containers[?(@.name=web)].image",
            "spec.containers[*].image",
            "spec.containers[?(@.name='web'.image",
        ] {
            assert!(matches!(text.parse::<FieldPath>(), Err(PathError::Syntax(..))), "{text:?} accepted");
        }
        for text in ["spec.replicas", "metadata.annotations.x", "spec.containers[0].name", "spec.volumes[0].image"] {
            assert!(matches!(text.parse::<FieldPath>(), Err(PathError::NotAnImage(_))), "{text:?} accepted");
        }
    }
}
