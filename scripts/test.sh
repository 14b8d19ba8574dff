#!/usr/bin/env bash
# The project's one test command (README "Run the tests"; .ci/run calls it).
# Installs and starts the real databases the integration tests need, then
# runs the format check, clippy and every test in the workspace.
#
# VECTORGATE_SERVICES picks where the databases come from:
#   native (default, and what CI runs): scripts/services.sh up installs and
#     starts them on this machine, and target/services.env gives their URLs.
#   external: they already run elsewhere (docker-compose.test.yml, say);
#     nothing is installed or started, the VECTORGATE_TEST_*_URL variables
#     already set are used and must answer, and the chaos tests are skipped
#     (they SIGKILL and restart the servers services.sh started).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES_MODE=${VECTORGATE_SERVICES:-native}

# Fails unless every VECTORGATE_TEST_*_URL that is set accepts a TCP
# connection; one left unset skips (or, under CI=true, fails) its tests.
check_external_services() {
  local var url hostport host port set=0 default_port
  for var in VECTORGATE_TEST_PG_URL VECTORGATE_TEST_OCEANBASE_URL VECTORGATE_TEST_MILVUS_URL; do
    url=${!var:-}
    if [[ -z $url ]]; then
      echo "==> external services: $var is not set; the tests that need it are skipped"
      continue
    fi
    set=1
    case $url in
      postgres://* | postgresql://*) default_port=5432 ;;
      mysql://*) default_port=3306 ;;
      https://*) default_port=443 ;;
      *) default_port=80 ;;
    esac
    hostport=${url#*://}
    hostport=${hostport%%/*}
    hostport=${hostport%%\?*}
    hostport=${hostport##*@}
    if [[ $hostport == *:* ]]; then
      host=${hostport%:*}
      port=${hostport##*:}
    else
      host=$hostport
      port=$default_port
    fi
    # shellcheck disable=SC2016 # $1 and $2 belong to the inner shell
    if ! timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null; then
      echo "==> external services: $var=$url: nothing answers on $host:$port" >&2
      exit 1
    fi
    echo "==> external services: $var answers on $host:$port"
  done
  if ((set == 0)); then
    echo "VECTORGATE_SERVICES=external, but no VECTORGATE_TEST_*_URL is set (see docker-compose.test.yml)" >&2
    exit 1
  fi
}

case $SERVICES_MODE in
  native)
    bash scripts/services.sh up
    # services.sh writes the addresses of what it started (VECTORGATE_TEST_*_URL).
    set -a
    # shellcheck disable=SC1091
    . target/services.env
    set +a
    ;;
  external)
    check_external_services
    ;;
  *)
    echo "VECTORGATE_SERVICES must be native (default) or external, not '$SERVICES_MODE'" >&2
    exit 2
    ;;
esac

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Tests named chaos_* kill and restart the shared database servers, so they
# run after every other test, one at a time.
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast -E 'not test(/^chaos_/)'
  if [[ $SERVICES_MODE == native ]]; then
    echo "==> chaos tests (one at a time)"
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 1 -E 'test(/^chaos_/)'
  fi
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast -- --skip chaos_
  if [[ $SERVICES_MODE == native ]]; then
    echo "==> chaos tests (one at a time)"
    cargo test --workspace --locked --no-fail-fast -- chaos_ --test-threads 1
  fi
fi
if [[ $SERVICES_MODE != native ]]; then
  echo "==> chaos tests SKIPPED (VECTORGATE_SERVICES=$SERVICES_MODE: they kill and restart natively started servers)"
fi
