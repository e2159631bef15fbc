// Command lint-deploy checks the Dockerfile with BuildKit's own linter (the
// rules of `docker build --check`) and deploy/compose.yaml with compose-go
// (the loader and JSON schema of `docker compose config`), without Docker,
// and decodes every Kubernetes manifest of deploy/k8s strictly into the
// official API types (an unknown or misplaced field is an error).
// It is its own module so the relay's go.mod does not carry their
// dependencies. Run from the repository root: scripts/lint-deploy.sh.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	problems := lintDockerfile(filepath.Join(root, "Dockerfile"))
	problems += lintCompose(filepath.Join(root, "deploy", "compose.yaml"))
	for _, f := range []string{"nats.yaml", "relay.yaml"} {
		problems += lintKubernetes(filepath.Join(root, "deploy", "k8s", f))
	}
	if problems > 0 {
		fmt.Printf("lint-deploy: %d problem(s)\n", problems)
		os.Exit(1)
	}
	fmt.Println("lint-deploy: Dockerfile, deploy/compose.yaml and deploy/k8s ok")
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

// kinds are the manifests' types, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/Ingress":  func() any { return &networkingv1.Ingress{} },
}

func lintKubernetes(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	n := 0
	for i, doc := range strings.Split(string(b), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			fmt.Printf("%s: document %d: %v\n", path, i+1, err)
			n++
			continue
		}
		mk, ok := kinds[head.APIVersion+"/"+head.Kind]
		if !ok {
			fmt.Printf("%s: document %d: %s %s is not a kind this lint knows\n", path, i+1, head.APIVersion, head.Kind)
			n++
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), mk()); err != nil {
			fmt.Printf("%s: document %d (%s): %v\n", path, i+1, head.Kind, err)
			n++
		}
	}
	return n
}
