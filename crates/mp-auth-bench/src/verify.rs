//! `--verify-run`: load on `Auth.VerifyToken`, the hot path of every internal
//! request. Logs `--tokens` users in first (through the simulator and the
//! service: real ES256 tokens with sessions), then verifies those tokens round
//! robin over a few HTTP/2 connections, with the API key of a caller holding
//! `tokens:verify`. Every answer must be OK: a refusal is counted by its reason.

use super::{
    driver::{self, Pace, Tally},
    target::Outcome,
    workload::{self, Flow},
};
use anyhow::Context as _;
use futures::StreamExt as _;
use mp_auth::proto;
use proto::auth_client::AuthClient;
use std::{sync::Arc, time::Duration};
use tonic::{metadata::AsciiMetadataValue, transport::Channel};
use wechat_sim::SimClient;

/// What a verification run needs: clients, tokens and the caller's key.
#[derive(Clone)]
pub struct VerifyTarget {
    clients: Vec<AuthClient<Channel>>,
    tokens: Arc<Vec<String>>,
    authorization: AsciiMetadataValue,
}

impl VerifyTarget {
    /// Connects `connections` HTTP/2 connections to `urls` and logs `count`
    /// users in to get their access tokens.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare(
        urls: &[String],
        sim: &SimClient,
        app_id: &str,
        api_key: &str,
        count: usize,
        connections: usize,
        timeout: Duration,
        parallel: usize,
    ) -> anyhow::Result<Self> {
        let clients: Vec<_> = super::target::channels(urls, connections, timeout)
            .await?
            .into_iter()
            .map(AuthClient::new)
            .collect();
        let mut authorization = AsciiMetadataValue::try_from(format!("Bearer {}", api_key.trim()))
            .context("--api-key is not printable ASCII")?;
        authorization.set_sensitive(true);
        let users: Vec<_> = (0..count).map(workload::returning_user).collect();
        let items = workload::mint(sim, app_id, Flow::Code, &users, parallel).await?;
        let client = clients[0].clone();
        let tokens: Vec<String> = futures::stream::iter(items)
            .map(|item| {
                let mut client = client.clone();
                let app_id = app_id.to_owned();
                async move {
                    let phone = match item.proof {
                        workload::Proof::Code(c) => {
                            proto::mini_program_login_request::Phone::PhoneCode(c)
                        }
                        workload::Proof::Encrypted { data, iv } => {
                            proto::mini_program_login_request::Phone::Encrypted(
                                proto::EncryptedPhone {
                                    encrypted_data: data,
                                    iv,
                                },
                            )
                        }
                    };
                    client
                        .mini_program_login(proto::MiniProgramLoginRequest {
                            app_id,
                            code: item.code,
                            phone: Some(phone),
                        })
                        .await
                        .map(|r| r.into_inner().access_token)
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|status| anyhow::anyhow!("logging the token users in failed: {status:?}"))?;
        let target = Self {
            clients,
            tokens: Arc::new(tokens),
            authorization,
        };
        // Fail early on a key without `tokens:verify` rather than count 20,000 refusals.
        if let Outcome::Err(reason) = target.verify(0, 0).await {
            anyhow::bail!(
                "VerifyToken refused the first token with {reason}: does --api-key name a caller \
                 with `tokens:verify`?"
            );
        }
        Ok(target)
    }

    /// Verifies token `i` (round robin) on connection `lane`.
    pub async fn verify(&self, lane: usize, i: usize) -> Outcome {
        let mut client = self.clients[lane % self.clients.len()].clone();
        let mut request = tonic::Request::new(proto::VerifyTokenRequest {
            access_token: self.tokens[i % self.tokens.len()].clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        match client.verify_token(request).await {
            Ok(_) => Outcome::Ok { new_user: false },
            Err(status) => Outcome::Err(
                mp_auth::api::reason_of(&status)
                    .unwrap_or_else(|| format!("grpc:{:?}", status.code())),
            ),
        }
    }

    /// `count` verifications at `pace`.
    pub async fn run(&self, count: usize, pace: Pace, deadline: Option<Duration>) -> Tally {
        let target = self.clone();
        driver::drive(count, pace, deadline, move |lane, i| {
            let target = target.clone();
            async move { target.verify(lane, i).await }
        })
        .await
    }
}
