// Command lint-deploy checks the Dockerfile with BuildKit's own linter (the
// rules of `docker build --check`) and deploy/compose.yaml with compose-go
// (the loader and JSON schema of `docker compose config`), without Docker.
// It is its own module so the relay's go.mod does not carry their
// dependencies. Run from the repository root: scripts/lint-deploy.sh.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	problems := lintDockerfile(filepath.Join(root, "Dockerfile"))
	problems += lintCompose(filepath.Join(root, "deploy", "compose.yaml"))
	if problems > 0 {
		fmt.Printf("lint-deploy: %d problem(s)\n", problems)
		os.Exit(1)
	}
	fmt.Println("lint-deploy: Dockerfile and deploy/compose.yaml ok")
}

func lintDockerfile(path string) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		fmt.Printf("%s: %v\n", path, err)
		return 1
	}
	n := len(res.Warnings)
	for _, w := range res.Warnings {
		fmt.Printf("%s: %s\n", path, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, url, msg string, loc []parser.Range) {
		n++
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		fmt.Printf("%s:%d: %s: %s (%s)\n", path, line, rule, msg, url)
	}})
	if _, _, err := instructions.Parse(res.AST, lint); err != nil {
		fmt.Printf("%s: %v\n", path, err)
		n++
	}
	return n
}

func lintCompose(path string) int {
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithName("sengo-relay"))
	if err != nil {
		fmt.Printf("%s: %v\n", path, err)
		return 1
	}
	if _, err := opts.LoadProject(context.Background()); err != nil {
		fmt.Printf("%s: %v\n", path, err)
		return 1
	}
	return 0
}
