//! The two edges against each other: what the gRPC table ([`crate::grpc::error`])
//! sends, the gateway's table ([`crate::gateway::error`]) answers as the
//! documented HTTP error. Lives outside both edges, which never import each other.

use crate::{
    domain::FieldError,
    gateway::error::{ApiError, Reason, from_status},
    grpc::error::to_status,
    login::LoginError,
};
use crate::{
    gateway::{LoginRequest, login::FromJsonBody, openapi::exactness::schema_valid_bodies},
    grpc::auth::parse_request,
};
use serde_json::json;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use utoipa::OpenApi as _;

fn mapped(err: &LoginError) -> ApiError {
    from_status(&to_status(err))
}

#[track_caller]
fn assert_row(err: LoginError, http: u16, reason: &str) -> ApiError {
    let api = mapped(&err);
    assert_eq!(api.reason().as_str(), reason, "{err:?}");
    assert_eq!(api.reason().http_status().as_u16(), http, "{err:?}");
    assert!(!api.body().action.is_empty());
    api
}

#[test]
fn every_login_error_maps_to_its_http_row() {
    assert_row(LoginError::AppIdRequired, 400, "APP_ID_REQUIRED");
    assert_row(LoginError::WatermarkMismatch, 400, "WATERMARK_MISMATCH");
    assert_row(LoginError::UnknownApp, 400, "UNKNOWN_APP");
    assert_row(LoginError::LoginCodeInvalid, 401, "LOGIN_CODE_INVALID");
    assert_row(LoginError::LoginCodeUsed, 401, "LOGIN_CODE_USED");
    assert_row(LoginError::PhoneCodeInvalid, 401, "PHONE_CODE_INVALID");
    assert_row(LoginError::UserBlocked, 403, "USER_BLOCKED");
    assert_row(LoginError::SessionKeyStale, 409, "SESSION_KEY_STALE");
    assert_row(
        LoginError::EncryptedDataExpired,
        409,
        "ENCRYPTED_DATA_EXPIRED",
    );
    assert_row(LoginError::RateLimited, 429, "WECHAT_RATE_LIMITED");
    assert_row(LoginError::WechatUnavailable, 503, "WECHAT_UNAVAILABLE");
    assert_row(LoginError::DatabaseUnavailable, 503, "DATABASE_UNAVAILABLE");
    assert_row(LoginError::WechatMisconfigured, 500, "INTERNAL");
    assert_row(
        LoginError::Internal(anyhow::anyhow!("boom")),
        500,
        "INTERNAL",
    );
}

#[test]
fn invalid_field_rows_name_the_json_field() {
    for (proto, json) in [
        ("encrypted_data", "encryptedData"),
        ("phone_code", "phoneCode"),
        ("app_id", "appId"),
        ("code", "code"),
        ("iv", "iv"),
    ] {
        let api = assert_row(
            LoginError::InvalidField(FieldError::new(proto, "is required")),
            400,
            "INVALID_ARGUMENT",
        );
        let body = api.body();
        assert_eq!(body.field.as_deref(), Some(json));
        assert!(
            body.message.contains(&format!("`{json}`")),
            "{}",
            body.message
        );
    }
    let api = assert_row(LoginError::AppIdRequired, 400, "APP_ID_REQUIRED");
    assert_eq!(api.body().field.as_deref(), Some("appId"));
}

#[test]
fn backend_rate_limit_uses_retry_info_or_sixty_seconds() {
    let api = mapped(&LoginError::RateLimited);
    assert_eq!(api.retry_after_secs(), Some(60));
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(Duration::from_millis(7_200)));
    let api = from_status(&Status::with_error_details(
        Code::ResourceExhausted,
        "slow down",
        details,
    ));
    assert_eq!(api.reason(), Reason::RateLimited);
    assert_eq!(api.retry_after_secs(), Some(8));
    let api = from_status(&Status::resource_exhausted("no details"));
    assert_eq!(api.retry_after_secs(), Some(60));
}

#[test]
fn unavailable_retry_after_is_between_one_and_five_seconds() {
    for _ in 0..50 {
        let secs = mapped(&LoginError::WechatUnavailable)
            .retry_after_secs()
            .unwrap();
        assert!((1..=5).contains(&secs), "{secs}");
    }
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(Duration::from_secs(30)));
    let api = from_status(&Status::with_error_details(Code::Unavailable, "x", details));
    assert_eq!(api.retry_after_secs(), Some(5));
}

#[test]
fn internal_backend_messages_never_reach_the_client() {
    let api = mapped(&LoginError::Internal(anyhow::anyhow!(
        "mysql://root:hunter2@db"
    )));
    assert!(!api.body().message.contains("hunter2"));
    let api = ApiError::Unexpected(anyhow::anyhow!("hunter2"));
    assert_eq!(api.body().message, "internal error");
}

#[test]
fn every_login_body_the_schema_accepts_is_accepted_by_the_gateway_and_the_service() {
    let doc = serde_json::to_value(crate::gateway::openapi::ApiDoc::openapi()).unwrap();
    let schema = &doc["components"]["schemas"]["LoginRequest"];
    assert_eq!(
        schema["dependentSchemas"]["encryptedData"]["required"],
        json!(["iv"])
    );
    let bodies = schema_valid_bodies(
        schema,
        json!({"code": "0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D"}),
        &[
            (
                "phoneCode",
                json!("e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"),
            ),
            ("encryptedData", json!("CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZM")),
            ("iv", json!("r7BXXKkLb8qrSNn05n0qiA==")),
            ("appId", json!("wx4f4bc4dec97d474b")),
        ],
    );
    assert!(bodies.len() > 50, "{}", bodies.len());
    assert!(
        bodies.contains(&json!({"code": "0c3Xyz0w3Ojbq03V7a0w3ZbAmE2Xyz0D", "phoneCode": null}))
    );
    for body in bodies {
        let parsed = <LoginRequest as FromJsonBody>::from_json(body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("the gateway refused {body}: {e}"));
        parse_request(parsed.into_proto())
            .unwrap_or_else(|e| panic!("the service refused {body}: {e}"));
    }
}
