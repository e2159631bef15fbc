package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix begins every environment override.
const EnvPrefix = "SENGO_RELAY_"

// ConfigEnv names the configuration file when no --config flag is given.
const ConfigEnv = EnvPrefix + "CONFIG"

// Env is the process environment: os.Environ() through Environ.
type Env map[string]string

// Environ reads KEY=value pairs.
func Environ(kv []string) Env {
	e := Env{}
	for _, s := range kv {
		if k, v, ok := strings.Cut(s, "="); ok {
			e[k] = v
		}
	}
	return e
}

// Load reads the YAML file at path over Default(), applies environment
// overrides from env, reads *_file secrets and validates. The error lists
// every problem found, each by its dotted key path (http.listen) or its
// variable, with the nearest valid name when a name is unknown.
//
// An override's name is EnvPrefix plus the key's path in upper case joined
// by "_": http.listen → SENGO_RELAY_HTTP_LISTEN, projects.main.token →
// SENGO_RELAY_PROJECTS_MAIN_TOKEN. Lists are comma-separated. A project or
// endpoint the file does not list is added by its variables alone
// (SENGO_RELAY_PROJECTS_SHOP_API_KEY_FILE adds project "shop"). Every other
// SENGO_RELAY_ variable that names no key is an error: a typo must not
// silently turn a setting off.
func Load(path string, env Env) (Config, error) {
	cfg := Default()
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	errs := decode(raw, &cfg)
	inFile := maps.Clone(cfg.Projects)
	errs = append(errs, applyEnv(&cfg, env)...)
	errs = append(errs, cfg.readSecretFiles()...)
	errs = append(errs, envOnlyProjects(&cfg, inFile)...)
	if err := cfg.Validate(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	if len(errs) > 0 {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = "  " + e.Error()
		}
		noun := "problems"
		if len(errs) == 1 {
			noun = "problem"
		}
		return Config{}, fmt.Errorf("config %s: %d %s:\n%s", path, len(errs), noun, strings.Join(lines, "\n"))
	}
	return cfg, nil
}

// envOnlyProjects checks the projects variables added, which the file
// (inFile) does not have. Such a project may be a typo of another's name
// (MIAN for MAIN), which left the setting meant for that one unset: it
// needs its credentials, or confirm: false said outright, and its name
// may not be a file project's mistyped.
func envOnlyProjects(cfg *Config, inFile map[string]*Project) []error {
	var errs []error
	for _, name := range cfg.ProjectNames() {
		p := cfg.Projects[name]
		if inFile[name] != nil || p == nil {
			continue
		}
		if !p.HasCredentials() && p.Confirm != "false" {
			errs = append(errs, fmt.Errorf("projects.%s: added by variables (%sPROJECTS_%s_…) without api_key and token; a typo of another project's name? A project from variables alone needs its credentials, or %sPROJECTS_%s_CONFIRM=false to be unconfirmed", name, EnvPrefix, envName(name), EnvPrefix, envName(name)))
			continue
		}
		for other := range inFile {
			if slipOf(envName(name), envName(other)) {
				errs = append(errs, fmt.Errorf("projects.%s: added by variables (%sPROJECTS_%s_…); did you mean %s, in the file? (Its variables are %sPROJECTS_%s_…; to have both, add %s to the file.)", name, EnvPrefix, envName(name), other, EnvPrefix, envName(other), name))
			}
		}
	}
	return errs
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// decode parses YAML over cfg. Unknown keys are errors named by their path
// with a suggestion; type errors name their path too. Decoding goes on past
// each problem, so every one is reported at once.
func decode(raw []byte, cfg *Config) []error {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		msg := named.ReplaceAllString(err.Error(), "'…'")
		if strings.Contains(msg, "anchor") || strings.Contains(msg, "alias") {
			msg += " (a value written with * first is read as a YAML alias: quote it)"
		}
		return []error{errors.New(msg)}
	}
	if len(root.Content) == 0 {
		return nil
	}
	var errs []error
	paths := map[int]string{} // line → the key path written there
	checkKeys(root.Content[0], reflect.TypeFor[Config](), "", paths, &errs)
	if err := root.Decode(cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return append(errs, err)
		}
		for _, m := range te.Errors {
			errs = append(errs, errors.New(withPath(m, paths)))
		}
	}
	return errs
}

var (
	lineMsg = regexp.MustCompile(`^line (\d+): (.*)$`)
	// quoted is the value yaml.v3 quotes in a type error: its first
	// characters, which for a secret in the wrong place are the secret's.
	quoted = regexp.MustCompile("(cannot unmarshal !!\\w+) `.*` (into )")
	// named is what yaml.v3's parse errors quote: an alias's name, for
	// one ("unknown anchor 'S3cret…' referenced"), is a value written
	// unquoted with '*' first, such as a secret.
	named = regexp.MustCompile(`'[^\n]*'`)
)

// withPath turns yaml.v3's "line 3: cannot unmarshal !!str `abc` into
// int" into "http.max_in_flight (line 3): cannot unmarshal !!str into int":
// the value is named by its path, never shown.
func withPath(msg string, paths map[int]string) string {
	msg = quoted.ReplaceAllString(msg, "$1 $2")
	m := lineMsg.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	n, _ := strconv.Atoi(m[1])
	if p, ok := paths[n]; ok {
		return fmt.Sprintf("%s (line %d): %s", p, n, m[2])
	}
	return msg
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// leafType reports whether t is decoded as one value (a scalar, a list of
// scalars, or a type with its own decoding).
func leafType(t reflect.Type) bool {
	if t.Kind() == reflect.Struct {
		return reflect.PointerTo(t).Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(yamlUnmarshaler)
	}
	return t.Kind() != reflect.Map && (t.Kind() != reflect.Slice || t.Elem().Kind() != reflect.Struct)
}

// yamlFields maps a struct's YAML keys to its fields.
func yamlFields(t reflect.Type) (map[string]reflect.StructField, []string) {
	fields := map[string]reflect.StructField{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = f
		names = append(names, tag)
	}
	return fields, names
}

// ShownKey is what an error may show of a key: up to a ':' in it. In a
// YAML flow mapping ({…}) a key ends at ':' only when a blank follows, so
// "token:SECRET" is one key holding its value, and errors naming it
// printed the secret.
func ShownKey(k string) string {
	if i := strings.IndexByte(k, ':'); i >= 0 {
		return k[:i] + ":… (a key holding ':', not shown: a missing space after ':'?)"
	}
	return k
}

// checkKeys walks n as the YAML of a t, recording every key's path by line
// and reporting keys t does not have.
func checkKeys(n *yaml.Node, t reflect.Type, path string, paths map[int]string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode || leafType(t) {
		return
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" { // a merge key: its mapping's keys belong here
			checkKeys(v, t, path, paths, errs)
			continue
		}
		at := join(ShownKey(k.Value))
		paths[k.Line] = at
		if v.Line != k.Line {
			paths[v.Line] = at
		}
		switch t.Kind() {
		case reflect.Map:
			checkKeys(v, t.Elem(), at, paths, errs)
		case reflect.Struct:
			fields, names := yamlFields(t)
			f, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("%s (line %d): unknown key", at, k.Line)
				if s := nearest(k.Value, names); s != "" {
					msg += "; did you mean " + join(s) + "?"
				} else {
					msg += " (known here: " + strings.Join(names, ", ") + ")"
				}
				*errs = append(*errs, errors.New(msg))
				continue
			}
			checkKeys(v, f.Type, at, paths, errs)
		}
	}
}

// nearest returns the candidate closest to s by edit distance, if it is
// close enough to be a likely typo.
func nearest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	if bestD < 0 || bestD > max(2, len(s)/3) {
		return ""
	}
	return best
}

// slipOf reports whether a is b mistyped: two neighbouring letters
// swapped, or one letter added or dropped ("mian", "man", "maain" for
// "main"). One letter replaced is not a slip ("outlet2" beside "outlet1").
func slipOf(a, b string) bool {
	switch {
	case a == b:
		return false
	case len(a) == len(b):
		i := 0
		for i < len(a) && a[i] == b[i] {
			i++
		}
		return i+1 < len(a) && a[i] == b[i+1] && a[i+1] == b[i] && a[i+2:] == b[i+2:]
	case len(a) == len(b)+1:
		a, b = b, a
		fallthrough
	case len(a)+1 == len(b):
		i := 0
		for i < len(a) && a[i] == b[i] {
			i++
		}
		return a[i:] == b[i+1:]
	}
	return false
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// applyEnv sets every key whose variable env has, adds the projects and
// endpoints named only in env, and reports each SENGO_RELAY_ variable
// that names no key.
func applyEnv(cfg *Config, env Env) []error {
	var names []string
	for k := range env {
		if strings.HasPrefix(k, EnvPrefix) && k != ConfigEnv {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var errs []error
	addEntries(reflect.ValueOf(&cfg.Projects).Elem(), EnvPrefix+"PROJECTS_", names, func() reflect.Value { return reflect.ValueOf(&Project{}) })
	addEntries(reflect.ValueOf(&cfg.Endpoints).Elem(), EnvPrefix+"ENDPOINTS_", names, func() reflect.Value { e := defaultEndpoint(); return reflect.ValueOf(&e) })
	known := map[string]bool{}
	errs = append(errs, setFromEnv(reflect.ValueOf(cfg).Elem(), EnvPrefix[:len(EnvPrefix)-1], env, known)...)
	var all []string
	for k := range known {
		all = append(all, k)
	}
	sort.Strings(all)
	for _, k := range names {
		if known[k] {
			continue
		}
		msg := k + ": no such setting"
		if s := nearest(k, all); s != "" {
			msg += "; did you mean " + s + "?"
		}
		errs = append(errs, errors.New(msg))
	}
	return errs
}

// addEntries creates, in the map m of *struct, every entry a variable
// under prefix names that m lacks: the variable's tail must end in one of
// the entry type's keys (SHOP_API_KEY_FILE → entry "shop", key
// api_key_file). An entry the file has wins a tie, so MAIN_X_TOKEN stays
// in "main_x" only when no "main" with an X_TOKEN key exists.
func addEntries(m reflect.Value, prefix string, names []string, fresh func() reflect.Value) {
	leaves := envLeaves(m.Type().Elem().Elem(), "")
	slices.SortFunc(leaves, func(a, b string) int { return len(b) - len(a) }) // longest first
	for _, name := range names {
		tail, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		if existingEntry(m, tail, leaves) {
			continue
		}
		for _, leaf := range leaves {
			entry, ok := strings.CutSuffix(tail, "_"+leaf)
			if !ok || entry == "" {
				continue
			}
			key := strings.ToLower(entry)
			if m.IsNil() {
				m.Set(reflect.MakeMap(m.Type()))
			}
			if !m.MapIndex(reflect.ValueOf(key)).IsValid() {
				m.SetMapIndex(reflect.ValueOf(key), fresh())
			}
			break
		}
	}
}

func existingEntry(m reflect.Value, tail string, leaves []string) bool {
	for _, k := range m.MapKeys() {
		rest, ok := strings.CutPrefix(tail, envName(k.String())+"_")
		if ok && slices.Contains(leaves, rest) {
			return true
		}
	}
	return false
}

// envLeaves lists the variable tails of every settable key of t
// (API_KEY, RETRY_SCHEDULE, …).
func envLeaves(t reflect.Type, prefix string) []string {
	fields, names := yamlFields(t)
	var out []string
	for _, n := range names {
		f := fields[n]
		name := prefix + strings.ToUpper(n)
		switch {
		case leafType(f.Type) && f.Type.Kind() != reflect.Map:
			out = append(out, name)
		case f.Type.Kind() == reflect.Struct:
			out = append(out, envLeaves(f.Type, name+"_")...)
		}
	}
	return out
}

func envName(key string) string { return strings.ToUpper(strings.ReplaceAll(key, "-", "_")) }

// setFromEnv walks v and sets every leaf whose variable is present,
// recording each leaf's variable name in known.
func setFromEnv(v reflect.Value, name string, env Env, known map[string]bool) []error {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if leafType(v.Type()) {
		known[name] = true
		s, ok := env[name]
		if !ok {
			return nil
		}
		if strings.TrimSpace(s) == "" && guardsAccess(name, v.Type()) {
			return []error{fmt.Errorf("%s: empty; unset it instead (an empty value would remove what the file sets: Compose fills in an unset ${VAR} so)", name)}
		}
		if err := setLeaf(v, s); err != nil {
			return []error{fmt.Errorf("%s: %v", name, err)}
		}
		return nil
	}
	var errs []error
	switch v.Kind() {
	case reflect.Struct:
		fields, names := yamlFields(v.Type())
		for _, n := range names {
			errs = append(errs, setFromEnv(v.FieldByIndex(fields[n].Index), name+"_"+strings.ToUpper(n), env, known)...)
		}
	case reflect.Map:
		if v.Type().Elem().Kind() != reflect.Pointer {
			return nil // map values are not addressable; such maps are file-only
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			errs = append(errs, setFromEnv(v.MapIndex(k), name+"_"+envName(k.String()), env, known)...)
		}
	}
	return errs
}

// guardsAccess reports whether the variable name, of type t, holds a
// secret, names a file of one, lists the addresses allowed in or the host
// names served, or sets a project's signature mode: set empty, it would
// silently remove that protection (an empty signature reads as optional,
// an empty list as any).
func guardsAccess(name string, t reflect.Type) bool {
	secret := reflect.TypeFor[Secret]()
	return t == secret || t.Kind() == reflect.Slice && t.Elem() == secret ||
		strings.HasSuffix(name, "_FILE") || strings.HasSuffix(name, "_ALLOWED_IPS") ||
		strings.HasSuffix(name, "_SIGNATURE") || name == EnvPrefix+"ADMIN_HOSTS"
}

func setLeaf(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		v.SetFloat(f)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Slice:
		items := reflect.MakeSlice(v.Type(), 0, 4)
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it == "" {
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := setLeaf(elem, it); err != nil {
				return err
			}
			items = reflect.Append(items, elem)
		}
		v.Set(items)
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// withoutPath is a file's read error without the path the error names
// ("cannot read the file: no such file or directory"): a *_file key is
// sometimes given the secret itself, which the error would repeat.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot read the file it names (not shown: it may be the secret itself): %w", pe.Err)
	}
	return errors.New("cannot read the file it names")
}

// readSecretFiles fills each secret from its *_file key.
func (c *Config) readSecretFiles() []error {
	var errs []error
	read := func(key, path string, dst *Secret) {
		if path == "" {
			return
		}
		if dst.Set() {
			errs = append(errs, fmt.Errorf("%s and %s_file: set one, not both", key, key))
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_file: %w", key, withoutPath(err)))
			return
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			errs = append(errs, fmt.Errorf("%s_file: %s is empty", key, path))
			return
		}
		*dst = Secret(s)
	}
	// nats.creds_file is read by nats.go as it connects, and its error
	// names the path, which is sometimes the credentials themselves: it
	// must be readable now, and is named without its value.
	if c.NATS.CredsFile != "" {
		if _, err := os.ReadFile(c.NATS.CredsFile); err != nil {
			errs = append(errs, fmt.Errorf("nats.creds_file: %w", withoutPath(err)))
		}
	}
	read("nats.token", c.NATS.TokenFile, &c.NATS.Token)
	read("admin.token", c.Admin.TokenFile, &c.Admin.Token)
	read("metrics.token", c.Metrics.TokenFile, &c.Metrics.Token)
	read("nats.embedded.subscriber.password", c.NATS.Embedded.Subscriber.PasswordFile, &c.NATS.Embedded.Subscriber.Password)
	for _, name := range sortedKeys(c.Endpoints) {
		e := c.Endpoints[name]
		if e == nil || e.SecretsFile == "" {
			continue
		}
		at := "endpoints." + name + ".secrets"
		if len(e.Secrets) > 0 {
			errs = append(errs, fmt.Errorf("%s and %s_file: set one, not both", at, at))
			continue
		}
		b, err := os.ReadFile(e.SecretsFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_file: %w", at, withoutPath(err)))
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				e.Secrets = append(e.Secrets, Secret(line))
			}
		}
	}
	for _, name := range c.ProjectNames() {
		p := c.Projects[name]
		if p == nil {
			continue
		}
		at := "projects." + name
		read(at+".api_key", p.APIKeyFile, &p.APIKey)
		read(at+".token", p.TokenFile, &p.Token)
		read(at+".callback_token", p.CallbackTokenFile, &p.CallbackToken)
	}
	return errs
}
