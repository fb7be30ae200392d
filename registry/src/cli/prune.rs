//! `tributary adm prune images`: `oc adm prune images`' flags, sent to `POST …/prune/images` (see
//! `registry::gc::prune`), and the report printed in `oc`'s manner (tag-history items, images, repository links,
//! blobs with sizes, the total) or as JSON. Called by [`super::run`] only.

use clap::{ArgAction, Args};
use serde_json::{json, Value};

use super::client::Client;
use super::{Connection, GcOutput};

/// `adm prune images`' flags.
#[derive(Args, Debug)]
pub struct PruneImages {
    /// Keep the newest N items of every tag's history [default: 3].
    #[arg(long)]
    keep_tag_revisions: Option<usize>,
    /// Never prune an image or history item younger than this (`60m`, `2h`, or seconds) [default: 60m].
    #[arg(long, value_parser = registry::config::duration::seconds_or_duration)]
    keep_younger_than: Option<std::time::Duration>,
    /// Prune images over their namespace's size limit (the smallest LimitRange `openshift.io/Image` `max.storage`):
    /// a tag-history item goes exactly when its image exceeds it, whatever its age; items within it stay. Cannot be
    /// combined with the keep flags.
    #[arg(long)]
    prune_over_size_limit: bool,
    /// Include imported and pulled-through images (`--all=false`: only images pushed here).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", require_equals = true)]
    all: bool,
    /// Only this namespace's image streams.
    #[arg(long, short = 'n')]
    namespace: Option<names::Namespace>,
    /// Remove (without it nothing changes: a dry run).
    #[arg(long)]
    confirm: bool,
    /// `json`: the whole report.
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<GcOutput>,
    #[command(flatten)]
    conn: Connection,
}

pub async fn run(p: PruneImages) -> anyhow::Result<()> {
    let body = json!({
        "keepTagRevisions": p.keep_tag_revisions,
        "keepYoungerThanSeconds": p.keep_younger_than.map(|d| d.as_secs()),
        "pruneOverSizeLimit": p.prune_over_size_limit,
        "all": p.all,
        "namespace": p.namespace,
        "confirm": p.confirm,
    });
    let what = if p.confirm { "pruning images" } else { "finding images to prune (dry run)" };
    let progress = super::progress::Progress::spinner(what, p.output.is_some());
    let report = Client::from(p.conn)?.post("/prune/images", body).await?;
    drop(progress);
    match p.output {
        Some(GcOutput::Json) => println!("{}", serde_json::to_string_pretty(&report)?),
        None => println!("{}", describe(&report)),
    }
    Ok(())
}

/// The report as `oc adm prune images` prints it: the same sections for a dry run and a confirmed run, only the
/// first and last lines differ.
pub fn describe(v: &Value) -> String {
    let dry = v["dryRun"] == json!(true);
    let list = |field: &str| v[field].as_array().cloned().unwrap_or_default();
    let s = |x: &Value| x.as_str().unwrap_or("?").to_owned();
    let mut out = String::new();
    if dry {
        out.push_str("Dry run enabled - no modifications will be made. Add --confirm to remove images\n\n");
    }
    let events = list("tagEvents");
    if !events.is_empty() {
        out.push_str("Deleting tag history items ...\n");
        for e in &events {
            out.push_str(&format!("{}:{}  {}\n", s(&e["repository"]), s(&e["tag"]), s(&e["image"])));
        }
        out.push('\n');
    }
    let images = list("images");
    if !images.is_empty() {
        out.push_str("Deleting images ...\n");
        for i in &images {
            out.push_str(&format!("{}  {} bytes\n", s(&i["digest"]), i["size"].as_u64().unwrap_or(0)));
        }
        out.push('\n');
    }
    let links = list("links");
    if !links.is_empty() {
        out.push_str("Deleting repository links ...\n");
        for l in &links {
            out.push_str(&format!("{}  {}  {}\n", s(&l["repository"]), s(&l["kind"]), s(&l["digest"])));
        }
        out.push('\n');
    }
    let blobs = list("blobs");
    if !blobs.is_empty() {
        out.push_str("Deleting blobs ...\n");
        for b in &blobs {
            out.push_str(&format!(
                "{}  {}  {} bytes\n",
                s(&b["kind"]),
                s(&b["digest"]),
                b["size"].as_u64().unwrap_or(0)
            ));
        }
        out.push('\n');
    }
    let (n, bytes) = (v["deletedObjects"].as_u64().unwrap_or(0), v["bytesFreed"].as_u64().unwrap_or(0));
    if dry {
        out.push_str(&format!("Would delete {n} objects, freeing {bytes} bytes"));
    } else {
        out.push_str(&format!("Deleted {n} objects, freed {bytes} bytes"));
    }
    let kept = list("keptAtRecheck").len();
    if kept > 0 {
        out.push_str(&format!("; {kept} kept: referenced again while pruning"));
    }
    for e in list("errors") {
        out.push_str(&format!("\nerror: {}", s(&e)));
    }
    out
}
