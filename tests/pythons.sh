#!/usr/bin/env bash
# `make pythons`: the unit suite with its neo-db CLI run under every Python 3.10-3.13 found on
# this machine (PATH, pyenv), not only the distro python3 that `make unit` uses. neo-db must
# work on Ubuntu 22.04 (3.10) to Debian 13 (3.13). Prints which ran and which are missing.
#   PYTHONS_TESTS   what to run (default: the session lifecycle, the gates, import, restore and the
#                   CLI: every command path, in a third of the unit suite's time; PYTHONS_TESTS=tests
#                   runs the whole unit suite under each interpreter)
#   PYTHONS_ALL=1   also rerun under the distro python3 (make unit already did)
#   PYTHONS_ALLOW_MISSING=1   a missing interpreter is reported, not a failure (by default it fails:
#                   an untested Python is not a pass)
set -euo pipefail
cd "$(dirname "$0")/.."
venv_python=${VENV:-.venv}/bin/python
system=/usr/bin/python3
read -r -a tests <<<"${PYTHONS_TESTS:-tests/test_session.py tests/test_gates.py tests/test_import.py tests/test_restore.py tests/test_cli.py tests/test_hostile.py}"

minor_of() { "$1" -c 'import sys; print(sys.version_info[1]) if sys.version_info[0] == 3 else None' 2>/dev/null || true; }
system_minor=$( [ -x "$system" ] && minor_of "$system" || true)

# neo-db needs only PyYAML beyond the stdlib: an interpreter without it gets the pure-Python
# part of the venv's copy on its PYTHONPATH (the distro package, python3-yaml, on a real host).
yaml_dir=$(mktemp -d)
trap 'rm -rf "$yaml_dir"' EXIT
cp -r "$("$venv_python" -c 'import os, yaml; print(os.path.dirname(yaml.__file__))')" "$yaml_dir/yaml"
find "$yaml_dir/yaml" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +

declare -a report
status=0
missing=0
for minor in 10 11 12 13; do
  exe=""
  for cand in "$system" "$(command -v "python3.$minor" || true)" $(ls -d "$HOME"/.pyenv/versions/3."$minor".*/bin/python3 2>/dev/null | sort -V); do
    [ -n "$cand" ] && [ -x "$cand" ] && [ "$(minor_of "$cand")" = "$minor" ] && { exe=$cand; break; }
  done
  if [ -z "$exe" ]; then
    report+=("  3.$minor  MISSING  (no python3.$minor on the PATH or in ~/.pyenv/versions)")
    missing=1
    [ "${PYTHONS_ALLOW_MISSING:-0}" = 1 ] || status=1
    continue
  fi
  version=$("$exe" -c 'import platform; print(platform.python_version())')
  if [ "$minor" = "$system_minor" ] && [ "$exe" = "$system" ] && [ "${PYTHONS_ALL:-0}" != 1 ]; then
    report+=("  3.$minor  ran      $exe ($version): the distro python3, in make unit")
    continue
  fi
  echo "==> the unit suite with neo-db under $exe ($version)"
  pp=""
  "$exe" -c 'import yaml' 2>/dev/null || pp=$yaml_dir
  start=$(date +%s)
  if NEO_DB_PYTHON=$exe PYTHONPATH=$pp "${VENV:-.venv}/bin/pytest" -m "not standin and not ansible and not vm" -q -p no:cacheprovider ${PYTEST_WORKERS:-} "${tests[@]}"; then
    report+=("  3.$minor  ran      $exe ($version): passed in $(( $(date +%s) - start )) s${pp:+ (PyYAML from the venv, pure Python)}")
  else
    report+=("  3.$minor  FAILED   $exe ($version)")
    status=1
  fi
done
echo
echo "neo-db under Python 3.10-3.13:"
printf '%s\n' "${report[@]}"
[ "$missing" = 0 ] || [ "${PYTHONS_ALLOW_MISSING:-0}" = 1 ] || echo "install the missing ones (pyenv install 3.1x), or PYTHONS_ALLOW_MISSING=1 to accept them missing"
exit "$status"
