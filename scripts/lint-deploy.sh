#!/usr/bin/env bash
# Lint the Dockerfile (BuildKit's linter, the rules of docker build
# --check), the build context .dockerignore leaves, deploy/compose.yaml
# (compose-go's loader and schema) and deploy/k8s (strict k8s.io/api
# types) without Docker. Its own module: dependencies come through the Go
# module proxy on first run. With an empty build cache it takes about 3
# minutes on 2 cores (compiling BuildKit, compose-go and the relay), then
# about 5 seconds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/scripts/lint-deploy"
go run . "$root"
