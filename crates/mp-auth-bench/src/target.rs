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
    /// `POST /auth/mp_login` on the gateway(s).
    Http {
        /// Pooled HTTP/1.1 keep-alive connections.
        client: reqwest::Client,
        /// The full login URL of each gateway; worker `lane` uses `urls[lane % len]`.
        urls: Vec<String>,
        /// Sent as `appId`.
        app_id: String,
    },
}

impl Target {
    /// Opens `connections` HTTP/2 connections to the gRPC service at `urls`
    /// (several replicas: rounded up to a multiple of their number, handed out in
    /// turn, so worker `lane` talks to replica `lane % urls.len()`).
    pub async fn grpc(
        urls: &[String],
        app_id: &str,
        connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
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
        let mut clients = Vec::with_capacity(connections);
        for k in 0..connections {
            // Each `connect` opens its own connection; clones of one channel share it.
            let channel = endpoints[k % urls.len()].connect().await.with_context(|| {
                format!("connecting to the gRPC service at {}", urls[k % urls.len()])
            })?;
            clients.push(AuthClient::new(channel));
        }
        Ok(Self::Grpc {
            clients,
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
            app_id: app_id.to_owned(),
        })
    }

    /// Sends one login on connection `lane` (modulo the pool).
    pub async fn login(&self, lane: usize, item: &Item) -> Outcome {
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
                    Ok(response) => Outcome::Ok {
                        new_user: response.get_ref().is_new_user,
                    },
                    Err(status) => Outcome::Err(
                        mp_auth::grpc::error::reason_of(&status)
                            .unwrap_or_else(|| format!("grpc:{:?}", status.code())),
                    ),
                }
            }
            Self::Http {
                client,
                urls,
                app_id,
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
                let response = match client.post(url).json(&body).send().await {
                    Ok(r) => r,
                    Err(e) if e.is_timeout() => return Outcome::Err("http:timeout".into()),
                    Err(e) if e.is_connect() => return Outcome::Err("http:connect".into()),
                    Err(_) => return Outcome::Err("http:transport".into()),
                };
                let status = response.status();
                let Ok(bytes) = response.bytes().await else {
                    return Outcome::Err("http:transport".into());
                };
                if status.is_success() {
                    match serde_json::from_slice::<mp_auth::gateway::LoginResponse>(&bytes) {
                        Ok(ok) => Outcome::Ok {
                            new_user: ok.is_new_user,
                        },
                        Err(_) => Outcome::Err("http:malformed_response".into()),
                    }
                } else {
                    Outcome::Err(
                        serde_json::from_slice::<serde_json::Value>(&bytes)
                            .ok()
                            .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
                            .unwrap_or_else(|| format!("http:{}", status.as_u16())),
                    )
                }
            }
        }
    }
}
