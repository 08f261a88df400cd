#!/usr/bin/env bash
# Set up .venv for reward3d on a CPU machine (idempotent; re-running is quick).
# - torch is pinned to the CPU build first, so nothing pulls a multi-GB CUDA build.
# - depth-anything-3 declares heavy dependencies it does not need for inference: it goes in
#   with --no-deps; what it really needs is in the `models` extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check --upgrade pip
$PIP install -q --disable-pip-version-check "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[all]"
# Depth Anything 3 without its declared dependencies (open3d, torchvision, xformers, moviepy...:
# export and demo code, never imported by the network); what it needs is in the `models` extra.
$PIP install -q --disable-pip-version-check --no-deps "depth-anything-3==0.1.1"
echo "reward3d installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
