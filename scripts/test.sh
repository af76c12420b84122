#!/usr/bin/env bash
# The test command (README, `.ci/run`): prepares what the tests need on a fresh
# machine (MariaDB, Galera, tools) idempotently, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test environment"
scripts/test-env.sh
scripts/galera-env.sh
scripts/tools.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The production build (the Dockerfile's): no simulator, dev mode or login command.
echo "== cargo clippy -p mp-auth --no-default-features --all-targets -- -D warnings"
cargo clippy -p mp-auth --no-default-features --all-targets --locked -- -D warnings

echo "== cargo test --workspace"
cargo test --workspace --all-targets --locked

echo "== Kubernetes manifests (kustomize build + kubernetes-validate --strict)"
scripts/validate-k8s.sh

echo "== all tests passed"
