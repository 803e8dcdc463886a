// Command parley is the Parley WebRTC server: WebSocket signaling, an SFU
// and an embedded TURN server in one binary.
//
//	parley [serve] [--config parley.yaml] [--section.key value ...]
//	parley token --room R --identity I [--name N] [--ttl 1h]
//	parley token --admin
//	parley rooms list|show|create|close ...
//	parley participants remove|mute|update ...
//	parley version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"time"

	"github.com/parley-rtc/parley/signaling"
)

var version = "dev"

func main() {
	os.Exit(realMain(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// serveGCPercent is the garbage collector's goal for the server when GOGC
// is not set: collect when the heap has grown by half since the last
// collection, not by the runtime's default 100%. Forwarding allocates
// nothing per packet, so collections are rare either way and the lower
// goal costs no measurable CPU, while a meeting server's resident memory
// drops by about a sixth (docs/performance.md). GOGC (and GOMEMLIMIT)
// override it as for any Go program.
const serveGCPercent = 50

// setGCDefault applies serveGCPercent unless GOGC is set, and returns the
// percent in effect.
func setGCDefault(env func(string) string) int {
	if env("GOGC") != "" {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int(s[0].Value.Uint64())
	}
	debug.SetGCPercent(serveGCPercent)
	return serveGCPercent
}

func realMain(args []string, env func(string) string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		cfg, err := loadConfig(args, env)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "parley: %v\n", err)
			return 2
		}
		// Before anything starts: the process may be replaced.
		restartWithQuietSysmon(stderr)
		setGCDefault(env)
		// SIGTERM drains (docs/api.md, "Draining"); SIGINT, or a second
		// signal, shuts down at once.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		drain := make(chan struct{})
		sigs := make(chan os.Signal, 2)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		go func() {
			draining := false
			for s := range sigs {
				if s == syscall.SIGTERM && !draining {
					draining = true
					close(drain)
					continue
				}
				cancel()
				return
			}
		}()
		log := newLogger(cfg)
		if cfg.RTC.AdaptiveProcs {
			// GOMAXPROCS is the process's: only the binary adapts it,
			// not a test process running several servers.
			pctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); adaptProcs(pctx, log) }()
			defer func() { stop(); <-done }()
		}
		if err := run(ctx, cfg, log, nil, drain); err != nil {
			fmt.Fprintf(stderr, "parley: %v\n", err)
			return 1
		}
		return 0
	case "token":
		return tokenCmd(args, env, stdout, stderr)
	case "rooms", "participants":
		return adminCmd(cmd, args, env, stdout, stderr)
	case "loadtest":
		return loadtestCmd(args, env, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "parley", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: parley [serve] [flags] | parley token --room R --identity I | parley token --admin\n"+
			"       parley rooms list|show|create|close ... | parley participants remove|mute|update ... | parley version\n"+
			"parley serve --help lists every setting; parley rooms --help the admin commands.")
		return 0
	}
	fmt.Fprintf(stderr, "parley: unknown command %q (serve, token, rooms, participants, version)\n", cmd)
	return 2
}

func tokenCmd(args []string, env func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	room := fs.String("room", "", "room name (required)")
	identity := fs.String("identity", "", "participant identity, unique in the room (required)")
	name := fs.String("name", "", "display name")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	grants := fs.String("grants", "publish,subscribe,data", "comma-separated: publish, subscribe, data, admin")
	adminTok := fs.Bool("admin", false, "an admin token for the admin API (docs/api.md): --room '*' --identity admin --grants admin unless given")
	key := fs.String("key", env("PARLEY_API_KEY"), "API key (env PARLEY_API_KEY; default: the first key, alphabetically, of --config or PARLEY_KEYS)")
	secret := fs.String("secret", env("PARLEY_API_SECRET"), "API secret (env PARLEY_API_SECRET)")
	configPath := fs.String("config", env("PARLEY_CONFIG"), "config file to take the key from")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *adminTok {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["room"] {
			*room = "*"
		}
		if !set["identity"] {
			*identity = "admin"
		}
		if !set["grants"] {
			*grants = "admin"
		}
	}
	if *room == "" || *identity == "" {
		fmt.Fprintln(stderr, "parley token: --room and --identity are required (or --admin)")
		return 2
	}
	if *key == "" || *secret == "" {
		k, sec, err := keyFromConfig(*configPath, *key, env)
		if err != nil {
			fmt.Fprintf(stderr, "parley token: %v\n", err)
			return 2
		}
		*key, *secret = k, sec
	}
	if *key == "" || *secret == "" {
		fmt.Fprintln(stderr, "parley token: no API key: pass --key and --secret (or PARLEY_API_KEY and PARLEY_API_SECRET), "+
			"or --config / PARLEY_KEYS with keys (a server in development mode mints its own tokens at /api/dev-token)")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintf(stderr, "parley token: --ttl %s must be positive\n", *ttl)
		return 2
	}
	g, err := parseGrants(*grants)
	if err != nil {
		fmt.Fprintf(stderr, "parley token: %v\n", err)
		return 2
	}
	tok, err := signaling.MintToken(*key, *secret, signaling.TokenSpec{Room: *room, Identity: *identity, Name: *name, Grants: g, TTL: *ttl})
	if err != nil {
		fmt.Fprintf(stderr, "parley token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// keyFromConfig finds the secret of API key want (or, when want is empty,
// of the first key in alphabetical order) in the config file and
// PARLEY_KEYS, the same way serve reads them.
func keyFromConfig(path, want string, env func(string) string) (key, secret string, err error) {
	c := defaults()
	if path != "" {
		if err := loadFile(&c, path); err != nil {
			return "", "", err
		}
	}
	if err := applyEnv(&c, env); err != nil {
		return "", "", err
	}
	if want != "" {
		if s, ok := c.Keys[want]; ok {
			return want, s, nil
		}
		if len(c.Keys) > 0 {
			return "", "", fmt.Errorf("API key %q is not configured (have %s)", want, strings.Join(sortedKeys(c.Keys), ", "))
		}
		return want, "", nil
	}
	if keys := sortedKeys(c.Keys); len(keys) > 0 {
		return keys[0], c.Keys[keys[0]], nil
	}
	return "", "", nil
}
