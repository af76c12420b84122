//! The registered mini programs: AppID, AppSecret, open platform binding, and
//! each app's stable-token state. Registering again replaces an app.

use crate::{
    config::SimApp,
    errcode::WxError,
    sync::{read, write},
    tokens::AppTokens,
};
use secrecy::ExposeSecret as _;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

/// A registered mini program.
pub(crate) struct AppEntry {
    pub app_id: Arc<str>,
    secret: String,
    pub open_platform: Option<String>,
    pub tokens: AppTokens,
}

/// Every registered app, by AppID.
#[derive(Default)]
pub(crate) struct Apps(RwLock<HashMap<String, Arc<AppEntry>>>);

impl Apps {
    /// Registers (or re-registers, replacing secret, open platform and tokens) an app.
    pub fn register(&self, app: &SimApp) {
        let entry = Arc::new(AppEntry {
            app_id: Arc::from(app.app_id.as_str()),
            secret: app.app_secret.expose_secret().to_owned(),
            open_platform: app.open_platform.clone().filter(|p| !p.is_empty()),
            tokens: AppTokens::default(),
        });
        write(&self.0).insert(app.app_id.clone(), entry);
    }

    /// The app registered as `app_id`.
    pub fn get(&self, app_id: &str) -> Option<Arc<AppEntry>> {
        read(&self.0).get(app_id).cloned()
    }

    /// Every app.
    pub fn all(&self) -> Vec<Arc<AppEntry>> {
        read(&self.0).values().cloned().collect()
    }

    /// The app, if `secret` is its AppSecret: WeChat's 40013 / 40125 otherwise.
    pub fn authenticate(&self, app_id: &str, secret: &str) -> Result<Arc<AppEntry>, WxError> {
        let app = self.get(app_id).ok_or(WxError::InvalidAppId)?;
        if app.secret != secret {
            return Err(WxError::InvalidAppSecret);
        }
        Ok(app)
    }
}
