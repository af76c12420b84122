//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the `ToSchema` types, so it cannot drift.
//! Two modifiers add what the derive macros cannot say: the statuses the edge
//! can answer on every route (405, 431, 500, and 429 outside the probes), and
//! that `iv` is required with `encryptedData` (JSON Schema `dependentSchemas`),
//! so every body the schema accepts is one the gateway accepts and every status
//! the gateway returns is listed (both checked by the tests below).

use super::{error, health, jwks, login, session};
use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::{RefOr, ResponseBuilder, Schema, extensions::Extensions, path::Operation},
};

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
    modifiers(&EdgeResponses, &DependentFields),
    tags(
        (name = "auth", description = "Mini-program login"),
        (name = "sessions", description = "Refresh and logout"),
        (name = "keys", description = "Public keys for verifying access tokens"),
        (name = "health", description = "Probes for load balancers and Kubernetes"),
        (name = "meta", description = "This document")
    )
)]
pub struct ApiDoc;

/// The answers of the edge itself, possible on every route: 405 (wrong method),
/// 431 (hyper: the request head is too large, no body), 500 (a caught panic),
/// and 429 (the per-IP limit) on every route but the probes.
struct EdgeResponses;

impl Modify for EdgeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = || RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"));
        let json_error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(error()))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let probe = [super::HEALTHZ_PATH, super::READYZ_PATH].contains(&path.as_str());
            let ops: [Option<&mut Operation>; 2] = [item.get.as_mut(), item.post.as_mut()];
            for op in ops.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, response: utoipa::openapi::Response| {
                    responses
                        .entry(status.to_owned())
                        .or_insert(RefOr::T(response));
                };
                add(
                    "405",
                    json_error("METHOD_NOT_ALLOWED (the Allow header lists the methods)"),
                );
                add(
                    "431",
                    ResponseBuilder::new()
                        .description(
                            "the request head is larger than gateway.max_header_bytes \
                             (answered by the HTTP server, without a body)",
                        )
                        .build(),
                );
                add("500", json_error("INTERNAL"));
                if !probe {
                    add(
                        "429",
                        json_error("RATE_LIMITED: this client IP exceeded the gateway's limit"),
                    );
                }
            }
        }
    }
}

/// `iv` (a non-blank string) is required whenever `encryptedData` is sent (JSON
/// Schema 2020-12 `dependentSchemas`, valid in OpenAPI 3.1); the derive cannot
/// express it.
struct DependentFields;

impl Modify for DependentFields {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(login))) = components.schemas.get_mut("LoginRequest") {
            login
                .extensions
                .get_or_insert_with(Extensions::default)
                .insert(
                    "dependentSchemas".to_owned(),
                    serde_json::json!({"encryptedData": {
                        "required": ["iv"],
                        "properties": {"iv": {"type": "string", "pattern": "\\S", "maxLength": 4096}}
                    }}),
                );
        }
    }
}

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

#[cfg(test)]
pub(crate) mod exactness {
    //! The document against the code: every status a route can answer is
    //! listed (with the reasons it carries), nothing else is; every body the
    //! request schemas accept is accepted by the gateway and by the service's
    //! field validation.
    use super::*;
    use crate::gateway::Reason as R;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    /// What each route can answer besides 200 and the edge's own answers
    /// (405, 431, 500; and 429 outside the probes).
    fn route_reasons(path: &str) -> Vec<R> {
        const BODY: [R; 5] = [
            R::InvalidArgument,
            R::MalformedJson,
            R::RequestTimeout,
            R::PayloadTooLarge,
            R::UnsupportedMediaType,
        ];
        const BACKEND: [R; 5] = [
            R::Internal,
            R::DatabaseUnavailable,
            R::BackendUnavailable,
            R::Timeout,
            R::RateLimited,
        ];
        let own: &[R] = match path {
            "/auth/mp_login" => &[
                R::AppIdRequired,
                R::WatermarkMismatch,
                R::UnknownApp,
                R::LoginCodeInvalid,
                R::LoginCodeUsed,
                R::PhoneCodeInvalid,
                R::UserBlocked,
                R::SessionKeyStale,
                R::EncryptedDataExpired,
                R::PhoneRequired,
                R::WechatRateLimited,
                R::WechatUnavailable,
            ],
            "/auth/refresh" => &[
                R::AppIdRequired,
                R::UnknownApp,
                R::RefreshTokenInvalid,
                R::RefreshTokenWrongApp,
                R::RefreshTokenReused,
                R::SessionRevoked,
                R::SessionExpired,
            ],
            "/auth/logout" => &[R::RefreshTokenInvalid, R::TokenInvalid],
            "/auth/account/delete" => &[R::TokenInvalid, R::TokenExpired, R::TokenRevoked],
            "/readyz" => return vec![R::NotReady],
            // The keys are fetched from the service (cached for a while).
            "/.well-known/jwks.json" | "/.well-known/openid-configuration" => {
                return vec![R::BackendUnavailable, R::Timeout, R::Internal];
            }
            _ => return Vec::new(),
        };
        BODY.iter().chain(&BACKEND).chain(own).copied().collect()
    }

    fn operations(doc: &Value) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post"] {
                if let Some(op) = item.get(method) {
                    out.push((path.clone(), op.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_lists_exactly_the_statuses_it_can_answer_with_their_reasons() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, op) in operations(&doc) {
            let probe = path == "/healthz" || path == "/readyz";
            let reasons = route_reasons(&path);
            let mut expected: BTreeSet<u16> = [200, 405, 431, 500].into();
            if !probe {
                expected.insert(429);
            }
            expected.extend(reasons.iter().map(|r| r.http_status().as_u16()));
            let listed: BTreeSet<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            assert_eq!(listed, expected, "{path}");
            for reason in reasons {
                let status = reason.http_status().as_u16().to_string();
                let description = op["responses"][&status]["description"].as_str().unwrap();
                assert!(
                    description.contains(reason.as_str()),
                    "{path} {status} does not name {}: {description}",
                    reason.as_str()
                );
            }
        }
    }

    /// A string or `null` value allowed by a property's schema?
    fn allows(property: &Value, value: &Value) -> bool {
        match value {
            Value::Null => property["type"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "null")),
            Value::String(s) => {
                let max = property["maxLength"].as_u64().unwrap_or(u64::MAX);
                let min = property["minLength"].as_u64().unwrap_or(0);
                let pattern = property["pattern"]
                    .as_str()
                    .is_none_or(|p| regex::Regex::new(p).unwrap().is_match(s));
                (min..=max).contains(&(s.chars().count() as u64)) && pattern
            }
            _ => unreachable!(),
        }
    }

    /// Every combination of the optional fields being absent, `null`, `""`, or a
    /// valid value, kept when the document's schema accepts it.
    pub(crate) fn schema_valid_bodies(
        schema: &Value,
        base: Value,
        fields: &[(&str, Value)],
    ) -> Vec<Value> {
        let mut bodies = vec![base];
        for (field, valid) in fields {
            let mut next = Vec::new();
            for body in &bodies {
                for value in [
                    None,
                    Some(Value::Null),
                    Some(json!("")),
                    Some(valid.clone()),
                ] {
                    let mut body = body.clone();
                    if let Some(value) = value {
                        if !allows(&schema["properties"][field], &value) {
                            continue;
                        }
                        body[*field] = value;
                    }
                    next.push(body);
                }
            }
            bodies = next;
        }
        if let Some(dependent) = schema["dependentSchemas"].as_object() {
            bodies.retain(|body| {
                dependent.iter().all(|(field, sub)| {
                    body.get(field).is_none()
                        || sub["required"].as_array().unwrap().iter().all(|n| {
                            let n = n.as_str().unwrap();
                            body.get(n)
                                .is_some_and(|v| allows(&sub["properties"][n], v))
                        })
                })
            });
        }
        bodies
    }

    #[test]
    fn every_session_body_the_schema_accepts_is_accepted_by_the_gateway() {
        use login::FromJsonBody as _;
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for body in schema_valid_bodies(
            &schemas["RefreshRequest"],
            json!({"refreshToken": "t"}),
            &[("appId", json!("wx4f4bc4dec97d474b"))],
        ) {
            session::RefreshRequest::from_json(body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("the gateway refused {body}: {e}"));
        }
        let logout = &schemas["LogoutRequest"];
        for body in schema_valid_bodies(logout, json!({}), &[("refreshToken", json!("t"))]) {
            for all in [None, Some(Value::Null), Some(json!(true))] {
                let mut body = body.clone();
                if let Some(all) = all
                    && (!all.is_null() || allows(&logout["properties"]["all"], &all))
                {
                    body["all"] = all;
                }
                session::LogoutRequest::from_json(body.to_string().as_bytes())
                    .unwrap_or_else(|e| panic!("the gateway refused {body}: {e}"));
            }
        }
        // `refreshToken: ""` is outside the schema (minLength 1), as the gateway says.
        assert!(!allows(
            &schemas["RefreshRequest"]["properties"]["refreshToken"],
            &json!("")
        ));
    }
}
