//! The `decrypt` command: prints the record with the phone masked, or says exactly what is wrong.

use std::process::Command;

const APP: &str = "wx4f4bc4dec97d474b";
const KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
const PHONE: &str = "xT8p8W6jIVdEWQ+ccHuD2bmG5RSiwg14VWRFw/UGVh6Aj+jDIadafJ4xdCIBQ/uxDiyw/MZWvpFyRn3pP3xxVfNQxFtzghvK+Pj5JQI7x412Zc+UKBdZyt5yiQboroSxabTum1k4MMOlnoCxhJ46cxPDT2EuLbNUf2McwNtGO0/9E+Xj/ZwENw48ucueL3UqNoKpXxFYvqH6eawrR2MXnA==";

fn decrypt(app: &str, key: &str, data: &str, iv: &str, max_age: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mp-auth"))
        .args([
            "decrypt",
            "--app-id",
            app,
            "--session-key",
            key,
            "--encrypted-data",
            data,
            "--iv",
            iv,
            "--max-age-secs",
            max_age,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn decrypt_prints_the_phone_masked_and_tolerates_spaces() {
    let (ok, out) = decrypt(APP, KEY, &PHONE.replace('+', " "), IV, "4000000000");
    assert!(ok, "{out}");
    assert!(out.contains("135****6666"), "{out}");
    assert!(
        !out.contains("13580006666"),
        "the full phone is never printed"
    );
}

#[test]
fn decrypt_explains_each_failure() {
    let cases = [
        (
            APP,
            "HyVFkGl5F5OQWJZZaNzBBg==",
            PHONE,
            IV,
            "4000000000",
            "stale",
        ),
        (
            "wx0000000000000000",
            KEY,
            PHONE,
            IV,
            "4000000000",
            "another mini program",
        ),
        (APP, KEY, PHONE, IV, "60", "outside the allowed"),
        (APP, KEY, "abc$", IV, "60", "not valid base64"),
        (APP, KEY, PHONE, "AAAA", "60", "16 bytes"),
        (APP, "short", PHONE, IV, "60", "session_key is unusable"),
    ];
    for (app, key, data, iv, max_age, expected) in cases {
        let (ok, out) = decrypt(app, key, data, iv, max_age);
        assert!(!ok, "{expected}: {out}");
        assert!(out.contains(expected), "expected {expected:?} in {out}");
    }
}
