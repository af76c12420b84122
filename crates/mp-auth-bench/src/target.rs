//! The system under test: the gRPC service directly (a few pooled HTTP/2
//! connections) or the HTTP gateway (reqwest with a keep-alive pool).

use crate::workload::{Item, Proof};
use anyhow::Context as _;
use mp_auth::proto::{self, auth_client::AuthClient, mini_program_login_request::Phone};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A token was issued.
    Ok {
        /// The login created the user.
        new_user: bool,
    },
    /// An error, by its machine-readable reason (`LOGIN_CODE_USED`, `grpc:Unavailable`, ...).
    Err(String),
    /// The client hung up before the answer (the disconnect row): the service should
    /// still finish and record the login.
    Abandoned,
}

/// A client of the service under test. Cheap to clone.
#[derive(Clone)]
pub enum Target {
    /// `mpauth.v1.Auth/MiniProgramLogin`, spread over several connections.
    Grpc {
        /// One client per HTTP/2 connection.
        clients: Vec<AuthClient<Channel>>,
        /// Sent as `app_id`.
        app_id: String,
    },
    /// `POST /auth/mp_login` (and `/auth/refresh`) on the gateway(s).
    Http {
        /// Pooled HTTP/1.1 keep-alive connections.
        client: reqwest::Client,
        /// The full login URL of each gateway; worker `lane` uses `urls[lane % len]`.
        urls: Vec<String>,
        /// The full refresh URL of each gateway, in the same order.
        refresh_urls: Vec<String>,
        /// Sent as `appId`.
        app_id: String,
    },
}

impl Target {
    /// Opens `connections` HTTP/2 connections to the gRPC service at `urls` (several
    /// replicas: see [`channels`]).
    pub async fn grpc(
        urls: &[String],
        app_id: &str,
        connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self::Grpc {
            clients: channels(urls, connections, timeout)
                .await?
                .into_iter()
                .map(AuthClient::new)
                .collect(),
            app_id: app_id.to_owned(),
        })
    }

    /// A pooled HTTP client of the gateway(s) at `base_urls`.
    pub fn http(
        base_urls: &[String],
        app_id: &str,
        pool: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!base_urls.is_empty(), "no gateway URL");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Self::Http {
            client,
            urls: base_urls
                .iter()
                .map(|base| format!("{}/auth/mp_login", base.trim_end_matches('/')))
                .collect(),
            refresh_urls: base_urls
                .iter()
                .map(|base| format!("{}/auth/refresh", base.trim_end_matches('/')))
                .collect(),
            app_id: app_id.to_owned(),
        })
    }

    /// Sends one login on connection `lane` (modulo the pool).
    pub async fn login(&self, lane: usize, item: &Item) -> Outcome {
        match self.login_answer(lane, item).await {
            Ok((new_user, _)) => Outcome::Ok { new_user },
            Err(reason) => Outcome::Err(reason),
        }
    }

    /// Sends one login and hangs up `after` it was sent unless it was answered by
    /// then: the gRPC stream is reset (dropping a tonic call cancels it), the gateway's
    /// HTTP/1.1 connection is closed (dropping a reqwest request closes it).
    pub async fn login_then_hang_up(&self, lane: usize, item: &Item, after: Duration) -> Outcome {
        tokio::time::timeout(after, self.login(lane, item))
            .await
            .unwrap_or(Outcome::Abandoned)
    }

    /// Logs in and returns the new session's refresh token (to prepare refreshes).
    pub async fn open_session(&self, lane: usize, item: &Item) -> Result<String, String> {
        self.login_answer(lane, item).await.map(|(_, token)| token)
    }

    /// Refreshes `token` on connection `lane`; the outcome and the next token.
    pub async fn refresh(&self, lane: usize, token: &str) -> (Outcome, Option<String>) {
        let ok = |next: String| (Outcome::Ok { new_user: false }, Some(next));
        match self {
            Self::Grpc { clients, app_id } => {
                let mut client = clients[lane % clients.len()].clone();
                let request = proto::RefreshSessionRequest {
                    refresh_token: token.to_owned(),
                    app_id: app_id.clone(),
                };
                match client.refresh_session(request).await {
                    Ok(response) => ok(response.into_inner().refresh_token),
                    Err(status) => (Outcome::Err(grpc_reason(&status)), None),
                }
            }
            Self::Http {
                client,
                refresh_urls,
                app_id,
                ..
            } => {
                let body = serde_json::json!({"refreshToken": token, "appId": app_id});
                match post(client, &refresh_urls[lane % refresh_urls.len()], &body).await {
                    Ok(answer) => match answer["refresh_token"].as_str() {
                        Some(next) => ok(next.to_owned()),
                        None => (Outcome::Err("http:malformed_response".into()), None),
                    },
                    Err(reason) => (Outcome::Err(reason), None),
                }
            }
        }
    }

    /// One login: (created the user, the session's refresh token), or the reason.
    async fn login_answer(&self, lane: usize, item: &Item) -> Result<(bool, String), String> {
        match self {
            Self::Grpc { clients, app_id } => {
                let mut client = clients[lane % clients.len()].clone();
                let phone = match &item.proof {
                    Proof::Code(c) => Phone::PhoneCode(c.clone()),
                    Proof::Encrypted { data, iv } => Phone::Encrypted(proto::EncryptedPhone {
                        encrypted_data: data.clone(),
                        iv: iv.clone(),
                    }),
                };
                let request = proto::MiniProgramLoginRequest {
                    app_id: app_id.clone(),
                    code: item.code.clone(),
                    phone: Some(phone),
                };
                match client.mini_program_login(request).await {
                    Ok(response) => {
                        let r = response.into_inner();
                        Ok((r.is_new_user, r.refresh_token))
                    }
                    Err(status) => Err(grpc_reason(&status)),
                }
            }
            Self::Http {
                client,
                urls,
                app_id,
                ..
            } => {
                let url = &urls[lane % urls.len()];
                let (phone_code, encrypted_data, iv) = match &item.proof {
                    Proof::Code(c) => (Some(c.clone()), None, None),
                    Proof::Encrypted { data, iv } => (None, Some(data.clone()), Some(iv.clone())),
                };
                let body = mp_auth::gateway::LoginRequest {
                    code: item.code.clone(),
                    phone_code,
                    encrypted_data,
                    iv,
                    app_id: Some(app_id.clone()),
                };
                let answer = post(client, url, &body).await?;
                match serde_json::from_value::<mp_auth::gateway::LoginResponse>(answer) {
                    Ok(ok) => Ok((ok.is_new_user, ok.refresh_token)),
                    Err(_) => Err("http:malformed_response".into()),
                }
            }
        }
    }
}

/// `connections` separate HTTP/2 connections to the gRPC service at `urls`. With
/// several URLs (replicas) the count is rounded up to a multiple of their number and
/// connection `k` goes to `urls[k % len]`, so worker `lane` (which uses connection
/// `lane % connections`) talks to replica `lane % len`.
pub async fn channels(
    urls: &[String],
    connections: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Channel>> {
    anyhow::ensure!(!urls.is_empty(), "no gRPC URL");
    let mut endpoints = Vec::with_capacity(urls.len());
    for url in urls {
        endpoints.push(
            Endpoint::from_shared(url.clone())
                .with_context(|| format!("bad gRPC URL {url}"))?
                .tcp_nodelay(true)
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5)),
        );
    }
    let connections = connections.max(1).div_ceil(urls.len()) * urls.len();
    let mut channels = Vec::with_capacity(connections);
    for k in 0..connections {
        let url = &urls[k % urls.len()];
        // Each `connect` opens its own connection; clones of one channel share it.
        channels.push(
            endpoints[k % urls.len()]
                .connect()
                .await
                .with_context(|| format!("connecting to the gRPC service at {url}"))?,
        );
    }
    Ok(channels)
}

fn grpc_reason(status: &tonic::Status) -> String {
    mp_auth::api::reason_of(status).unwrap_or_else(|| format!("grpc:{:?}", status.code()))
}

/// POSTs `body` as JSON: the answer's JSON on a 2xx, else the error reason.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> Result<serde_json::Value, String> {
    let response = match client.post(url).json(body).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err("http:timeout".into()),
        Err(e) if e.is_connect() => return Err("http:connect".into()),
        Err(_) => return Err("http:transport".into()),
    };
    let status = response.status();
    let Ok(bytes) = response.bytes().await else {
        return Err("http:transport".into());
    };
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    if status.is_success() {
        json.ok_or_else(|| "http:malformed_response".into())
    } else {
        Err(json
            .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("http:{}", status.as_u16())))
    }
}
