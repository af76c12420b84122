//! Dev mode and the `login` command, as a user runs them: child processes on
//! free ports with a temporary data directory.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `mp-auth dev` child process.
pub struct DevProcess {
    child: Child,
    pub endpoints: serde_json::Value,
}

impl DevProcess {
    /// Starts dev mode on free ports in `dir` and waits until it is ready.
    pub fn start(dir: &Path) -> DevProcess {
        let stderr = if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::start_with(dir, Stdio::null(), stderr, &[])
    }

    /// Starts dev mode with the given output streams and extra environment.
    pub fn start_with(
        dir: &Path,
        stdout: Stdio,
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> DevProcess {
        let _ = std::fs::remove_file(dir.join("endpoints.json"));
        let child = Command::new(env!("CARGO_BIN_EXE_mp-auth"))
            .args([
                "dev",
                "--sim-port",
                "0",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--data-dir",
            ])
            .arg(dir)
            .env_remove("DATABASE_URL")
            .env("MP_AUTH_LOG__FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut dev = DevProcess {
            child,
            endpoints: serde_json::Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let path = dir.join("endpoints.json");
        while Instant::now() < deadline {
            if let Some(status) = dev.child.try_wait().unwrap() {
                panic!("dev mode exited early: {status}");
            }
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                dev.endpoints = v;
                return dev;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dev mode did not become ready within 60 s");
    }

    pub fn endpoint(&self, name: &str) -> String {
        self.endpoints[name].as_str().unwrap().to_owned()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "dev mode exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("dev mode did not stop within 20 s of SIGTERM");
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mp-auth login --json` against `dev` and returns the response.
fn login(dev: &DevProcess, user: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mp-auth"))
        .args([
            "login",
            "--json",
            "--user",
            user,
            "--gateway",
            &dev.endpoint("gateway"),
            "--simulator",
            &dev.endpoint("simulator"),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "login failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Verifies `token` offline, as an internal service would: against the JWKS
/// the gateway serves, by the token's `kid`, with the algorithm pinned to ES256.
fn verify(dev: &DevProcess, token: &str) -> serde_json::Value {
    let url = format!("{}/.well-known/jwks.json", dev.endpoint("gateway"));
    mp_auth::tls::install_crypto_provider();
    let jwks: jsonwebtoken::jwk::JwkSet = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap() });
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(
        header.alg,
        jsonwebtoken::Algorithm::ES256,
        "dev mode signs ES256"
    );
    let kid = header.kid.expect("tokens carry a kid");
    let jwk = jwks.find(&kid).expect("the token's kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["mp-auth-clients"]);
    validation.set_issuer(&["mp-auth"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[test]
fn dev_mode_logs_users_in_and_keeps_them_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(dir.path());
    let first = login(&dev, "alice", &[]);
    let token = first["access_token"].as_str().unwrap();
    let claims = verify(&dev, token);
    assert_eq!(claims["sub"], first["user_id"]);
    let legacy = login(&dev, "bob", &["--flow", "legacy"]);
    assert_eq!(legacy["is_new_user"], true);
    let via_grpc = login(
        &dev,
        "carol",
        &["--grpc", &format!("http://{}", dev.endpoint("grpc"))],
    );
    assert_eq!(via_grpc["is_new_user"], true);
    dev.stop();

    let dev = DevProcess::start(dir.path());
    let again = login(&dev, "alice", &[]);
    assert_eq!(again["is_new_user"], false, "the user survived the restart");
    assert_eq!(again["user_id"], first["user_id"]);
    verify(&dev, again["access_token"].as_str().unwrap());
    dev.stop();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for file in ["dev-secrets.json", "dev-signing-key.pem", "dev-caller-key"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is owner-only: {mode:o}");
        }
    }
}

/// Runs `mp-auth login <args> --json` against `dev`: (exit success, JSON answer).
fn login_command(dev: &DevProcess, args: &[&str], grpc: bool) -> (bool, serde_json::Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mp-auth"));
    command
        .arg("login")
        .args(args)
        .args(["--json", "--gateway", &dev.endpoint("gateway")]);
    if grpc {
        command.args(["--grpc", &format!("http://{}", dev.endpoint("grpc"))]);
    }
    let out = command
        .args(["--simulator", &dev.endpoint("simulator")])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

#[test]
fn the_login_command_logs_in_silently_refreshes_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(dir.path());
    for grpc in [false, true] {
        let user = format!("cli-sessions-{grpc}-{}", std::process::id());
        // Unknown yet: the silent form answers PHONE_REQUIRED and fails.
        let (ok, answer) = login_command(&dev, &["--user", &user, "--silent"], grpc);
        assert!(!ok);
        assert_eq!(answer["reason"], "PHONE_REQUIRED", "{answer}");
        let (ok, first) = login_command(&dev, &["--user", &user], grpc);
        assert!(ok, "{first}");
        let (ok, silent) = login_command(&dev, &["--user", &user, "--silent"], grpc);
        assert!(ok, "{silent}");
        assert_eq!(silent["user_id"], first["user_id"]);
        let token = silent["refresh_token"].as_str().unwrap().to_owned();
        let (ok, refreshed) = login_command(&dev, &["refresh", "--refresh-token", &token], grpc);
        assert!(ok, "{refreshed}");
        let next = refreshed["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(next, token);
        let (ok, out) = login_command(&dev, &["logout", "--refresh-token", &next], grpc);
        assert!(ok, "{out}");
        assert_eq!(out["sessions_revoked"], 1);
        let (ok, err) = login_command(&dev, &["refresh", "--refresh-token", &next], grpc);
        assert!(!ok);
        assert_eq!(err["reason"], "SESSION_REVOKED", "{err}");
        // --all with the first login's access token ends the rest.
        let access = first["access_token"].as_str().unwrap();
        let (ok, out) = login_command(&dev, &["logout", "--access-token", access, "--all"], grpc);
        assert!(ok, "{out}");
        assert_eq!(out["sessions_revoked"], 1, "{out}");
    }
    dev.stop();
}

#[test]
fn dev_mode_refuses_an_inherited_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mp-auth"))
        .args([
            "dev",
            "--sim-port",
            "0",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env(
            "DATABASE_URL",
            "mysql://prod:secret-password@db.internal:3306/mp_auth",
        )
        .env("MP_AUTH_LOG__FORMAT", "json")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
    assert!(!stderr.contains("secret-password"), "{stderr}");
    assert!(!dir.path().join("endpoints.json").exists());
}

#[test]
fn the_mini_program_sample_logs_in_against_dev_mode() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is required for the mini-program sample test (Node 20+)"
    );
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(dir.path());
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("node")
        .args(["--test", "examples/miniprogram/test/"])
        .current_dir(root)
        .env("MP_AUTH_GATEWAY_URL", dev.endpoint("gateway"))
        .env("MP_AUTH_SIM_URL", dev.endpoint("simulator"))
        .env("MP_AUTH_APP_ID", dev.endpoint("app_id"))
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the mini-program tests failed:\n{report}"
    );
    assert!(report.contains("# fail 0"), "{report}");
    dev.stop();
}
