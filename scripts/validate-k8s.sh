#!/usr/bin/env bash
# Validates the Kubernetes manifests: builds the kustomize base in k8s/ and checks every object (and the
# Secret template, which is not part of the build) against the Kubernetes OpenAPI schemas with
# `kubernetes-validate --strict`, which also rejects unknown or misspelt fields.
#
# Usage: scripts/validate-k8s.sh
# Env:   K8S_VERSIONS  Kubernetes versions to validate against (default "1.30 1.33": the oldest
#                      version the manifests support, lifecycle.preStop.sleep, and a recent one).
# Needs: kubectl (for `kubectl kustomize`), python3 (kubernetes-validate is installed into .venv/).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
versions="${K8S_VERSIONS:-1.30 1.33}"

if ! command -v kubectl >/dev/null 2>&1; then
    echo "error: kubectl is not installed; it builds the kustomize base (kubectl kustomize k8s/)." >&2
    echo "hint: install it from https://kubernetes.io/docs/tasks/tools/ (or your package manager), then re-run." >&2
    exit 2
fi

validator="$repo/.venv/bin/kubernetes-validate"
if [[ ! -x "$validator" ]]; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 is needed to install kubernetes-validate into .venv/." >&2
        exit 2
    fi
    echo "installing kubernetes-validate into .venv/ ..."
    python3 -m venv "$repo/.venv"
    "$repo/.venv/bin/pip" install -q kubernetes-validate
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
built="$tmp/k8s.yaml"

echo "building: kubectl kustomize k8s/"
kubectl kustomize k8s/ >"$built"
objects="$(grep -c '^kind:' "$built")"
echo "built $objects objects"

version_args=()
for v in $versions; do version_args+=(-k "$v"); done

status=0
"$validator" --strict "${version_args[@]}" "$built" k8s/secret.template.yaml >"$tmp/report" 2>&1 || status=$?
cat "$tmp/report"

# kubernetes-validate only warns (exit 0) when it has no schema for a kind: treat that as a failure too.
if [[ $status -ne 0 ]] || grep -Eq '^(ERROR|WARN|FATAL)' "$tmp/report"; then
    echo "FAILED: see the ERROR/WARN lines above" >&2
    exit 1
fi
expected=$(( (objects + 1) * $(wc -w <<<"$versions") ))
passed="$(grep -c ' passed for resource ' "$tmp/report" || true)"
if [[ "$passed" -ne "$expected" ]]; then
    echo "FAILED: expected $expected passing validations, got $passed" >&2
    exit 1
fi
echo "OK: $objects objects + the Secret template are valid (strict) for Kubernetes $versions"
