# shellcheck shell=bash
# Shared environment for scripts/test.sh and .ci/run. Source it; do not execute it.
#
# Builds go to a cache directory outside the clone, so that fresh clones (CI runs)
# reuse earlier builds:
#   FLAMINGOCK_CACHE_DIR  default ${XDG_CACHE_HOME:-$HOME/.cache}/flamingock-rust
#   CARGO_TARGET_DIR      default $FLAMINGOCK_CACHE_DIR/target
# Both can be overridden from the environment.

FLAMINGOCK_CACHE_DIR="${FLAMINGOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flamingock-rust}"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLAMINGOCK_CACHE_DIR/target}"
export FLAMINGOCK_CACHE_DIR CARGO_TARGET_DIR
mkdir -p "$FLAMINGOCK_CACHE_DIR"

# Root of the repository this file belongs to.
# shellcheck disable=SC2034  # used by the scripts that source this file
FLAMINGOCK_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
