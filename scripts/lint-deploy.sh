#!/usr/bin/env bash
# Lint the Dockerfile (BuildKit's linter) and deploy/compose.yaml
# (compose-go's loader and schema) without Docker. Its own module:
# dependencies come through the Go module proxy on first run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/scripts/lint-deploy"
go run . "$root"
