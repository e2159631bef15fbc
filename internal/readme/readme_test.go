package readme

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sengo-relay/sengo-relay/internal/fixtures"
	"github.com/sengo-relay/sengo-relay/internal/syncbuf"
)

// block is one annotated ```sh block of the README.
type block struct {
	line    int // of the fence
	section string
	mode    string // run, background or skip
	ready   string // background: an address that accepts connections once it is up
	wait    string // background: text it prints once it is up
	expect  string // text the output must contain
	reason  string // skip
	code    string
}

var (
	annotation = regexp.MustCompile(`^<!-- readme: (run|background|skip)\b(.*?)\s*-->$`)
	option     = regexp.MustCompile(`(ready)=(\S+)|(expect|wait)="([^"]*)"`)
)

// parse reads the README's shell blocks; every one must be annotated.
func parse(readme string) ([]block, []string) {
	var blocks []block
	var problems []string
	lines := strings.Split(readme, "\n")
	section := ""
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "## ") {
			section = strings.TrimPrefix(l, "## ")
		}
		if l == "```bash" || l == "```shell" || l == "```console" {
			problems = append(problems, fmt.Sprintf("line %d: write shell blocks as ```sh", i+1))
		}
		if l != "```sh" {
			continue
		}
		b := block{line: i + 1, section: section}
		var m []string
		if i > 0 {
			m = annotation.FindStringSubmatch(lines[i-1])
		}
		if m == nil {
			problems = append(problems, fmt.Sprintf("line %d: a ```sh block without a <!-- readme: run|background|skip … --> line before it", i+1))
		} else {
			b.mode = m[1]
			if b.mode == "skip" {
				b.reason = strings.TrimSpace(m[2])
				if b.reason == "" {
					problems = append(problems, fmt.Sprintf("line %d: skip needs a reason", i))
				}
			}
			for _, o := range option.FindAllStringSubmatch(m[2], -1) {
				switch {
				case o[1] == "ready":
					b.ready = o[2]
				case o[3] == "wait":
					b.wait = o[4]
				case b.mode != "skip":
					b.expect = o[4]
				}
			}
		}
		var code []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			code = append(code, lines[i])
		}
		b.code = strings.Join(code, "\n")
		blocks = append(blocks, b)
	}
	return blocks, problems
}

func repoRoot() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..")
}

// Every shell block is annotated, so none can rot unchecked.
func TestEveryShellBlockIsAnnotated(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, problems := parse(string(b))
	for _, p := range problems {
		t.Error("README.md " + p)
	}
	run := 0
	for _, bl := range blocks {
		if bl.mode != "skip" {
			run++
		}
	}
	if run < 10 {
		t.Errorf("only %d of %d blocks run", run, len(blocks))
	}
}

// The README's commands, run as written against the relay and the
// sandbox they start, in a copy of the repository.
func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the README end to end (about a minute); not with -short")
	}
	for _, tool := range []string{"bash", "curl", "openssl", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the README's commands", tool)
		}
	}
	// The README's commands use the default ports; a relay already running
	// on this machine would answer instead.
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:4222", "127.0.0.1:8090", "127.0.0.1:9000", "127.0.0.1:9464"} {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is in use: the README's commands need it", addr)
			}
			t.Skipf("%s is in use (a relay running?): the README's commands need the default ports", addr)
		}
	}
	root := repoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, problems := parse(string(raw))
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "\n"))
	}

	work := copyRepo(t, root)
	bin, home := t.TempDir(), t.TempDir()
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + home, "GOBIN=" + bin, "LANG=C.UTF-8"}
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN"} {
		out, _ := exec.Command("go", "env", k).Output()
		env = append(env, k+"="+strings.TrimSpace(string(out)))
	}

	var running []*proc
	endSection := func(section string) {
		for _, p := range running {
			if p.b.expect != "" {
				deadline := time.Now().Add(60 * time.Second)
				for !strings.Contains(p.out.String(), p.b.expect) && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				if !strings.Contains(p.out.String(), p.b.expect) {
					t.Errorf("README.md line %d (%s): the background block never printed %q:\n%s\noutput:\n%s", p.b.line, section, p.b.expect, p.b.code, p.out.String())
				}
			}
		}
		for _, p := range running {
			p.stop(t)
		}
		running = nil
	}
	section := ""
	for _, b := range blocks {
		if b.section != section {
			endSection(section)
			if t.Failed() {
				return
			}
			section = b.section
		}
		switch b.mode {
		case "skip":
			t.Logf("README.md line %d skipped: %s", b.line, b.reason)
		case "run":
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", b.code)
			cmd.Dir, cmd.Env = work, env
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil || !bytes.Contains(out, []byte(b.expect)) {
				endSection(section)
				t.Fatalf("README.md line %d (%s): %v\n%s\noutput:\n%s\nwant in the output: %q", b.line, section, err, b.code, out, b.expect)
			}
			t.Logf("README.md line %d ran", b.line)
		case "background":
			p := start(t, b, work, env)
			running = append(running, p)
			if b.ready != "" || b.wait != "" {
				if err := p.waitReady(3 * time.Minute); err != nil {
					endSection(section)
					t.Fatalf("README.md line %d (%s): %v\n%s\noutput:\n%s", b.line, section, err, b.code, p.out.String())
				}
			}
			t.Logf("README.md line %d started", b.line)
		}
	}
	endSection(section)
}

// copyRepo copies the repository's files (tracked, and new ones not
// ignored) into a temp dir: a clean clone, with the working copy's edits,
// except config.yaml, which is taken as committed: the README's commands
// must not depend on a user's edits of it.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := t.TempDir()
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted in the working copy
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if f == "config.yaml" {
			if b, err = fixtures.CommittedConfig(); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// proc is a background block: a terminal left running.
type proc struct {
	b    block
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
}

func start(t *testing.T, b block, dir string, env []string) *proc {
	t.Helper()
	p := &proc{b: b, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("bash", "-e", "-o", "pipefail", "-c", b.code)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitReady waits for the block's port to accept connections, or for its
// wait text.
func (p *proc) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready")
		default:
		}
		if p.b.wait != "" && strings.Contains(p.out.String(), p.b.wait) {
			return nil
		}
		if p.b.ready != "" {
			if c, err := net.DialTimeout("tcp", p.b.ready, 200*time.Millisecond); err == nil {
				c.Close()
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s", limit)
}

// stop sends Ctrl-C to the block's process group, as a user closing the
// terminal would, then kills what is left after 30 seconds.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("README.md line %d did not stop on Ctrl-C", p.b.line)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}
