package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix begins every environment override.
const EnvPrefix = "SENGO_RELAY_"

// Load reads the YAML file at path over Default(), applies environment
// overrides from lookup (os.LookupEnv in production), reads *_file secrets
// and validates. The error lists every problem found.
//
// An override's name is EnvPrefix plus the key's path in upper case joined
// by "_": http.listen → SENGO_RELAY_HTTP_LISTEN, projects.main.token →
// SENGO_RELAY_PROJECTS_MAIN_TOKEN. Lists are comma-separated. Overrides
// apply to projects named in the file.
func Load(path string, lookup func(string) (string, bool)) (Config, error) {
	cfg := Default()
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if err := decode(raw, &cfg); err != nil {
		return Config{}, fmt.Errorf("config %s:\n%w", path, err)
	}
	var errs []error
	errs = append(errs, applyEnv(reflect.ValueOf(&cfg).Elem(), EnvPrefix[:len(EnvPrefix)-1], lookup)...)
	errs = append(errs, cfg.readSecretFiles()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config %s:\n%w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s:\n%w", path, err)
	}
	return cfg, nil
}

// decode parses YAML strictly: unknown keys are errors, and yaml.v3
// reports all of them at once.
func decode(raw []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// applyEnv walks the configuration and sets every leaf whose environment
// variable is present. Map entries are reached by their (upper-cased) keys.
func applyEnv(v reflect.Value, name string, lookup func(string) (string, bool)) []error {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if v.Addr().Type().Implements(textUnmarshaler) || v.Kind() != reflect.Struct && v.Kind() != reflect.Map {
		s, ok := lookup(name)
		if !ok {
			return nil
		}
		if err := setLeaf(v, s); err != nil {
			return []error{fmt.Errorf("%s: %v", name, err)}
		}
		return nil
	}
	var errs []error
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			errs = append(errs, applyEnv(v.Field(i), name+"_"+strings.ToUpper(tag), lookup)...)
		}
	case reflect.Map:
		if v.Type().Elem().Kind() != reflect.Pointer {
			return nil // map values are not addressable; such maps are file-only
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			envKey := strings.ToUpper(strings.ReplaceAll(k.String(), "-", "_"))
			errs = append(errs, applyEnv(v.MapIndex(k), name+"_"+envKey, lookup)...)
		}
	}
	return errs
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
			errs = append(errs, fmt.Errorf("%s_file: %w", key, err))
			return
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			errs = append(errs, fmt.Errorf("%s_file: %s is empty", key, path))
			return
		}
		*dst = Secret(s)
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
			errs = append(errs, fmt.Errorf("%s_file: %w", at, err))
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
