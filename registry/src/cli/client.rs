//! A small HTTP client for `/apis/tributary.dev/v1/`: resolves the server and token (flag, environment, saved
//! login), sends JSON, and turns `Status` refusals into errors that say what the server said.

use serde_json::Value;

use super::config;
use super::exit::HttpFailure;
use super::Connection;

const BASE: &str = "/apis/tributary.dev/v1";

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Client {
    pub fn new(server: Option<String>, token: Option<String>, insecure: bool) -> anyhow::Result<Client> {
        let (server, token) = match (server, token) {
            (Some(s), Some(t)) => (s, t),
            (s, t) => {
                let saved = config::load()?;
                let server = s.or(saved.server).ok_or_else(|| {
                    anyhow::anyhow!("no server: give --server, set TRIBUTARY_SERVER, or run `tributary login`")
                })?;
                let token = t.or(saved.token).ok_or_else(|| {
                    anyhow::anyhow!("no token: give --token, set TRIBUTARY_TOKEN, or run `tributary login`")
                })?;
                (server, token)
            }
        };
        let server = server.trim_end_matches('/').to_owned();
        let server = if server.contains("://") { server } else { format!("http://{server}") };
        let http = reqwest::Client::builder().danger_accept_invalid_certs(insecure).build()?;
        Ok(Client { http, server, token })
    }

    pub fn from(conn: Connection) -> anyhow::Result<Client> {
        Client::new(conn.server, conn.token, conn.insecure_skip_tls_verify)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| HttpFailure { status: None, message: format!("{}: {e}", self.server) })?;
        let status = resp.status();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["message"].as_str().map(str::to_owned).unwrap_or(text);
            return Err(HttpFailure::refused(status.as_u16(), &message).into());
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{BASE}{path}", self.server))).await
    }

    /// GET of a path from the server's root (another API group than the admin API's).
    pub async fn get_path(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.server))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{BASE}{path}", self.server)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{BASE}{path}", self.server)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{BASE}{path}", self.server))).await
    }
}
