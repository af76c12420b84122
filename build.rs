//! Compiles `proto/` with protox (pure Rust, no `protoc`) and tonic-prost-build,
//! and writes the descriptor set that gRPC reflection serves.

use prost::Message;
use std::{env, fs, path::PathBuf};

/// Generated messages whose derived `Debug` would print a secret.
const REDACTED_MESSAGES: [&str; 9] = [
    ".mpauth.v1.MiniProgramLoginRequest",
    ".mpauth.v1.EncryptedPhone",
    ".mpauth.v1.MiniProgramLoginResponse",
    ".mpauth.v1.User",
    ".mpauth.v1.RefreshSessionRequest",
    ".mpauth.v1.RefreshSessionResponse",
    ".mpauth.v1.LogoutRequest",
    ".mpauth.v1.VerifyTokenRequest",
    ".mpauth.v1.DeleteAccountRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mpauth/v1/auth.proto",
        "proto/mpauth/v1/users.proto",
        "proto/mpauth/v1/errors.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("mpauth_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Messages that carry codes or tokens get a redacting `Debug` by hand
        // (src/proto_debug.rs) instead of the derived one.
        .skip_debug(REDACTED_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
