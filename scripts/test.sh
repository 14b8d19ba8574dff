#!/usr/bin/env bash
# The project's one test command (README "Run the tests"; .ci/run calls it).
# Installs and starts the real databases the integration tests need, then
# runs the format check, clippy and every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh up
# services.sh writes the addresses of what it started (VECTORGATE_TEST_*_URL).
set -a
# shellcheck disable=SC1091
. target/services.env
set +a

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Tests named chaos_* kill and restart the shared database servers, so they
# run after every other test, one at a time.
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E 'not test(/^chaos_/)'
  echo "==> chaos tests (one at a time)"
  cargo nextest run --workspace --locked --no-fail-fast --test-threads 1 -E 'test(/^chaos_/)'
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast -- --skip chaos_
  echo "==> chaos tests (one at a time)"
  cargo test --workspace --locked --no-fail-fast -- chaos_ --test-threads 1
fi
