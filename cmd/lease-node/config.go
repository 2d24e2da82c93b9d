package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// profiles are presets for the server's lease defaults and limits. They
// sit between the built-in defaults and the config file: a profile value
// applies only where the file, the environment and the flags say nothing.
var profiles = map[string]map[string]string{
	"production": {
		"default-lease-duration": "30s",
		"default-grace-period":   "15s",
		"min-lease-duration":     "1s",
		"max-lease-duration":     "5m",
		"max-grace-period":       "1m",
		"expiry-batch-size":      "5000",
	},
	"test": {
		"default-lease-duration": "15s",
		"default-grace-period":   "5s",
		"min-lease-duration":     "100ms",
		"max-lease-duration":     "2m",
		"max-grace-period":       "30s",
		"expiry-batch-size":      "5000",
	},
	"development": {
		"default-lease-duration": "60s",
		"default-grace-period":   "30s",
		"min-lease-duration":     "10ms",
		"max-lease-duration":     "24h",
		"max-grace-period":       "1h",
		"expiry-batch-size":      "5000",
	},
}

// cliOnly are flags that ask for something other than a running node;
// the environment and config files cannot set them.
var cliOnly = map[string]bool{"version": true}

// layer applies values to flags not already set by a stronger source, and
// records the flags it set. source names it in error messages.
func layer(fs *flag.FlagSet, set map[string]string, values map[string]string, source string) error {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if fs.Lookup(k) == nil {
			return fmt.Errorf("%s: unknown setting %q", source, k)
		}
		if cliOnly[k] {
			return fmt.Errorf("%s: %q is a command-line flag only", source, k)
		}
		if _, done := set[k]; done {
			continue
		}
		if err := fs.Set(k, values[k]); err != nil {
			return fmt.Errorf("%s: %s: %v", source, k, err)
		}
		set[k] = source
	}
	return nil
}

// envValues reads LEASE_NODE_<FLAG> for every flag.
func envValues(fs *flag.FlagSet) map[string]string {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if cliOnly[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			out[f.Name] = v
		}
	})
	return out
}

// notSettings are LEASE_NODE_* variables that are known not to be settings:
// scripts/cluster.sh passes extra flags in LEASE_NODE_ARGS.
var notSettings = map[string]bool{envPrefix + "ARGS": true}

// unknownEnv returns the names of the LEASE_NODE_* variables in environ
// that set no flag, sorted. A command-line-only flag's variable counts as
// unknown too: it sets nothing.
func unknownEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if !cliOnly[f.Name] {
			known[envName(f.Name)] = true
		}
	})
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) && !known[name] && !notSettings[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// fileValues reads a YAML config file whose keys are flag names.
func fileValues(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %v", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch x := v.(type) {
		case string:
			out[k] = x
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case float64:
			b, _ := json.Marshal(x) // integers without an exponent
			out[k] = string(b)
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out, nil
}

// printConfig writes the effective settings as YAML, each with where it
// came from.
func printConfig(w io.Writer, fs *flag.FlagSet, set map[string]string) {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "print-config" && f.Name != "config" && !cliOnly[f.Name] {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, n := range names {
		src := set[n]
		if src == "" {
			src = "default"
		}
		v := fs.Lookup(n).Value.String()
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "%s: %s  # %s\n", n, b, src)
	}
}
