//! How `tributary describe` prints image streams, tags and images, as `oc describe` does (labelled fields, sizes
//! in decimal units, relative times). Pure formatting: called by the stream and import verbs, calls nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use registry::http::kube::ago;
use streams::model::{Image, ImageStream, ImageStreamTag, TagReference};
use streams::refs::KIND_IMAGE_STREAM_TAG;
use streams::rules::REFERENCE_LOCAL;

fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{:<width$}\t{value}", format!("{label}:"));
    }
    out
}

fn pairs(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "<none>".into();
    }
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n\t\t\t")
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(ago).unwrap_or_else(|| "<unknown>".into())
}

/// What a spec tag says about where its images come from.
fn spec_line(t: &TagReference) -> Option<String> {
    let from = t.from.as_ref()?;
    let name = match &from.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", from.name),
        _ => from.name.clone(),
    };
    Some(match (from.kind.as_str(), t.reference, t.import_policy.scheduled) {
        ("DockerImage", true, _) => format!("reference to registry {name}"),
        ("DockerImage", false, true) => format!("updates automatically from registry {name}"),
        ("DockerImage", false, false) => format!("tagged from {name} (waiting for an import)"),
        (KIND_IMAGE_STREAM_TAG, _, _) => format!("tagged from {name} (tracking)"),
        _ => format!("tagged from {name}"),
    })
}

/// `oc describe is/NAME`: the stream, then each tag with where it comes from and its history, newest first.
pub fn describe_stream(is: &ImageStream) -> String {
    let images: BTreeSet<String> = is
        .status
        .tags
        .iter()
        .flat_map(|t| t.items.iter().filter_map(|e| e.image.as_ref().map(|d| d.to_string())))
        .collect();
    let mut tags: BTreeSet<String> = is.status.tags.iter().map(|t| t.tag.clone()).collect();
    tags.extend(is.spec.tags.iter().map(|t| t.name.clone()));
    let mut out = fields(&[
        ("Name", is.metadata.name.clone()),
        ("Namespace", is.metadata.namespace.clone().unwrap_or_default()),
        ("Created", when(is.metadata.creation_timestamp)),
        ("Labels", pairs(&is.metadata.labels)),
        ("Annotations", pairs(&is.metadata.annotations)),
        (
            "Docker Pull Spec",
            is.status
                .public_docker_image_repository
                .clone()
                .unwrap_or_else(|| is.status.docker_image_repository.clone()),
        ),
        ("Image Lookup", format!("local={}", is.spec.lookup_policy.local)),
        ("Unique Images", images.len().to_string()),
        ("Tags", tags.len().to_string()),
    ]);
    // `latest` first, then the others by name.
    let mut order: Vec<&String> = tags.iter().collect();
    order.sort_by_key(|t| (t.as_str() != "latest", t.as_str()));
    for tag in order {
        let _ = writeln!(out, "\n{tag}");
        let spec = is.spec.tags.iter().find(|t| &t.name == tag);
        if let Some(line) = spec.and_then(spec_line) {
            let _ = writeln!(out, "  {line}");
        }
        if spec.is_some_and(|t| t.reference_policy.kind == REFERENCE_LOCAL) {
            let _ = writeln!(out, "    prefer registry pullthrough when referencing this tag");
        }
        let history = is.status.tags.iter().find(|t| &t.tag == tag);
        match history.map(|h| h.items.as_slice()).unwrap_or_default() {
            [] => {
                let _ = writeln!(out, "\n  no image yet");
            }
            items => {
                let _ = writeln!(out);
                for (i, e) in items.iter().enumerate() {
                    let mark = if i == 0 { "*" } else { " " };
                    let _ = writeln!(out, "  {mark} {}\n      {}", e.docker_image_reference, ago(e.created));
                }
            }
        }
        for c in history.map(|h| h.conditions.as_slice()).unwrap_or_default() {
            let _ = writeln!(out, "  ! {}: {} {}", c.kind, c.reason, c.message);
        }
    }
    out
}

/// Decimal sizes as `oc` prints them, four significant digits at most: `251.2 MB`.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < units.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let decimals = 4usize.saturating_sub((size.trunc() as u64).to_string().len());
    let text = format!("{size:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text };
    format!("{text} {}", units[unit])
}

/// `oc describe istag/NAME:TAG`: the image the tag points at, with its configuration.
pub fn describe_tag(t: &ImageStreamTag) -> String {
    let Some(image) = &t.image else {
        let spec = t.tag.as_ref().and_then(spec_line).unwrap_or_default();
        return fields(&[("Name", t.metadata.name.clone()), ("Spec", spec), ("Image", "<none yet>".into())]);
    };
    let mut rows = image_rows(image);
    rows.insert(0, ("Image Name", t.metadata.name.clone()));
    rows.insert(2, ("Created", when(t.metadata.creation_timestamp)));
    let mut out = fields(&rows);
    if !image.docker_image_layers.is_empty() {
        let _ = writeln!(out, "\nLayers:");
        for l in &image.docker_image_layers {
            let _ = writeln!(out, "  {}\t{}", human_size(l.size), l.name);
        }
    }
    if !image.docker_image_manifests.is_empty() {
        let _ = writeln!(out, "\nManifests:");
        for m in &image.docker_image_manifests {
            let platform = [m.os.as_str(), m.architecture.as_str(), m.variant.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            let _ = writeln!(out, "  {platform}\t{}", m.digest);
        }
    }
    out
}

fn image_rows(image: &Image) -> Vec<(&'static str, String)> {
    let md = &image.docker_image_metadata;
    let cfg = md.config.clone().unwrap_or_default();
    let layers = &image.docker_image_layers;
    let size = match (layers.first(), layers.last()) {
        (Some(first), Some(last)) => format!(
            "{} in {} layers (first layer {}, last binary layer {})",
            human_size(md.size),
            layers.len(),
            human_size(first.size),
            human_size(last.size)
        ),
        _ => human_size(md.size),
    };
    let join = |v: &Option<Vec<String>>| {
        v.as_ref().map(|v| v.join(" ")).filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into())
    };
    let ports =
        cfg.exposed_ports.as_ref().map(|p| p.keys().cloned().collect::<Vec<_>>().join(", ")).filter(|s| !s.is_empty());
    let labels = cfg.labels.clone().unwrap_or_default();
    let mut rows = vec![
        ("Docker Image", image.docker_image_reference.clone()),
        ("Name", image.metadata.name.clone()),
        ("Image Size", size),
        ("Image Created", when(md.created)),
        ("Author", if md.author.is_empty() { "<none>".into() } else { md.author.clone() }),
        (
            "Arch",
            [md.os.as_str(), md.architecture.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/"),
        ),
        ("Entrypoint", join(&cfg.entrypoint)),
        ("Command", join(&cfg.cmd)),
        ("Working Dir", if cfg.working_dir.is_empty() { "<none>".into() } else { cfg.working_dir.clone() }),
        ("User", if cfg.user.is_empty() { "<none>".into() } else { cfg.user.clone() }),
        ("Exposes Ports", ports.unwrap_or_else(|| "<none>".into())),
        ("Docker Labels", pairs(&labels)),
    ];
    if let Some(env) = cfg.env.as_ref().filter(|e| !e.is_empty()) {
        rows.push(("Environment", env.join("\n\t\t\t")));
    }
    rows
}

// -----------------------------------------------------------------------------------------------------------
// YAML output

/// YAML for a JSON value (block style; strings quoted JSON-style whenever plain YAML could misread them).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_oc() {
        assert_eq!(human_size(251_200_000), "251.2 MB");
        assert_eq!(human_size(2_898_000), "2.898 MB");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(0), "0 B");
    }
}
