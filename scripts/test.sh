#!/usr/bin/env bash
# The test command (README, `.ci/run`): prepares what the tests need on a fresh
# machine (MariaDB, tools) idempotently, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test environment"
scripts/test-env.sh
scripts/galera-env.sh
scripts/tools.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --all-targets --locked

echo "== Kubernetes manifests (kustomize build + kubernetes-validate --strict)"
scripts/validate-k8s.sh

echo "== all tests passed"
