//! The `MutatingWebhookConfiguration` that registers Tributary's image lookup webhook ([`super::admission`]) with
//! a Kubernetes API server: what `tributary adm admission-config` prints. Built with `k8s-openapi`'s types so that
//! the document is one the API server accepts. Pure.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::ByteString;

use super::lookup::POD_KINDS;

/// The label that keeps a namespace out of image lookup: `tributary.dev/image-lookup: disabled`.
pub const OPT_OUT_LABEL: &str = "tributary.dev/image-lookup";

/// Namespaces never sent to the webhook (besides those given): the cluster's own.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The API server's timeout for one call; Tributary answers within [`super::admission::DEADLINE`].
pub const TIMEOUT_SECONDS: i32 = 5;

/// The configuration for the webhook at `url`, trusting `ca_pem` (the PEM of the server's certificate or its CA),
/// skipping the system namespaces, `exclude` (say, Tributary's own) and namespaces labelled
/// [`OPT_OUT_LABEL`]`=disabled`.
pub fn admission_config(name: &str, url: &str, ca_pem: &[u8], exclude: &[String]) -> MutatingWebhookConfiguration {
    let mut skipped: Vec<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    skipped.extend(exclude.iter().cloned());
    let mut groups: Vec<String> = POD_KINDS.iter().map(|k| k.group.to_owned()).collect();
    groups.dedup();
    let mut resources: Vec<String> = POD_KINDS.iter().map(|k| k.plural.to_owned()).collect();
    resources.push("pods/ephemeralcontainers".into());
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        webhooks: Some(vec![MutatingWebhook {
            name: "image-lookup.tributary.dev".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                url: Some(url.to_owned()),
                ca_bundle: Some(ByteString(ca_pem.to_vec())),
                service: None,
            },
            // Ignore: an unreachable or slow registry must not stop every Pod in the cluster (Tributary's own
            // included, which would then never come back).
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    LabelSelectorRequirement {
                        key: "kubernetes.io/metadata.name".into(),
                        operator: "NotIn".into(),
                        values: Some(skipped),
                    },
                    LabelSelectorRequirement {
                        key: OPT_OUT_LABEL.into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["disabled".into()]),
                    },
                ]),
                match_labels: None,
            }),
            reinvocation_policy: Some("IfNeeded".into()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(groups),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(resources),
                scope: Some("Namespaced".into()),
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            ..Default::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_configuration_has_what_the_api_server_needs() {
        let c = admission_config(
            "tributary-image-lookup",
            "https://reg:5000/admission/image-lookup",
            b"PEM",
            &["tributary".into()],
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(v["kind"], "MutatingWebhookConfiguration");
        let w = &v["webhooks"][0];
        assert_eq!(w["clientConfig"]["caBundle"], "UEVN", "base64 of the PEM");
        assert_eq!(w["clientConfig"]["url"], "https://reg:5000/admission/image-lookup");
        assert_eq!((w["sideEffects"].as_str(), w["failurePolicy"].as_str()), (Some("None"), Some("Ignore")));
        assert_eq!(w["rules"][0]["apiGroups"], json!(["", "apps", "batch"]));
        assert!(w["rules"][0]["resources"].as_array().unwrap().contains(&json!("cronjobs")));
        assert_eq!(
            w["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "kube-public", "kube-node-lease", "tributary"])
        );
        assert!(w["timeoutSeconds"].as_i64().unwrap() > super::super::admission::DEADLINE.as_secs() as i64);
    }
}
