#!/usr/bin/env bash
# Makes .ci-venv: a Python with the readers tests/interop_readers.rs checks distill's outputs with
# (pyarrow, pandas, polars, duckdb, datasets, huggingface_hub, pyyaml; no torch). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(pyarrow pandas polars duckdb datasets huggingface_hub pyyaml)
if [ -x .ci-venv/bin/python ] && .ci-venv/bin/python -c \
    "import pyarrow, pandas, polars, duckdb, datasets, huggingface_hub, yaml" 2>/dev/null; then
    exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv
fi
rm -rf .ci-venv
python3 -m venv .ci-venv
.ci-venv/bin/pip install -q --disable-pip-version-check "${PACKAGES[@]}"
