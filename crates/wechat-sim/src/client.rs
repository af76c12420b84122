//! [`SimClient`]: a typed client of the simulator's `/_sim/` control API, used
//! by tests, the benchmark's code minting and the `login` command.

use crate::{
    config::SimApp,
    faults::Fault,
    wire::{MintedLogin, MintedPhone, Pressed, SimStats},
};
use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A client of one simulator's control API. Cheap to clone (pooled connections).
#[derive(Debug, Clone)]
pub struct SimClient {
    http: reqwest::Client,
    base_url: String,
}

impl SimClient {
    /// A client for the simulator at `base_url` (e.g. `http://127.0.0.1:9400`).
    pub fn new(base_url: &str) -> Self {
        // reqwest is built without a TLS provider of its own (the workspace uses
        // ring); building a client before one is installed would panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The simulator's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn send<T: DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: simulator at {} unreachable", self.base_url))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("{what}: reading the simulator's answer"))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            anyhow::bail!("{what}: simulator answered {status}: {msg}");
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .with_context(|| format!("{what}: unexpected answer from the simulator"))
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base_url))
            .json(body)
    }

    /// Registers (or re-registers) an app.
    pub async fn register_app(&self, app: &SimApp) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "app_id": app.app_id,
            "app_secret": app.app_secret.expose_secret(),
            "open_platform": app.open_platform,
        });
        let _: serde_json::Value = self
            .send("register app", self.post("/_sim/apps", &body))
            .await?;
        Ok(())
    }

    /// Plays `wx.login()` for `user` in `app_id`; `phone` (CN digits or
    /// `+<cc><number>`) sets the user's phone number first.
    pub async fn login(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> anyhow::Result<MintedLogin> {
        let body = serde_json::json!({ "app_id": app_id, "user": user, "phone": phone });
        self.send("mint login code", self.post("/_sim/login", &body))
            .await
    }

    /// Plays the phone button for `user` in `app_id`.
    pub async fn phone(&self, app_id: &str, user: &str) -> anyhow::Result<MintedPhone> {
        let body = serde_json::json!({ "app_id": app_id, "user": user });
        self.send("mint phone code", self.post("/_sim/phone", &body))
            .await
    }

    /// Plays one tap of "一键登录" for `user` in `app_id`, as a mini-program
    /// does it: `wx.login()` (with `phone`, CN digits or `+<cc><number>`, set as
    /// the user's number first), then the phone button. The result carries the
    /// login code and both phone proofs (the new-flow code and the legacy
    /// `encryptedData` + `iv`).
    pub async fn press(
        &self,
        app_id: &str,
        user: &str,
        phone: Option<&str>,
    ) -> anyhow::Result<Pressed> {
        let login = self
            .login(app_id, user, phone)
            .await
            .context("minting a wx.login code at the simulator")?;
        let phone = self
            .phone(app_id, user)
            .await
            .context("pressing the phone button at the simulator")?;
        Ok(Pressed { login, phone })
    }

    /// Arms a fault.
    pub async fn set_fault(&self, fault: &Fault) -> anyhow::Result<()> {
        let body = serde_json::to_value(fault)?;
        let _: serde_json::Value = self
            .send("set fault", self.post("/_sim/faults", &body))
            .await?;
        Ok(())
    }

    /// Disarms all faults.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        let url = format!("{}/_sim/faults", self.base_url);
        let _: serde_json::Value = self.send("clear faults", self.http.delete(url)).await?;
        Ok(())
    }

    /// Reads call statistics.
    pub async fn stats(&self) -> anyhow::Result<SimStats> {
        let url = format!("{}/_sim/stats", self.base_url);
        self.send("read stats", self.http.get(url)).await
    }
}
