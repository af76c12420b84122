//! Diesel table definitions for both backends, written by hand to match
//! `migrations/mysql` and `migrations/sqlite` (the two agree column for column).
//!
//! To regenerate after a migration change, against a migrated MySQL database:
//! `diesel print-schema --database-url mysql://... > src/store/schema.rs`, then keep
//! the SQL types portable (`BigInt`, `Text`, `Binary`) so SQLite shares this file.

diesel::table! {
    /// One account per phone number.
    users (id) {
        id -> BigInt,
        /// E.164 form, e.g. `+8613580006666`.
        phone -> Text,
        country_code -> Text,
        login_count -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_login_at -> BigInt,
    }
}

diesel::table! {
    /// A WeChat user within one mini program, linked to an account once a login completes.
    wechat_identities (app_id, openid) {
        app_id -> Text,
        openid -> Text,
        user_id -> Nullable<BigInt>,
        unionid -> Nullable<Text>,
        /// Sealed by the caller; opaque here.
        session_key -> Nullable<Binary>,
        session_key_expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// What is left of a deleted account: its id, when and why.
    deleted_users (id) {
        id -> BigInt,
        deleted_at -> BigInt,
        reason -> Text,
    }
}

diesel::table! {
    /// One row per device login; see migrations/mysql/*_sessions.
    sessions (id) {
        id -> Text,
        user_id -> BigInt,
        app_id -> Text,
        openid -> Text,
        generation -> BigInt,
        created_at -> BigInt,
        last_used_at -> BigInt,
        idle_expires_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::joinable!(wechat_identities -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, wechat_identities, deleted_users, sessions);
