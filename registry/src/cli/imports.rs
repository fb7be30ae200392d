//! The external-registry verbs: `import-image IS[:TAG] [--from REF] [--confirm] [--all] [--import-mode …]
//! [--insecure] [--reference-policy local|source] [--scheduled]` (an `ImageStreamImport` sent to the server,
//! which does the fetching), and `create secret docker-registry NAME` (a pull secret for the namespace).

use anyhow::{anyhow, bail};
use base64::Engine;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use streams::import::ImageStreamImport;
use streams::model::{ImageStream, ImageStreamTag};

use super::describe::describe_tag;
use super::progress::Progress;
use super::streams::{typed, Api, ReferencePolicy, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportModeArg {
    #[value(name = "Legacy")]
    Legacy,
    #[value(name = "PreserveOriginal")]
    PreserveOriginal,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The image stream, optionally with the tag to import into (`NAME[:TAG]`, default tag `latest`).
    stream: String,
    /// The external image to import, e.g. `quay.io/org/app:1.0` [default: the tag's current source].
    #[arg(long)]
    from: Option<String>,
    /// Create the stream, or change a tag's source, when needed.
    #[arg(long)]
    confirm: bool,
    /// Import every tag of the source repository.
    #[arg(long)]
    all: bool,
    /// For manifest lists: keep one image for this registry's platform (Legacy) or the list itself and every image.
    #[arg(long, value_enum)]
    import_mode: Option<ImportModeArg>,
    /// Allow plain http or an unverified certificate for this source.
    #[arg(long)]
    insecure: bool,
    /// Pull through this registry (`local`) or from the source (`source`).
    #[arg(long, value_enum)]
    reference_policy: Option<ReferencePolicy>,
    /// Import again periodically.
    #[arg(long)]
    scheduled: bool,
    /// `json`: print the server's `ImageStreamImport` answer (its status says what each tag got) instead of the
    /// description of the imported tags; no spinner.
    #[arg(short = 'o', long, value_enum)]
    output: Option<ImportOutput>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportOutput {
    Json,
}

/// `import-image`: works out the source (the flag, or what the tag or stream already names), sends one
/// `ImageStreamImport`, and prints what was imported, as `oc import-image` does.
pub async fn import_image(args: ImportArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.target)?;
    let ns = &args.target.namespace;
    let (name, tag) = match args.stream.split_once(':') {
        Some((n, t)) => (n.to_owned(), Some(t.to_owned())),
        None => (args.stream.clone(), None),
    };
    if args.all && tag.is_some() {
        bail!("--all imports every tag: name the stream without a tag");
    }
    let tag = tag.unwrap_or_else(|| "latest".into());
    let existing: Option<ImageStream> =
        match api.send(Method::GET, &format!("/namespaces/{ns}/imagestreams/{name}"), None, false).await {
            Ok(v) => Some(typed(v)?),
            Err(e) if e.status == StatusCode::NOT_FOUND => None,
            Err(e) => return Err(e.fail(true)),
        };
    let current_source = existing.as_ref().and_then(|s| {
        if args.all {
            s.spec.docker_image_repository.clone().filter(|r| !r.is_empty())
        } else {
            let spec = s.spec.tags.iter().find(|t| t.name == tag)?;
            spec.from.as_ref().filter(|f| f.kind == "DockerImage").map(|f| f.name.clone())
        }
    });
    let from = match (&args.from, &current_source) {
        (Some(f), Some(c)) if f != c && !args.confirm => {
            bail!("the tag {name}:{tag} imports {c}; pass --confirm to import {f} instead")
        }
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) if existing.is_none() => {
            bail!("image stream {name:?} not found: give --from REF and --confirm to create it")
        }
        (None, None) => bail!("{name}:{tag} has no external source: give --from REF"),
    };
    if existing.is_none() && !args.confirm {
        bail!("image stream {name:?} not found: pass --confirm to create it and import {from}");
    }
    let mut policy = json!({"insecure": args.insecure, "scheduled": args.scheduled});
    if let Some(m) = args.import_mode {
        policy["importMode"] = json!(match m {
            ImportModeArg::Legacy => "Legacy",
            ImportModeArg::PreserveOriginal => "PreserveOriginal",
        });
    }
    let reference_policy = json!({"type": match args.reference_policy {
        Some(ReferencePolicy::Local) => "Local",
        _ => "Source",
    }});
    let spec = if args.all {
        json!({"import": true, "repository": {"from": {"kind": "DockerImage", "name": from},
               "importPolicy": policy, "referencePolicy": reference_policy}})
    } else {
        json!({"import": true, "images": [{"from": {"kind": "DockerImage", "name": from}, "to": {"name": tag},
               "importPolicy": policy, "referencePolicy": reference_policy}]})
    };
    let body = json!({"kind": "ImageStreamImport", "apiVersion": "image.openshift.io/v1",
                      "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let json_output = args.output == Some(ImportOutput::Json);
    let progress = Progress::spinner(format!("importing {from} into {ns}/{name}"), json_output);
    let raw = api.call(Method::POST, &format!("/namespaces/{ns}/imagestreamimports"), Some(&body)).await?;
    drop(progress);
    if json_output {
        println!("{}", serde_json::to_string_pretty(&raw)?);
    }
    let answer: ImageStreamImport = typed(raw)?;
    let mut statuses = answer.status.images.clone();
    if let Some(r) = &answer.status.repository {
        if r.status.status != "Success" {
            bail!("importing the tags of {from}: {}", r.status.message);
        }
        statuses.extend(r.images.clone());
    }
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| s.status.status != "Success")
        .map(|s| format!("{}: {}", s.tag, s.status.message))
        .collect();
    if failed.len() < statuses.len() && !json_output {
        println!("imagestream.image.openshift.io/{name} imported");
    }
    for s in statuses.iter().filter(|s| s.status.status == "Success" && !json_output) {
        let path = format!("/namespaces/{ns}/imagestreamtags/{name}:{}", s.tag);
        let t: ImageStreamTag = typed(api.call(Method::GET, &path, None).await?)?;
        println!();
        print!("{}", describe_tag(&t));
    }
    if !failed.is_empty() {
        bail!("import failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum SecretKind {
    /// A secret for a registry: the server, username and password, or an existing `config.json`.
    DockerRegistry(DockerRegistrySecret),
}

#[derive(Args, Debug)]
pub struct DockerRegistrySecret {
    name: String,
    /// The registry host, e.g. `quay.io` or `localhost:5000`.
    #[arg(long, required_unless_present = "from_file", conflicts_with = "from_file")]
    docker_server: Option<String>,
    #[arg(long, requires = "docker_server")]
    docker_username: Option<String>,
    #[arg(long, requires = "docker_server")]
    docker_password: Option<String>,
    #[arg(long)]
    docker_email: Option<String>,
    /// A Docker `config.json` (`PATH`, or `.dockerconfigjson=PATH` as kubectl takes it).
    #[arg(long)]
    from_file: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// `create secret docker-registry`: builds the `.dockerconfigjson` and posts a `v1` `Secret` to the namespace.
pub async fn create_secret(kind: SecretKind) -> anyhow::Result<()> {
    let SecretKind::DockerRegistry(args) = kind;
    let content = match (&args.from_file, &args.docker_server) {
        (Some(f), _) => {
            let path = f.split_once('=').map(|(_, p)| p).unwrap_or(f);
            std::fs::read_to_string(path).map_err(|e| anyhow!("{path}: {e}"))?
        }
        (None, Some(server)) => {
            let user = args.docker_username.clone().unwrap_or_default();
            let pass = args.docker_password.clone().unwrap_or_default();
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut entry = json!({"username": user, "password": pass, "auth": auth});
            if let Some(e) = &args.docker_email {
                entry["email"] = json!(e);
            }
            json!({"auths": {server: entry}}).to_string()
        }
        (None, None) => bail!("give --docker-server (with --docker-username and --docker-password) or --from-file"),
    };
    let ns = &args.target.namespace;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": args.name, "namespace": ns},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(content)},
    });
    let api = Api::core(&args.target)?;
    let _: Value = api.call(Method::POST, &format!("/namespaces/{ns}/secrets"), Some(&secret)).await?;
    println!("secret/{} created", args.name);
    Ok(())
}
