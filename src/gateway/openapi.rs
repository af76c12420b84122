//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the `ToSchema` types, so it cannot drift.

use super::{error, health, jwks, login, session};
use axum::Json;
use utoipa::OpenApi;

/// The gateway's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mp-auth HTTP gateway",
        description = "WeChat Mini Program login over HTTPS+JSON (wx.request). \
                       Errors are JSON {reason, message, action, field?, request_id}; \
                       switch on `reason`. See docs/http-api.md."
    ),
    paths(
        login::mp_login,
        session::refresh,
        session::logout,
        session::delete_account,
        jwks::jwks,
        jwks::discovery,
        health::healthz,
        health::readyz,
        openapi_json
    ),
    components(schemas(
        login::LoginRequest,
        login::LoginResponse,
        session::RefreshRequest,
        session::RefreshResponse,
        session::LogoutRequest,
        session::LogoutResponse,
        session::DeleteAccountRequest,
        session::DeleteAccountResponse,
        error::ErrorBody,
        error::Reason,
        health::HealthStatus
    )),
    tags(
        (name = "auth", description = "Mini-program login"),
        (name = "sessions", description = "Refresh and logout"),
        (name = "keys", description = "Public keys for verifying access tokens"),
        (name = "health", description = "Probes for load balancers and Kubernetes"),
        (name = "meta", description = "This document")
    )
)]
pub struct ApiDoc;

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_and_the_error_reasons() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/auth/mp_login",
            "/auth/refresh",
            "/auth/logout",
            "/healthz",
            "/readyz",
            "/openapi.json",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        let login = &doc["paths"]["/auth/mp_login"]["post"];
        for status in [
            "200", "400", "401", "403", "409", "413", "415", "429", "500", "503", "504",
        ] {
            assert!(login["responses"].get(status).is_some(), "{status} missing");
        }
        let reasons = doc["components"]["schemas"]["Reason"].to_string();
        assert!(reasons.contains("SESSION_KEY_STALE"), "{reasons}");
        let request = &doc["components"]["schemas"]["LoginRequest"]["properties"];
        for field in ["code", "phoneCode", "encryptedData", "iv", "appId"] {
            assert!(request.get(field).is_some(), "{field} missing");
        }
    }
}
