#!/usr/bin/env bash
# Regenerate migrations/versions/0001_initial.py from the models, against a scratch database.
# Used while the project has never been deployed: one initial migration, kept in step with the
# models. Once a release is out, new changes get new revisions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
db="caas_regen_$$"
admin="postgresql://postgres@127.0.0.1:5432/postgres"
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
rm -f migrations/versions/0001_initial.py
CAAS_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/$db" \
  .venv/bin/alembic revision --autogenerate --rev-id 0001 -m initial >/dev/null
.venv/bin/ruff format -q migrations/versions/0001_initial.py
.venv/bin/ruff check -q --fix migrations/versions/0001_initial.py || true
echo "migrations/versions/0001_initial.py regenerated"
