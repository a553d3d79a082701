//! A small HTTPS client for pgha's own API (HTTP/1.1 over rustls, one connection per call),
//! used by `pgha ctl`, by `pgha join`, and by a node asking its peers for their status.
//! It tries each endpoint in turn and reports which one answered or why each failed.

use super::model::ApiErrorBody;
use crate::tls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// Responses larger than this are refused (the biggest real answer is a member list).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("{endpoint} answered {status}: {message}")]
    Refused { endpoint: String, status: u16, message: String, body: Option<ApiErrorBody> },
    #[error("{endpoint} sent an unreadable answer: {detail}")]
    BadResponse { endpoint: String, detail: String },
    #[error("no endpoint answered: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<ClientError>),
}

impl ClientError {
    /// True for a refusal by a server (a definite answer), false for transport trouble.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

#[derive(Clone)]
pub struct ApiClient {
    endpoints: Vec<String>,
    connector: TlsConnector,
    timeout: Duration,
    /// `Authorization` header value sent with every call (basic auth), if any.
    authorization: Option<String>,
}

impl ApiClient {
    /// `endpoints` are `host:port` of REST APIs, tried in order.
    pub fn new(endpoints: Vec<String>, config: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        ApiClient { endpoints, connector: TlsConnector::from(config), timeout, authorization: None }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The same client with another per-call deadline (a switchover waits for its outcome).
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    /// A client for one endpoint, sharing the TLS configuration.
    pub fn with_endpoint(&self, endpoint: String) -> ApiClient {
        ApiClient { endpoints: vec![endpoint], ..self.clone() }
    }

    /// Sends basic auth (the API's `restapi.authentication`) with every call.
    pub fn with_basic_auth(mut self, credentials: Option<&crate::config::file::Credentials>) -> ApiClient {
        use base64::Engine as _;
        self.authorization = credentials.map(|c| {
            let pair = format!("{}:{}", c.username, c.password.as_deref().unwrap_or(""));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        self
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(String, T), ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(String, T), ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<(String, T), ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// A call whose success answer is plain text (Patroni's `/restart`, `/reload`,
    /// `/reinitialize`); a refusal is an error like [`ApiClient::call`]'s.
    pub async fn post_text<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(String, String), ClientError> {
        self.call_text(Method::POST, path, Some(body)).await
    }

    /// Like [`ApiClient::call`] for a plain-text answer.
    pub async fn call_text<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(String, String), ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request bodies serialize"));
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            match self.once(endpoint, method.clone(), path, body.clone()).await {
                Ok(bytes) => return Ok((endpoint.clone(), String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => errors.push(e),
            }
        }
        Err(all_failed(errors))
    }

    /// Calls each endpoint until one answers. A refusal (4xx/5xx with a body) is final and
    /// returned as is, except 503 "not ready", where the next endpoint is tried.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(String, T), ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("request bodies serialize"));
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            match self.once(endpoint, method.clone(), path, body.clone()).await {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes).map(|t| (endpoint.clone(), t)).map_err(|e| {
                        ClientError::BadResponse { endpoint: endpoint.clone(), detail: e.to_string() }
                    })
                }
                Err(e @ ClientError::Refused { status: 503, .. }) => errors.push(e),
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => errors.push(e),
            }
        }
        Err(all_failed(errors))
    }

    async fn once(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let unreachable =
            |detail: String| ClientError::Unreachable { endpoint: endpoint.to_string(), detail };
        let work = async {
            // Host names are resolved without libc (STACK.md item 2).
            let tcp = crate::sys::resolve::connect(endpoint).await.map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let host = endpoint.rsplit_once(':').map(|(h, _)| h).unwrap_or(endpoint);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = tls::server_name(host).map_err(|e| unreachable(e.to_string()))?;
            let tls = self
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS: {}", tls::describe_handshake_error(&e))))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, host)
                .header(hyper::header::ACCEPT, "application/json");
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            if let Some(auth) = &self.authorization {
                req = req.header(hyper::header::AUTHORIZATION, auth.as_str());
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| unreachable(e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| ClientError::BadResponse {
                    endpoint: endpoint.to_string(),
                    detail: e.to_string(),
                })?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(refusal(endpoint, status, &bytes))
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(unreachable(format!("no answer within {:?}", self.timeout))))
    }
}

/// The error of a call that no endpoint answered: the one error, or all of them.
fn all_failed(mut errors: Vec<ClientError>) -> ClientError {
    if errors.len() == 1 {
        errors.pop().expect("one error")
    } else {
        ClientError::AllFailed(errors)
    }
}

fn refusal(endpoint: &str, status: StatusCode, bytes: &[u8]) -> ClientError {
    let body: Option<ApiErrorBody> = serde_json::from_slice(bytes).ok();
    let message = match &body {
        Some(b) => b.error.clone(),
        None => String::from_utf8_lossy(bytes).chars().take(300).collect(),
    };
    ClientError::Refused { endpoint: endpoint.to_string(), status: status.as_u16(), message, body }
}
