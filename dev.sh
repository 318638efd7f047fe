#!/usr/bin/env bash
# The project's two entry points. Each makes (or reuses) its own virtual environment.
#   bash dev.sh demo    run the demo: a local token issuer + the FastAPI example on 127.0.0.1
#   bash dev.sh test    run the whole test suite (lint and type checks included)
#   bash dev.sh bench   run the benchmarks (not part of the tests; --quick, --only inprocess|e2e|cold)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

venv() {  # venv DIR EXTRA: create DIR and install the package with EXTRA, once per pyproject change
  local dir=$1 extra=$2 stamp
  stamp=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if [ ! -x "$dir/bin/python" ]; then
    "$PY" -m venv "$dir"
  fi
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp-$extra" ]; then
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q -e ".[$extra]"
    echo "$stamp-$extra" > "$dir/.stamp"
  fi
}

system_packages() {  # real Redis and a real browser for the tests (Debian packages)
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian packages) for the tests" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} missing and not installable here; those tests will be skipped" >&2
  fi
}

case "${1:-}" in
  demo)
    shift
    venv .venv-demo demo
    exec .venv-demo/bin/python examples/demo.py "$@"
    ;;
  test)
    shift
    system_packages
    venv .venv-test test
    .venv-test/bin/ruff check jwt_middleware examples tests
    .venv-test/bin/mypy
    # Branch coverage of the package, subprocesses included; the floor (pyproject.toml) applies
    # to a run of the whole suite, not to a run of a few tests.
    rm -f .coverage .coverage.*
    status=0
    .venv-test/bin/python -m coverage run -m pytest "$@" || status=$?
    .venv-test/bin/python -m coverage combine -q
    if [ $# -eq 0 ]; then
      if ! .venv-test/bin/python -m coverage report; then
        [ "$status" -ne 0 ] || status=2  # the tests passed; the coverage is under the floor
      fi
    else
      .venv-test/bin/python -m coverage report --fail-under=0
    fi
    exit "$status"
    ;;
  bench)
    shift
    venv .venv-bench "test,bench"
    if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      # wrk for the end-to-end part, which is skipped with a note if this fails
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null 2>&1 || true
    fi
    exec .venv-bench/bin/python bench/run.py "$@"
    ;;
  *)
    echo "usage: bash dev.sh demo|test|bench [args]" >&2
    exit 2
    ;;
esac
