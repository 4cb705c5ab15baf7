#!/usr/bin/env bash
# Mutation testing of the verifier and the CP-SAT constraint functions (not in CI: about 3 minutes
# for the verifier's ~620 mutants; the model's ~280 take hours here, since each is checked by tests
# that solve campaigns — pass mutant names to check a few). Each mutant — an operator, constant or condition changed in
# src/ftplan/verify.py or src/ftplan/solver/model.py — must make some test fail. Two phases, each
# with the tests that exercise that file (the [tool.mutmut] block of pyproject.toml is rewritten
# for the run and restored after):
#   benchmarks/mutation.sh verify     # verify.py against the verifier tests and the bad-input corpus
#   benchmarks/mutation.sh model      # solver/model.py against the planner tests
#   benchmarks/mutation.sh model 'ftplan.solver.model.x__energy*'   # only these mutants
# Survivors are listed at the end; `mutmut show NAME` prints one's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
phase="${1:-verify}"
shift || true
case "$phase" in
  verify) target="src/ftplan/verify.py"
          tests='"tests/test_verifier_rules.py", "tests/test_verifier.py", "tests/test_bad_inputs.py"' ;;
  model) target="src/ftplan/solver/model.py"
         tests='"tests/test_planner.py", "tests/test_reliability.py", "tests/test_verifier.py"' ;;
  *) echo "usage: benchmarks/mutation.sh verify|model" >&2; exit 2 ;;
esac
python -m pip install --quiet "mutmut==3.8.1"
cp pyproject.toml .pyproject.toml.mutation
trap 'mv .pyproject.toml.mutation pyproject.toml' EXIT
python - "$target" "$tests" <<'PY'
import re, sys
text = open("pyproject.toml").read()
block = (f'[tool.mutmut]\nsource_paths = ["src"]\nonly_mutate = ["{sys.argv[1]}"]\n'
         'also_copy = ["catalogs", "scenarios", "benchmarks", "README.md"]\n'
         f"pytest_add_cli_args_test_selection = [{sys.argv[2]}]\n")
open("pyproject.toml", "w").write(re.sub(r"\[tool\.mutmut\].*", block, text, flags=re.S))
PY
rm -rf mutants
mutmut run "$@" || true
echo
echo "survivors of $target (mutmut show NAME for the diff):"
mutmut results | grep -v "not checked" || echo "none"
