//! The verbs that act on a Kubernetes cluster (the one in the kubeconfig), as `oc` has them: `set triggers
//! KIND/NAME` (the `image.openshift.io/triggers` annotation), `set image-lookup KIND/NAME` (the `resolve-names`
//! annotation on the pod template), and `adm admission-config` (prints the webhook registration). Talk to the API
//! server with the `kube` crate; never touch Tributary's stores. Called by [`super::streams`] and `cli::run`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::ResourceExt;
use names::{StreamName, TagName};
use registry::cluster::jsonpath::FieldPath;
use registry::cluster::lookup::{PodKind, RESOLVE_NAMES_ANNOTATION};
use registry::cluster::triggers::{annotation_value, ObjectFieldTrigger, TriggerSource, TRIGGERS_ANNOTATION};
use serde_json::{json, Value};

use super::exit::HttpFailure;

/// `set triggers KIND/NAME [--from-image IS:TAG] [-c CONTAINER]… [--paused] [--remove]`.
#[derive(Args, Debug)]
pub struct TriggersArgs {
    /// The object: `deploy/NAME`, `sts/NAME`, `ds/NAME`, `job/NAME`, `cj/NAME`, `rs/NAME`, `rc/NAME`, `pod/NAME`.
    resource: String,
    /// The image stream tag whose image the containers get: `IS:TAG` (or `NAMESPACE/IS:TAG`).
    #[arg(long = "from-image")]
    from_image: Option<String>,
    /// The containers the trigger updates (repeatable) [default: every container].
    #[arg(short = 'c', long = "containers", value_delimiter = ',')]
    containers: Vec<String>,
    /// Add the trigger paused: it does not update the object until unpaused.
    #[arg(long)]
    paused: bool,
    /// Remove the triggers from `--from-image` (all of them without it) instead of adding.
    #[arg(long)]
    remove: bool,
    #[command(flatten)]
    cluster: ClusterTarget,
}

/// Which cluster and namespace.
#[derive(Args, Debug, Clone)]
pub struct ClusterTarget {
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// The cluster's kubeconfig [default: $KUBECONFIG, else ~/.kube/config, else in-cluster].
    #[arg(long, env = "TRIBUTARY_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

impl ClusterTarget {
    pub fn new(namespace: Option<String>, kubeconfig: Option<PathBuf>) -> ClusterTarget {
        ClusterTarget { namespace, kubeconfig }
    }
}

/// The kind and name of `KIND/NAME`.
fn resource(text: &str) -> anyhow::Result<(&'static PodKind, String)> {
    let (kind, name) = text.split_once('/').with_context(|| format!("{text:?} is not KIND/NAME"))?;
    let kind = PodKind::named(kind).with_context(|| {
        format!("{kind:?} is not a kind with a pod template (deploy, sts, ds, job, cj, rs, rc or pod)")
    })?;
    if name.is_empty() {
        bail!("{text:?} names no object");
    }
    Ok((kind, name.to_owned()))
}

/// The API of `kind` in the target namespace, and that namespace.
async fn api(kind: &PodKind, target: &ClusterTarget) -> anyhow::Result<(Api<DynamicObject>, String)> {
    let kubeconfig = target.kubeconfig.as_deref();
    let client = registry::cluster::client::connect(kubeconfig).await?;
    let ns = match &target.namespace {
        Some(ns) => ns.clone(),
        None => registry::cluster::client::default_namespace(kubeconfig).await,
    };
    let gvk = GroupVersionKind::gvk(kind.group, kind.version, kind.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, kind.plural);
    Ok((Api::namespaced_with(client, &ns, &ar), ns))
}

/// A Kubernetes API error as the failure the exit code reads (404 → 4, 409 → 5, …).
fn failed(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => HttpFailure::refused(s.code, &s.message).into(),
        other => HttpFailure { status: None, message: format!("the cluster: {other}") }.into(),
    }
}

/// `kind.group/name` as kubectl prints it (`deployment.apps/web`).
fn printed(kind: &PodKind, name: &str) -> String {
    let group = if kind.group.is_empty() { String::new() } else { format!(".{}", kind.group) };
    format!("{}{group}/{name}", kind.kind.to_ascii_lowercase())
}

/// Merge-patches `object` (guarded by its resourceVersion: a concurrent change is a conflict, not lost).
async fn merge(api: &Api<DynamicObject>, object: &DynamicObject, mut patch: Value) -> anyhow::Result<()> {
    patch["metadata"]["resourceVersion"] = json!(object.resource_version());
    let params = PatchParams { field_manager: Some("tributary".into()), ..PatchParams::default() };
    api.patch(&object.name_any(), &params, &Patch::Merge(&patch)).await.map_err(failed)?;
    Ok(())
}

/// The names of the containers of `object`'s pod spec.
fn container_names(kind: &PodKind, object: &Value) -> Vec<String> {
    object
        .pointer(&format!("{}/containers", kind.pod_spec_pointer()))
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `IS:TAG` or `NS/IS:TAG`, checked: the trigger's `from`.
fn source(text: &str) -> anyhow::Result<TriggerSource> {
    let (namespace, name) = match text.split_once('/') {
        Some((ns, rest)) => (Some(ns.to_owned()), rest),
        None => (None, text),
    };
    let (stream, tag) = name.split_once(':').with_context(|| format!("--from-image {text:?} is not IS:TAG"))?;
    stream.parse::<StreamName>().with_context(|| format!("--from-image {text:?}"))?;
    tag.parse::<TagName>().with_context(|| format!("--from-image {text:?}"))?;
    Ok(TriggerSource { kind: "ImageStreamTag".into(), name: name.to_owned(), namespace, api_version: None })
}

pub async fn set_triggers(args: TriggersArgs) -> anyhow::Result<()> {
    let (kind, name) = resource(&args.resource)?;
    let (api, ns) = api(kind, &args.cluster).await?;
    let object = api.get(&name).await.map_err(failed)?;
    let existing = object.annotations().get(TRIGGERS_ANNOTATION).cloned();
    let mut triggers: Vec<ObjectFieldTrigger> = match &existing {
        None => Vec::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(t) => t,
            Err(_) if args.remove && args.from_image.is_none() => Vec::new(),
            Err(e) => {
                bail!("{} has a malformed {TRIGGERS_ANNOTATION} ({e}); `--remove` clears it", printed(kind, &name))
            }
        },
    };
    let value = serde_json::to_value(&object)?;
    match (&args.from_image, args.remove) {
        (None, false) => {
            let rows = triggers
                .iter()
                .map(|t| {
                    let from = match &t.from.namespace {
                        Some(ns) => format!("{ns}/{}", t.from.name),
                        None => t.from.name.clone(),
                    };
                    vec![format!("image ({})", t.field_path), from, t.paused.to_string()]
                })
                .collect();
            super::table(&["TYPE", "VALUE", "PAUSED"], rows);
            return Ok(());
        }
        (None, true) => triggers.clear(),
        (Some(from), true) => {
            let from = source(from)?;
            triggers.retain(|t| t.from.name != from.name || t.from.namespace != from.namespace);
        }
        (Some(from), false) => {
            let from = source(from)?;
            let names = container_names(kind, &value);
            let wanted = if args.containers.is_empty() { names.clone() } else { args.containers.clone() };
            for c in &wanted {
                if !names.contains(c) {
                    bail!("{} has no container {c:?} (it has: {})", printed(kind, &name), names.join(", "));
                }
                let field_path = FieldPath::container_image(kind.pod_spec, c).to_string();
                triggers.retain(|t| {
                    t.field_path.parse::<FieldPath>().ok().map(|p| p.to_string()) != Some(field_path.clone())
                });
                triggers.push(ObjectFieldTrigger { from: from.clone(), field_path, paused: args.paused });
            }
        }
    }
    let annotation = if triggers.is_empty() { Value::Null } else { json!(annotation_value(&triggers)) };
    merge(&api, &object, json!({"metadata": {"annotations": {TRIGGERS_ANNOTATION: annotation}}})).await?;
    println!("{} triggers updated (namespace {ns})", printed(kind, &name));
    Ok(())
}

/// `set image-lookup KIND/NAME… [--enabled=false]`: the `resolve-names` annotation on each object's pod template
/// (on a Pod, on the Pod).
pub async fn set_image_lookup(resources: &[String], enabled: bool, target: &ClusterTarget) -> anyhow::Result<()> {
    for text in resources {
        let (kind, name) = resource(text)?;
        let (api, _) = api(kind, target).await?;
        let object = api.get(&name).await.map_err(failed)?;
        let value = if enabled { json!("*") } else { Value::Null };
        let annotations = json!({"annotations": {RESOLVE_NAMES_ANNOTATION: value}});
        // `/spec/template/metadata` → {"spec": {"template": {"metadata": …}}}.
        let at = kind.template_metadata_pointer().unwrap_or_else(|| "/metadata".into());
        let patch = at.rsplit('/').filter(|s| !s.is_empty()).fold(annotations, |inner, key| json!({ key: inner }));
        merge(&api, &object, patch).await?;
        println!("{} image lookup updated", printed(kind, &name));
    }
    Ok(())
}

/// `adm admission-config`: the `MutatingWebhookConfiguration` for the webhook of the server at `--server`.
#[derive(Args, Debug)]
pub struct AdmissionConfigArgs {
    /// The registry's https URL as the API server reaches it, e.g. https://registry.example.com:5000.
    #[arg(long, env = "TRIBUTARY_SERVER")]
    server: String,
    /// The PEM certificate the registry serves (its --tls-cert), or the CA that signed it: the caBundle.
    #[arg(long = "ca-file")]
    ca_file: PathBuf,
    /// A namespace the webhook never sees (repeatable), e.g. the one Tributary runs in; kube-system,
    /// kube-public and kube-node-lease always are.
    #[arg(long = "exclude-namespace")]
    exclude: Vec<String>,
    /// The configuration's name.
    #[arg(long, default_value = "tributary-image-lookup")]
    name: String,
    /// `json` rather than YAML.
    #[arg(short = 'o', long = "output", value_parser = ["yaml", "json"], default_value = "yaml")]
    output: String,
}

pub fn admission_config(args: AdmissionConfigArgs) -> anyhow::Result<()> {
    let url = url::Url::parse(&args.server).with_context(|| format!("--server {:?}", args.server))?;
    if url.scheme() != "https" {
        bail!("--server {url}: the API server calls webhooks over https only (serve with --tls-cert)");
    }
    let ca = read_pem(&args.ca_file)?;
    let hook = url.join(registry::cluster::admission::ADMISSION_PATH.trim_start_matches('/'))?;
    let config = registry::cluster::webhook_config::admission_config(&args.name, hook.as_str(), &ca, &args.exclude);
    let value = serde_json::to_value(&config)?;
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&value)?),
        _ => print!("{}", super::yaml::to_yaml(&value)),
    }
    Ok(())
}

fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        bail!("--ca-file {}: no PEM certificate in it", path.display());
    }
    Ok(pem)
}
