//! The HTTP client of the verbs that speak the Kubernetes-style APIs (`/apis/image.openshift.io/v1/`, and
//! `/api/v1` for secrets): a request with the caller's connection, the server's `Status` message and HTTP status
//! kept for the error and the exit code ([`super::exit`]). Used by [`super::streams`] and [`super::imports`].

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::client::Client;
use super::exit::HttpFailure;
use super::streams::Target;

/// The image stream API's root.
pub(super) const API: &str = "/apis/image.openshift.io/v1";

pub(super) struct ApiError {
    /// What the server answered (`SERVICE_UNAVAILABLE` too when it could not be reached: see `reached`).
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) reached: bool,
}

impl ApiError {
    /// The error a verb gives up with: the server's message, and the status for the exit code
    /// (`super::exit`); `with_status` adds ` (status)` to the message.
    pub(super) fn fail(self, with_status: bool) -> anyhow::Error {
        let status = self.reached.then(|| self.status.as_u16());
        let message = match status {
            Some(s) if with_status => format!("{} ({s})", self.message),
            _ => self.message,
        };
        HttpFailure { status, message }.into()
    }
}

pub(super) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub(super) fn new(target: &Target) -> anyhow::Result<Api> {
        let client = Client::from(target.conn.clone())?;
        let http =
            reqwest::Client::builder().danger_accept_invalid_certs(target.conn.insecure_skip_tls_verify).build()?;
        Ok(Api { http, base: format!("{}{API}", client.server()), token: client.token().into() })
    }

    /// The same, for Kubernetes' core API (`/api/v1`: secrets).
    pub(super) fn core(target: &Target) -> anyhow::Result<Api> {
        let mut api = Api::new(target)?;
        api.base = api.base.replace(API, "/api/v1");
        Ok(api)
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        table: bool,
    ) -> Result<Value, ApiError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if table {
            req = req.header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json");
        }
        let resp = req.send().await.map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{}: {e}", self.base),
            reached: false,
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["message"].as_str().map(str::to_owned).unwrap_or(text);
            Err(ApiError { status, message, reached: true })
        }
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.send(method, path, body, false).await.map_err(|e| e.fail(true))
    }
}

pub(super) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("the server answered something unexpected")
}
