#!/usr/bin/env bash
# Installs the non-libpq drivers that crates/pgbastion/tests/drivers.rs runs (asyncpg, psycopg,
# node-postgres) into this folder: Python packages under .deps/python, npm packages under
# node_modules. Needs python3 with pip, and node with npm.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --break-system-packages \
    --target .deps/python --upgrade -r requirements.txt
npm ci --silent --no-audit --no-fund
