#!/usr/bin/env bash
# Rewrite docker/constraints.txt from the virtual environment CI tests with (default .venv),
# so that the images install the very versions the test suite passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
{
  echo "# Pinned versions for the images (pip --constraint): the versions CI tests with."
  echo "# Regenerate from the CI virtual environment: bash docker/freeze-constraints.sh"
  echo "# torch is pinned by each Dockerfile's TORCH_VERSION (CPU and CUDA builds differ)."
  "$python" -m pip freeze --exclude-editable | grep -v -i -E "^(torch|reward3d)=="
} > docker/constraints.txt
echo "wrote docker/constraints.txt ($(grep -c '==' docker/constraints.txt) pins)"
