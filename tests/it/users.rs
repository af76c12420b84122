//! The Users API: caller authentication and permissions per RPC, reads and
//! lookups, and account deletion (also racing logins of the same phone).

use crate::helpers::*;
use mp_auth::{
    callers::{generate_key, key_hash_hex},
    config::CallerSettings,
    proto::{self, lookup_user_request::Key, users_client::UsersClient},
};
use std::sync::Arc;
use tonic::{Code, Request, transport::Channel};

/// API keys with different permissions, configured on one server.
struct Keys {
    reader: String,
    revoker: String,
    phone_reader: String,
    deleter: String,
    powerless: String,
}

async fn spawn_with_callers() -> (TestApp, Keys) {
    let keys = Keys {
        reader: generate_key(),
        revoker: generate_key(),
        phone_reader: generate_key(),
        deleter: generate_key(),
        powerless: generate_key(),
    };
    let entries = vec![
        entry("orders", &keys.reader, &["users:read"]),
        entry(
            "support",
            &keys.phone_reader,
            &["users:read", "users:read_phone"],
        ),
        entry("privacy", &keys.deleter, &["users:delete"]),
        entry("nobody", &keys.powerless, &[]),
        entry("support-desk", &keys.revoker, &["sessions:revoke"]),
    ];
    let app = TestApp::spawn_with(TestAppOptions {
        apps: 2,
        tweak: Box::new(move |s| s.callers = entries),
        ..Default::default()
    })
    .await;
    (app, keys)
}

fn entry(name: &str, key: &str, permissions: &[&str]) -> CallerSettings {
    CallerSettings {
        name: name.into(),
        key_sha256: key_hash_hex(key),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
    }
}

async fn users(app: &TestApp) -> UsersClient<Channel> {
    UsersClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .unwrap()
}

fn with_key<T>(key: Option<&str>, message: T) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(key) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    req
}

fn get(id: &str, include_phone: bool) -> proto::GetUserRequest {
    proto::GetUserRequest {
        user_id: id.into(),
        include_phone,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_needs_a_valid_key_with_its_permission() {
    let (app, keys) = spawn_with_callers().await;
    let ok = app
        .login_with_phone_code(app.app_id(), &unique_user(), None)
        .await
        .unwrap();
    let mut client = users(&app).await;
    // No key, a wrong key: UNAUTHENTICATED.
    for key in [None, Some("mpk_not-a-configured-key")] {
        let err = client
            .get_user(with_key(key, get(&ok.user_id, false)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{key:?}");
        assert_eq!(reason(&err), "CALLER_UNAUTHENTICATED");
    }
    // A valid key without the permission: PERMISSION_DENIED naming it.
    let cases: [(&str, &str); 3] = [
        (&keys.powerless, "users:read"),
        (&keys.deleter, "users:read"),
        (&keys.reader, "users:read_phone"),
    ];
    for (key, missing) in cases {
        let include_phone = missing == "users:read_phone";
        let err = client
            .get_user(with_key(Some(key), get(&ok.user_id, include_phone)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(reason(&err), "PERMISSION_DENIED");
        assert!(err.message().contains(missing), "{}", err.message());
    }
    for key in [&keys.reader, &keys.powerless] {
        let err = client
            .delete_user(with_key(
                Some(key),
                proto::DeleteUserRequest {
                    user_id: ok.user_id.clone(),
                    reason: "test".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let err = client
        .lookup_user(with_key(
            Some(&keys.powerless),
            proto::LookupUserRequest {
                key: Some(Key::Unionid("u".into())),
                include_phone: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // With the permissions, the same calls succeed.
    let user = client
        .get_user(with_key(Some(&keys.reader), get(&ok.user_id, false)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.user_id, ok.user_id);
    assert!(
        user.phone.is_empty(),
        "no full phone without users:read_phone"
    );
    let user = client
        .get_user(with_key(Some(&keys.phone_reader), get(&ok.user_id, true)))
        .await
        .unwrap()
        .into_inner();
    assert!(user.phone.starts_with("+86"), "{}", user.phone_masked);
    // Health and reflection stay open (checked by the health and grpcurl tests).
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_bad_keys_from_one_source_are_rate_limited() {
    let (app, keys) = spawn_with_callers().await;
    let mut client = users(&app).await;
    let mut limited = false;
    for _ in 0..40 {
        let err = client
            .get_user(with_key(Some("mpk_wrong"), get("1", false)))
            .await
            .unwrap_err();
        if reason(&err) == "CALLER_RATE_LIMITED" {
            assert_eq!(err.code(), Code::ResourceExhausted);
            limited = true;
            break;
        }
    }
    assert!(limited, "failures from one address are rate-limited");
    // The right key from the same address is refused too while the block lasts.
    let err = client
        .get_user(with_key(Some(&keys.reader), get("1", false)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "CALLER_RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_reads_with_masked_phone_and_every_identity_across_apps() {
    let (app, keys) = spawn_with_callers().await;
    let user = unique_user();
    let phone = unique_phone();
    let first = app
        .login_with_phone_code(&app.app_ids[0], &user, Some(&phone))
        .await
        .unwrap();
    let second = app
        .login_with_phone_code(&app.app_ids[1], &user, Some(&phone))
        .await
        .unwrap();
    assert_eq!(first.user_id, second.user_id);
    let mut client = users(&app).await;
    let got = client
        .get_user(with_key(Some(&keys.reader), get(&first.user_id, false)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.country_code, "86");
    assert_eq!(
        got.phone_masked,
        format!("{}****{}", &phone[..3], &phone[7..])
    );
    assert!(got.created_at_ms > 0 && got.last_login_at_ms >= got.created_at_ms);
    let mut apps: Vec<&str> = got.identities.iter().map(|i| i.app_id.as_str()).collect();
    apps.sort_unstable();
    let mut expected: Vec<&str> = app.app_ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(apps, expected);
    assert!(got.identities.iter().all(|i| i.unionid == first.unionid));
    assert!(
        !format!("{got:?}").contains(&phone[3..7]),
        "Debug masks the phone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_finds_a_user_by_identity_unionid_or_phone_and_not_found_is_typed() {
    let (app, keys) = spawn_with_callers().await;
    let phone = unique_phone();
    let ok = app
        .login_with_phone_code(app.app_id(), &unique_user(), Some(&phone))
        .await
        .unwrap();
    let mut client = users(&app).await;
    let lookups = [
        Key::Identity(proto::Identity {
            app_id: app.app_id().into(),
            openid: ok.openid.clone(),
            unionid: String::new(),
        }),
        Key::Unionid(ok.unionid.clone()),
        Key::Phone(proto::PhoneNumber {
            country_code: String::new(),
            number: phone.clone(),
        }),
        Key::Phone(proto::PhoneNumber {
            country_code: "+86".into(),
            number: format!("{} {} {}", &phone[..3], &phone[3..7], &phone[7..]),
        }),
    ];
    for key in lookups {
        let found = client
            .lookup_user(with_key(
                Some(&keys.reader),
                proto::LookupUserRequest {
                    key: Some(key.clone()),
                    include_phone: false,
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"))
            .into_inner();
        assert_eq!(found.user_id, ok.user_id);
    }
    let misses = [
        Key::Identity(proto::Identity {
            app_id: app.app_id().into(),
            openid: "o-nobody".into(),
            unionid: String::new(),
        }),
        Key::Unionid("u-nobody".into()),
        Key::Phone(proto::PhoneNumber {
            country_code: "86".into(),
            number: unique_phone(),
        }),
    ];
    for key in misses {
        let err = client
            .lookup_user(with_key(
                Some(&keys.reader),
                proto::LookupUserRequest {
                    key: Some(key),
                    include_phone: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(reason(&err), "USER_NOT_FOUND");
    }
    let err = client
        .lookup_user(with_key(
            Some(&keys.reader),
            proto::LookupUserRequest {
                key: None,
                include_phone: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .get_user(with_key(Some(&keys.reader), get("not-a-number", false)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_erases_the_phone_and_identities_keeps_a_tombstone_and_the_phone_starts_afresh() {
    let (app, keys) = spawn_with_callers().await;
    let user = unique_user();
    let phone = unique_phone();
    let ok = app
        .login_with_phone_code(app.app_id(), &user, Some(&phone))
        .await
        .unwrap();
    let mut client = users(&app).await;
    let delete = |reason: &str| proto::DeleteUserRequest {
        user_id: ok.user_id.clone(),
        reason: reason.into(),
    };
    let deleted = client
        .delete_user(with_key(Some(&keys.deleter), delete("user_request")))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted_now);
    assert_eq!(deleted.identities_erased, 1);
    // Idempotent: the second deletion reports the first.
    let again = client
        .delete_user(with_key(Some(&keys.deleter), delete("user_request")))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.deleted_now);
    assert_eq!(again.deleted_at_ms, deleted.deleted_at_ms);
    // The user is gone: typed as deleted by id, unfindable by openid or phone.
    let err = client
        .get_user(with_key(Some(&keys.reader), get(&ok.user_id, false)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "USER_DELETED");
    for key in [
        Key::Identity(proto::Identity {
            app_id: app.app_id().into(),
            openid: ok.openid.clone(),
            unionid: String::new(),
        }),
        Key::Unionid(ok.unionid.clone()),
        Key::Phone(proto::PhoneNumber {
            country_code: "86".into(),
            number: phone.clone(),
        }),
    ] {
        let err = client
            .lookup_user(with_key(
                Some(&keys.reader),
                proto::LookupUserRequest {
                    key: Some(key),
                    include_phone: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "USER_NOT_FOUND");
    }
    let identity = app
        .db
        .store
        .identity(
            &mp_auth::domain::AppId::parse(app.app_id()).unwrap(),
            &mp_auth::domain::OpenId::parse(&ok.openid).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        identity.is_none(),
        "no identity row (nor its sealed session key) is left"
    );
    // The same phone logging in later is a new user with a new id.
    let fresh = app
        .login_with_phone_code(app.app_id(), &user, Some(&phone))
        .await
        .unwrap();
    assert!(fresh.is_new_user);
    assert_ne!(fresh.user_id, ok.user_id);
    // Deleting an id that never existed is not found.
    let err = client
        .delete_user(with_key(
            Some(&keys.deleter),
            proto::DeleteUserRequest {
                user_id: "999999999".into(),
                reason: "test".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "USER_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_racing_logins_of_the_same_phone_never_leaves_half_a_user() {
    let (app, keys) = spawn_with_callers().await;
    let app = Arc::new(app);
    for round in 0..15 {
        let user = unique_user();
        let phone = unique_phone();
        let first = app
            .login_with_phone_code(app.app_id(), &user, Some(&phone))
            .await
            .unwrap();
        let deleter = {
            let app = app.clone();
            let key = keys.deleter.clone();
            let id = first.user_id.clone();
            tokio::spawn(async move {
                users(&app)
                    .await
                    .delete_user(with_key(
                        Some(&key),
                        proto::DeleteUserRequest {
                            user_id: id,
                            reason: "race".into(),
                        },
                    ))
                    .await
            })
        };
        let mut logins = Vec::new();
        for _ in 0..3 {
            let app = app.clone();
            let user = user.clone();
            let phone = phone.clone();
            logins.push(tokio::spawn(async move {
                app.login_with_phone_code(app.app_id(), &user, Some(&phone))
                    .await
            }));
        }
        deleter.await.unwrap().expect("the deletion succeeds");
        for login in logins {
            login.await.unwrap().expect("every login succeeds");
        }
        // Invariants: the deleted id has no row and no identity; whoever holds the
        // phone now is a complete user with an identity.
        let store = &app.db.store;
        let old = mp_auth::domain::UserId(first.user_id.parse().unwrap());
        assert!(store.user(old).await.unwrap().is_none(), "round {round}");
        assert_eq!(store.identity_count(old).await.unwrap(), 0, "round {round}");
        assert!(
            store.tombstone(old).await.unwrap().is_some(),
            "round {round}"
        );
        let p = mp_auth::domain::Phone::new("86", &phone).unwrap();
        if let Some(current) = store.user_id_by_phone(&p).await.unwrap() {
            assert_ne!(current, old, "round {round}");
            assert!(
                store.identity_count(current).await.unwrap() >= 1,
                "round {round}: a user with a phone and no identity"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn support_lists_and_revokes_sessions_and_a_deleted_user_s_tokens_stop_verifying() {
    let (app, keys) = spawn_with_callers().await;
    let user = unique_user();
    let first = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    let second = app
        .login_with_phone_code(app.app_id(), &user, None)
        .await
        .unwrap();
    let mut client = users(&app).await;
    let listed = client
        .list_sessions(with_key(
            Some(&keys.reader),
            proto::ListSessionsRequest {
                user_id: first.user_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed
        .sessions
        .iter()
        .map(|s| s.session_id.clone())
        .collect();
    ids.sort();
    let mut want = vec![first.session_id.clone(), second.session_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(listed.sessions.iter().all(|s| s.app_id == app.app_id()));
    // Revoking needs sessions:revoke (the reader lacks it; an unknown key too).
    for key in [keys.reader.as_str(), "mpk_unknown"] {
        let err = client
            .revoke_session(with_key(
                Some(key),
                proto::RevokeSessionRequest {
                    session_id: first.session_id.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert!(matches!(
            err.code(),
            Code::PermissionDenied | Code::Unauthenticated
        ));
    }
    let revoked = client
        .revoke_session(with_key(
            Some(&keys.revoker),
            proto::RevokeSessionRequest {
                session_id: first.session_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_now);
    assert_eq!(revoked.user_id, first.user_id);
    let row = app
        .db
        .store
        .session(&first.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.revoke_reason.as_deref(), Some("admin"));
    // Deleting the user revokes both sessions: their refresh tokens stop working.
    client
        .delete_user(with_key(
            Some(&keys.deleter),
            proto::DeleteUserRequest {
                user_id: first.user_id.clone(),
                reason: "support_ticket:42".into(),
            },
        ))
        .await
        .unwrap();
    let first_row = app
        .db
        .store
        .session(&first.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first_row.revoke_reason.as_deref(),
        Some("admin"),
        "revoked before the deletion"
    );
    for login in [&second] {
        let err = app
            .client()
            .await
            .refresh_session(proto::RefreshSessionRequest {
                refresh_token: login.refresh_token.clone(),
                app_id: app.app_id().into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "SESSION_REVOKED");
        let row = app
            .db
            .store
            .session(&login.session_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.revoke_reason.as_deref(), Some("account_deleted"));
    }
    let err = client
        .list_sessions(with_key(
            Some(&keys.reader),
            proto::ListSessionsRequest {
                user_id: first.user_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "USER_DELETED");
}
