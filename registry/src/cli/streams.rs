//! The image stream verbs of `tributary`, named and flagged as `oc` users know them: `tag` (`--alias`,
//! `--reference`, `--reference-policy`, `--scheduled`, `-d`), `get is|istag`, `describe is/NAME` and
//! `describe istag/NAME:TAG`, `delete istag/NAME:TAG` (and `is/NAME`), `set image-lookup`; `-n NAMESPACE`
//! everywhere. They talk to a server's `/apis/image.openshift.io/v1/` API with the connection of the other
//! verbs (`--server`/`--token`, the environment, or `tributary login`), and never touch the stores. What they
//! print is formatted by [`super::describe`] and [`super::yaml`].

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use names::{Namespace, RepositoryName, StreamName, TagName};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use streams::model::{ImageStream, ImageStreamTag, ObjectReference, TagReference};
use streams::refs::{parse_cli_source, IsTagName, TagSource, KIND_IMAGE_STREAM_IMAGE, KIND_IMAGE_STREAM_TAG};
use streams::rules::{REFERENCE_LOCAL, REFERENCE_SOURCE};

pub(super) use super::api::{typed, Api};
use super::describe::{describe_stream, describe_tag};
use super::yaml::to_yaml;
use super::Connection;

/// How often a read-modify-write is retried after a 409 (someone else changed the stream in between).
const RETRIES: usize = 10;

/// The namespace of a verb: `-n`, else `$TRIBUTARY_NAMESPACE`, else `default`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[arg(short = 'n', long = "namespace", env = "TRIBUTARY_NAMESPACE", default_value = "default")]
    pub namespace: Namespace,
    #[command(flatten)]
    pub conn: Connection,
}

/// The new top-level verbs.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tag SOURCE into one or more DESTINATION stream tags, or delete tags from a stream's spec (`-d`).
    Tag(TagArgs),
    /// Show an image stream (`is/NAME`) or an image stream tag (`istag/NAME:TAG`) in detail.
    Describe(DescribeArgs),
    /// Change settings of image streams.
    #[command(subcommand)]
    Set(Set),
    /// Import images from an external registry into a stream (`IS[:TAG] --from REF`, or `--all` tags).
    ImportImage(super::imports::ImportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReferencePolicy {
    Source,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    Docker,
    Istag,
    Isimage,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE then DESTINATION... (`[ns/]stream:tag`, `[ns/]stream@id`, or a pull spec such as
    /// `docker.io/python:3.6`); with `-d`, the tags to delete.
    #[arg(required = true, num_args = 1..)]
    names: Vec<String>,
    /// Delete the named tags from their streams' spec (their history stays until `delete istag`).
    #[arg(short = 'd', long = "delete")]
    delete: bool,
    /// The destination tracks the source tag of the same stream and moves when it moves.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    alias: bool,
    /// The destination is not imported: it points at the source permanently.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    reference: bool,
    /// Pull through this registry (`local`) or from the source (`source`).
    #[arg(long, value_enum)]
    reference_policy: Option<ReferencePolicy>,
    /// Re-import the source periodically (external sources).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    scheduled: bool,
    /// The external source may be reached over plain http or with an unverified certificate.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    insecure: bool,
    /// Read SOURCE as this kind rather than guessing.
    #[arg(long, value_enum)]
    source: Option<SourceKind>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// `is/NAME`, `istag/NAME:TAG`, or the kind and the name as two words.
    #[arg(required = true, num_args = 1..=2)]
    what: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand, Debug)]
pub enum Set {
    /// Let resources in the namespace use the stream's tags by name (`spec.lookupPolicy.local`); without a NAME,
    /// list the streams and their setting. `KIND/NAME` (`deploy/web`): let that cluster object use any stream of
    /// its namespace by name (the `resolve-names` annotation, in the cluster of the kubeconfig).
    ImageLookup {
        names: Vec<String>,
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        enabled: bool,
        /// The cluster's kubeconfig, for `KIND/NAME` [default: $KUBECONFIG, else ~/.kube/config].
        #[arg(long, env = "TRIBUTARY_KUBECONFIG")]
        kubeconfig: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Update a cluster object's container images whenever an image stream tag moves (the annotation
    /// `image.openshift.io/triggers`): `set triggers deploy/NAME --from-image=IS:TAG -c CONTAINER`; without
    /// `--from-image` or `--remove`, list the object's triggers.
    Triggers(super::cluster::TriggersArgs),
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Json,
    Yaml,
    Name,
    Wide,
}

/// `get is [NAME]` and `get istag [NAME:TAG]`.
#[derive(Args, Debug)]
pub struct GetArgs {
    name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Output>,
    /// Across every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    #[command(flatten)]
    target: Target,
}

/// What `get` and `delete` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    ImageStreams,
    ImageStreamTags,
}

impl Resource {
    fn parse(word: &str) -> Option<Resource> {
        match word {
            "is" | "imagestream" | "imagestreams" => Some(Resource::ImageStreams),
            "istag" | "imagestreamtag" | "imagestreamtags" => Some(Resource::ImageStreamTags),
            _ => None,
        }
    }
    fn path(self) -> &'static str {
        match self {
            Resource::ImageStreams => "imagestreams",
            Resource::ImageStreamTags => "imagestreamtags",
        }
    }
    fn singular(self) -> &'static str {
        match self {
            Resource::ImageStreams => "imagestream",
            Resource::ImageStreamTags => "imagestreamtag",
        }
    }
}

/// `delete KIND/NAME...` (or `delete KIND NAME...`), parsed from the words after `delete`.
#[derive(Parser, Debug)]
#[command(name = "delete", no_binary_name = true)]
struct DeleteArgs {
    #[arg(required = true)]
    names: Vec<String>,
    #[command(flatten)]
    target: Target,
}

/// Splits `kind/name` words (or a kind word then names) into the resource and the names.
fn kind_and_names(words: &[String]) -> anyhow::Result<(Resource, Vec<String>)> {
    let first = words.first().ok_or_else(|| anyhow!("name what to act on, e.g. istag/NAME:TAG"))?;
    if let Some(r) = Resource::parse(first) {
        if words.len() < 2 {
            bail!("name the {} too", r.singular());
        }
        return Ok((r, words[1..].to_vec()));
    }
    let mut kind = None;
    let mut names = Vec::new();
    for w in words {
        let (k, n) = w.split_once('/').ok_or_else(|| anyhow!("{w:?}: expected KIND/NAME, e.g. istag/python:3.6"))?;
        let r = Resource::parse(k).ok_or_else(|| anyhow!("{k:?} is not is or istag"))?;
        if kind.is_some_and(|x| x != r) {
            bail!("name one kind at a time");
        }
        kind = Some(r);
        names.push(n.to_owned());
    }
    Ok((kind.unwrap_or(Resource::ImageStreams), names))
}

// -----------------------------------------------------------------------------------------------------------
// Verbs

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Tag(args) if args.delete => untag(args).await,
        Command::Tag(args) => tag(args).await,
        Command::Describe(args) => describe(args).await,
        Command::Set(Set::ImageLookup { names, enabled, kubeconfig, target }) => {
            let (objects, streams): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| n.contains('/'));
            if !objects.is_empty() {
                let cluster = super::cluster::ClusterTarget::new(Some(target.namespace.to_string()), kubeconfig);
                super::cluster::set_image_lookup(&objects, enabled, &cluster).await?;
                if streams.is_empty() {
                    return Ok(());
                }
            }
            let streams = streams.iter().map(|s| s.parse()).collect::<Result<Vec<StreamName>, _>>()?;
            image_lookup(streams, enabled, target).await
        }
        Command::Set(Set::Triggers(args)) => super::cluster::set_triggers(args).await,
        Command::ImportImage(args) => super::imports::import_image(args).await,
    }
}

/// A destination `[ns/]stream:tag`.
fn destination(text: &str, default_ns: &Namespace) -> anyhow::Result<(RepositoryName, TagName)> {
    let (ns, rest) = match text.split_once('/') {
        Some((ns, rest)) => (ns.parse::<Namespace>()?, rest),
        None => (default_ns.clone(), text),
    };
    let n: IsTagName = rest.parse().map_err(|e| anyhow!("destination {text:?}: {e}"))?;
    Ok((RepositoryName::new(ns, n.stream), n.tag))
}

/// The spec tag `tributary tag` writes for `source` into `dst`, as `oc tag` does: an alias tracks the source tag
/// (same stream only); otherwise a tag of a stream is resolved to the image it points at now (a permanent tag).
async fn spec_tag_for(
    api: &Api,
    args: &TagArgs,
    source: &TagSource,
    dst: &RepositoryName,
) -> anyhow::Result<TagReference> {
    let default_ns = &args.target.namespace;
    let src_repo = source.repository(&RepositoryName::new(default_ns.clone(), dst.stream().clone()));
    let from = match (source, args.alias) {
        (TagSource::Tag { .. }, true) => {
            let src = src_repo.ok_or_else(|| anyhow!("an alias needs an image stream tag as source"))?;
            if &src != dst {
                bail!("cannot set alias across different image streams ({src} and {dst})");
            }
            let TagSource::Tag { tag, .. } = source else { unreachable!() };
            ObjectReference {
                kind: KIND_IMAGE_STREAM_TAG.into(),
                name: format!("{}:{tag}", src.stream()),
                namespace: None,
            }
        }
        (_, true) => bail!("--alias needs an image stream tag (stream:tag) as source"),
        (TagSource::Tag { tag, .. }, false) => {
            let src = src_repo.ok_or_else(|| anyhow!("no source stream"))?;
            let istag: ImageStreamTag = typed(
                api.call(
                    Method::GET,
                    &format!("/namespaces/{}/imagestreamtags/{}:{tag}", src.namespace(), src.stream()),
                    None,
                )
                .await?,
            )?;
            let image = istag.image.ok_or_else(|| anyhow!("{src}:{tag} has no image yet"))?;
            ObjectReference {
                kind: KIND_IMAGE_STREAM_IMAGE.into(),
                name: format!("{}@{}", src.stream(), image.metadata.name),
                namespace: (src.namespace() != dst.namespace()).then(|| src.namespace().to_string()),
            }
        }
        (TagSource::Image { .. } | TagSource::DockerImage(_), false) => {
            let mut r = source.to_reference();
            if r.namespace.as_deref() == Some(dst.namespace().as_str()) {
                r.namespace = None;
            }
            r
        }
    };
    let mut t =
        TagReference { name: String::new(), from: Some(from), reference: args.reference, ..TagReference::default() };
    t.import_policy.scheduled = args.scheduled;
    t.import_policy.insecure = args.insecure;
    t.reference_policy.kind = match args.reference_policy {
        Some(ReferencePolicy::Local) => REFERENCE_LOCAL.into(),
        Some(ReferencePolicy::Source) | None => REFERENCE_SOURCE.into(),
    };
    Ok(t)
}

async fn tag(args: TagArgs) -> anyhow::Result<()> {
    let [source_text, destinations @ ..] = args.names.as_slice() else { unreachable!("clap requires one") };
    if destinations.is_empty() {
        bail!("give a SOURCE and at least one DESTINATION (stream:tag)");
    }
    let api = Api::new(&args.target)?;
    let force_docker = args.source == Some(SourceKind::Docker);
    let mut source = parse_cli_source(source_text, force_docker)?;
    if let (Some(SourceKind::Isimage), TagSource::Tag { .. }) = (args.source, &source) {
        bail!("{source_text:?} is not stream@id");
    }
    if let TagSource::Tag { namespace: None, .. } | TagSource::Image { namespace: None, .. } = &source {
        // Sources without a namespace are in the target namespace.
        source = match source {
            TagSource::Tag { stream, tag, .. } => {
                TagSource::Tag { namespace: Some(args.target.namespace.clone()), stream, tag }
            }
            TagSource::Image { stream, id, .. } => {
                TagSource::Image { namespace: Some(args.target.namespace.clone()), stream, id }
            }
            other => other,
        };
    }
    for d in destinations {
        let (dst, dst_tag) = destination(d, &args.target.namespace)?;
        let mut spec = spec_tag_for(&api, &args, &source, &dst).await?;
        spec.name = dst_tag.to_string();
        write_istag(&api, &dst, &dst_tag, spec.clone()).await?;
        let from = spec.from.as_ref().map(|f| f.name.clone()).unwrap_or_default();
        let shown = format!("{}:{dst_tag}", dst.stream());
        match (&source, args.alias, args.scheduled) {
            (TagSource::DockerImage(_), _, true) => println!("Tag {shown} set to import {from} periodically."),
            (_, true, _) => println!("Tag {shown} set up to track {from}."),
            _ => println!("Tag {shown} set to {from}."),
        }
    }
    Ok(())
}

/// Creates the image stream tag, or replaces its spec tag (retrying when someone else wrote in between).
async fn write_istag(api: &Api, dst: &RepositoryName, tag: &TagName, spec: TagReference) -> anyhow::Result<()> {
    let path = format!("/namespaces/{}/imagestreamtags/{}:{tag}", dst.namespace(), dst.stream());
    for _ in 0..RETRIES {
        match api.send(Method::GET, &path, None, false).await {
            Ok(current) => {
                let mut istag: ImageStreamTag = typed(current)?;
                istag.tag = Some(spec.clone());
                istag.image = None;
                let body = serde_json::to_value(&istag)?;
                match api.send(Method::PUT, &path, Some(&body), false).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.status == StatusCode::CONFLICT => continue,
                    Err(e) => return Err(e.fail(false)),
                }
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                let body = json!({"kind": "ImageStreamTag", "apiVersion": "image.openshift.io/v1",
                                  "metadata": {"name": format!("{}:{tag}", dst.stream())}, "tag": spec});
                match api
                    .send(Method::POST, &format!("/namespaces/{}/imagestreamtags", dst.namespace()), Some(&body), false)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if e.status == StatusCode::CONFLICT => continue,
                    Err(e) => return Err(e.fail(false)),
                }
            }
            Err(e) => return Err(e.fail(false)),
        }
    }
    bail!("{dst}:{tag} kept changing; try again")
}

/// Reads a stream, changes it with `edit`, and writes it back conditionally on its `resourceVersion`,
/// retrying when someone else wrote in between.
async fn edit_stream(
    api: &Api,
    repo: &RepositoryName,
    edit: impl Fn(&mut ImageStream) -> anyhow::Result<()>,
) -> anyhow::Result<ImageStream> {
    let path = format!("/namespaces/{}/imagestreams/{}", repo.namespace(), repo.stream());
    for _ in 0..RETRIES {
        let mut is: ImageStream = typed(api.call(Method::GET, &path, None).await?)?;
        edit(&mut is)?;
        let body = serde_json::to_value(&is)?;
        match api.send(Method::PUT, &path, Some(&body), false).await {
            Ok(v) => return typed(v),
            Err(e) if e.status == StatusCode::CONFLICT => continue,
            Err(e) => return Err(e.fail(false)),
        }
    }
    bail!("{repo} kept changing; try again")
}

/// `tag -d`: removes the tags from the spec only.
async fn untag(args: TagArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.target)?;
    for name in &args.names {
        let (repo, tag) = destination(name, &args.target.namespace)?;
        edit_stream(&api, &repo, |is| {
            let before = is.spec.tags.len();
            is.spec.tags.retain(|t| t.name != tag.as_str());
            if is.spec.tags.len() == before {
                bail!("tag {tag} is not in the spec of image stream {repo}");
            }
            Ok(())
        })
        .await?;
        println!("Deleted tag {repo}:{tag}.");
    }
    Ok(())
}

async fn image_lookup(names: Vec<StreamName>, enabled: bool, target: Target) -> anyhow::Result<()> {
    let api = Api::new(&target)?;
    if names.is_empty() {
        let list = api.call(Method::GET, &format!("/namespaces/{}/imagestreams", target.namespace), None).await?;
        let rows = items(&list)
            .iter()
            .map(|s| {
                vec![
                    str_at(s, "/metadata/name"),
                    s.pointer("/spec/lookupPolicy/local").map(|v| v.to_string()).unwrap_or("false".into()),
                ]
            })
            .collect();
        super::table(&["NAME", "LOCAL"], rows);
        return Ok(());
    }
    for name in names {
        let repo = RepositoryName::new(target.namespace.clone(), name);
        edit_stream(&api, &repo, |is| {
            is.spec.lookup_policy.local = enabled;
            Ok(())
        })
        .await?;
        println!("imagestream.image.openshift.io/{} image lookup updated", repo.stream());
    }
    Ok(())
}

// -----------------------------------------------------------------------------------------------------------
// get, delete

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned()
}

pub async fn get(resource: Resource, args: GetArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.target)?;
    let ns = &args.target.namespace;
    let path = match (&args.name, args.all_namespaces) {
        (Some(_), true) => bail!("a name cannot go with --all-namespaces"),
        (Some(name), false) => format!("/namespaces/{ns}/{}/{name}", resource.path()),
        (None, true) => format!("/{}", resource.path()),
        (None, false) => format!("/namespaces/{ns}/{}", resource.path()),
    };
    match args.output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&api.call(Method::GET, &path, None).await?)?),
        Some(Output::Yaml) => print!("{}", to_yaml(&api.call(Method::GET, &path, None).await?)),
        Some(Output::Name) => {
            let v = api.call(Method::GET, &path, None).await?;
            let list = if v["items"].is_array() { items(&v) } else { vec![v] };
            for o in list {
                println!("{}.image.openshift.io/{}", resource.singular(), str_at(&o, "/metadata/name"));
            }
        }
        Some(Output::Wide) | None => {
            // The columns are the server's (the ones `kubectl get` shows), so both agree.
            let table = api.send(Method::GET, &path, None, true).await.map_err(|e| e.fail(false))?;
            let mut header: Vec<String> = table["columnDefinitions"]
                .as_array()
                .map(|c| c.iter().map(|d| str_at(d, "/name").to_uppercase()).collect())
                .unwrap_or_default();
            let mut rows: Vec<Vec<String>> = table["rows"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            let mut cells: Vec<String> = r["cells"]
                                .as_array()
                                .map(|c| {
                                    c.iter()
                                        .map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string()))
                                        .collect()
                                })
                                .unwrap_or_default();
                            if args.all_namespaces {
                                cells.insert(0, str_at(r, "/object/metadata/namespace"));
                            }
                            cells
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                eprintln!("No resources found in {} namespace.", if args.all_namespaces { "any" } else { ns.as_str() });
                return Ok(());
            }
            if args.all_namespaces {
                header.insert(0, "NAMESPACE".into());
            }
            rows.sort();
            super::table(&header.iter().map(String::as_str).collect::<Vec<_>>(), rows);
        }
    }
    Ok(())
}

/// `delete is/NAME`, `delete istag/NAME:TAG` (the tag's spec entry and history both go).
pub async fn delete(words: Vec<String>) -> anyhow::Result<()> {
    let args = DeleteArgs::try_parse_from(&words).map_err(|e| anyhow!("{e}"))?;
    let (resource, names) = kind_and_names(&args.names)?;
    let api = Api::new(&args.target)?;
    for name in names {
        match resource {
            Resource::ImageStreams => name.parse::<StreamName>().map(|_| ()).map_err(|e| anyhow!("{e}"))?,
            Resource::ImageStreamTags => name.parse::<IsTagName>().map(|_| ()).map_err(|e| anyhow!("{e}"))?,
        }
        let path = format!("/namespaces/{}/{}/{name}", args.target.namespace, resource.path());
        api.call(Method::DELETE, &path, None).await?;
        println!("{}.image.openshift.io \"{name}\" deleted", resource.singular());
    }
    Ok(())
}

// -----------------------------------------------------------------------------------------------------------
// describe

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let (resource, names) = kind_and_names(&args.what)?;
    let api = Api::new(&args.target)?;
    let ns = &args.target.namespace;
    for name in names {
        let path = format!("/namespaces/{ns}/{}/{name}", resource.path());
        let v = api.call(Method::GET, &path, None).await?;
        let text = match resource {
            Resource::ImageStreams => describe_stream(&typed(v)?),
            Resource::ImageStreamTags => describe_tag(&typed(v)?),
        };
        print!("{text}");
    }
    Ok(())
}

/// Label/value lines with the values aligned, as `oc describe` prints them.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_kinds() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (r, n) = kind_and_names(&w(&["istag/python:3.6", "istag/python:3.5"])).unwrap();
        assert_eq!((r, n.len()), (Resource::ImageStreamTags, 2));
        let (r, n) = kind_and_names(&w(&["is", "python"])).unwrap();
        assert_eq!((r, n), (Resource::ImageStreams, vec!["python".to_string()]));
        assert!(kind_and_names(&w(&["pods/x"])).is_err());
        assert!(kind_and_names(&w(&["is/a", "istag/a:b"])).is_err());
        assert!(kind_and_names(&w(&["is"])).is_err());
    }
}
