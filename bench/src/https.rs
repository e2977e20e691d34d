//! The collector's API for the benchmarks, through ureq (the client the collector's own
//! `query` uses): one request and its whole answer, and the live stream read as
//! server-sent events. Blocking, so callers in async code run it on a blocking thread. It
//! trusts only the collector's CA.

use anyhow::{Context as _, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

/// Where the API is, whom to trust and which bearer token to present.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl ApiClient {
    /// `ca_pem`: the collector's `ca.crt`.
    pub fn new(address: SocketAddr, ca_pem: &str, token: &str) -> anyhow::Result<Self> {
        let agent = vedetta_collector::query::https_agent(ca_pem.as_bytes(), None)
            .context("no CA certificate in the PEM given")?;
        Ok(Self {
            base: format!("https://localhost:{}", address.port()),
            token: token.to_owned(),
            agent,
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        timeout: Option<Duration>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        let request = request.body(body.unwrap_or("").to_owned())?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(timeout)
            .build();
        self.agent
            .run(request)
            .with_context(|| format!("{method} {path}"))
    }

    /// One request, its whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut response = self.call(method, path, body, Some(Duration::from_secs(60)))?;
        Ok(Response {
            status: response.status().as_u16(),
            body: response.body_mut().read_to_string()?,
        })
    }

    /// Opens a server-sent event stream (`GET path`); fails unless the answer is 200.
    pub fn events(&self, path: &str) -> anyhow::Result<EventStream> {
        let response = self.call("GET", path, None, None)?;
        if response.status() != 200 {
            bail!("GET {path}: status {}", response.status());
        }
        Ok(EventStream {
            lines: Box::new(BufReader::new(response.into_body().into_reader())),
        })
    }
}

/// Server-sent events as `(event name, data)`.
pub struct EventStream {
    lines: Box<dyn BufRead + Send>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event (comments and keep-alives skipped); `None` when the stream ends.
    pub fn next_event(&mut self) -> anyhow::Result<Option<(String, String)>> {
        let mut name = String::new();
        let mut data = String::new();
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() || !name.is_empty() {
                    return Ok(Some((name, data)));
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
    }
}
