package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-rtc/parley/rooms"
	"github.com/parley-rtc/parley/signaling"
)

const adminUsage = `usage:
  parley rooms list
  parley rooms show ROOM
  parley rooms create ROOM [--max-participants N] [--empty-timeout 5m]
  parley rooms close ROOM
  parley participants remove ROOM IDENTITY
  parley participants mute ROOM IDENTITY TRACK_SID [--unmute]
  parley participants update ROOM IDENTITY [--name N] [--metadata JSON] [--grants publish,subscribe,data]
common flags (before or after the arguments):
  --url URL        the server (env PARLEY_URL, default http://localhost:7880)
  --token T        an admin token (env PARLEY_ADMIN_TOKEN); without it one is minted from
                   --key/--secret, PARLEY_API_KEY/PARLEY_API_SECRET, --config or PARLEY_KEYS,
                   or, from a server in development mode, fetched from /api/dev-admin-token`

// adminCmd runs parley rooms ... and parley participants ...: each calls
// the admin API (docs/api.md).
func adminCmd(group string, args []string, env func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley "+group, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	base := fs.String("url", or(env("PARLEY_URL"), "http://localhost:7880"), "")
	token := fs.String("token", env("PARLEY_ADMIN_TOKEN"), "")
	key := fs.String("key", env("PARLEY_API_KEY"), "")
	secret := fs.String("secret", env("PARLEY_API_SECRET"), "")
	configPath := fs.String("config", env("PARLEY_CONFIG"), "")
	maxParts := fs.Int("max-participants", 0, "")
	emptyTimeout := fs.Duration("empty-timeout", 5*time.Minute, "")
	unmute := fs.Bool("unmute", false, "")
	name := fs.String("name", "", "")
	metadata := fs.String("metadata", "", "")
	grants := fs.String("grants", "", "")
	// Flags may come before or after the positional arguments.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stdout, adminUsage)
				return 0
			}
			fmt.Fprintf(stderr, "parley %s: %v\n%s\n", group, err, adminUsage)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	usage := func() int { fmt.Fprintln(stderr, adminUsage); return 2 }
	if len(pos) == 0 {
		return usage()
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		fmt.Fprintf(stderr, "parley %s: --url %q is not http(s)://host:port\n", group, *base)
		return 2
	}
	c := &apiClient{base: strings.TrimRight(*base, "/")}
	c.token, err = adminToken(c.base, *token, *key, *secret, *configPath, env)
	if err != nil {
		fmt.Fprintf(stderr, "parley %s: %v\n", group, err)
		return 2
	}
	esc := url.PathEscape
	var out any
	switch cmd := group + " " + pos[0]; {
	case cmd == "rooms list" && len(pos) == 1:
		var list struct{ Rooms []rooms.RoomDetails }
		if err = c.do("GET", "/api/rooms", nil, &list); err == nil {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROOM\tPARTICIPANTS\tTRACKS\tMAX\tEMPTY TIMEOUT\tSTARTED")
			for _, r := range list.Rooms {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%ds\t%s\n", r.Name, r.NumParticipants, r.NumPublishedTracks, r.MaxParticipants,
					r.EmptyTimeoutSeconds, time.UnixMilli(r.CreatedAt).Format(time.RFC3339))
			}
			_ = tw.Flush()
			return 0
		}
	case cmd == "rooms show" && len(pos) == 2:
		err = c.do("GET", "/api/rooms/"+esc(pos[1]), nil, &out)
	case cmd == "rooms create" && len(pos) == 2:
		err = c.do("POST", "/api/rooms", map[string]any{"name": pos[1], "max_participants": *maxParts,
			"empty_timeout_seconds": int64(*emptyTimeout / time.Second)}, &out)
	case cmd == "rooms close" && len(pos) == 2:
		err = c.do("DELETE", "/api/rooms/"+esc(pos[1]), nil, nil)
	case cmd == "participants remove" && len(pos) == 3:
		err = c.do("DELETE", "/api/rooms/"+esc(pos[1])+"/participants/"+esc(pos[2]), nil, nil)
	case cmd == "participants mute" && len(pos) == 4:
		err = c.do("POST", "/api/rooms/"+esc(pos[1])+"/participants/"+esc(pos[2])+"/tracks/"+esc(pos[3])+"/mute",
			map[string]bool{"muted": !*unmute}, &out)
	case cmd == "participants update" && len(pos) == 3:
		body := map[string]any{}
		if *name != "" {
			body["name"] = *name
		}
		if *metadata != "" {
			if !json.Valid([]byte(*metadata)) {
				fmt.Fprintf(stderr, "parley participants update: --metadata is not JSON: %s\n", *metadata)
				return 2
			}
			body["metadata"] = json.RawMessage(*metadata)
		}
		if *grants != "" {
			g, err := parseGrants(*grants)
			if err != nil || g.Admin {
				fmt.Fprintf(stderr, "parley participants update: --grants: publish, subscribe, data (not admin)\n")
				return 2
			}
			body["grants"] = g
		}
		err = c.do("PATCH", "/api/rooms/"+esc(pos[1])+"/participants/"+esc(pos[2]), body, &out)
	default:
		return usage()
	}
	if err != nil {
		fmt.Fprintf(stderr, "parley %s %s: %v\n", group, pos[0], err)
		return 1
	}
	if out != nil {
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(stdout, string(b))
	}
	return 0
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func parseGrants(list string) (rooms.Grants, error) {
	var g rooms.Grants
	for _, s := range strings.Split(list, ",") {
		switch strings.TrimSpace(s) {
		case "publish":
			g.Publish = true
		case "subscribe":
			g.Subscribe = true
		case "data":
			g.Data = true
		case "admin":
			g.Admin = true
		case "", "none":
		default:
			return g, fmt.Errorf("unknown grant %q (publish, subscribe, data, admin)", s)
		}
	}
	return g, nil
}

// adminToken is the given token, or one minted from the API key, or from
// a development-mode server.
func adminToken(base, token, key, secret, configPath string, env func(string) string) (string, error) {
	if token != "" {
		return token, nil
	}
	if key == "" || secret == "" {
		k, s, err := keyFromConfig(configPath, key, env)
		if err != nil {
			return "", err
		}
		key, secret = k, s
	}
	if key != "" && secret != "" {
		return signaling.MintToken(key, secret, signaling.TokenSpec{Room: "*", Identity: "admin", Grants: rooms.Grants{Admin: true}, TTL: 10 * time.Minute})
	}
	resp, err := http.Get(base + "/api/dev-admin-token")
	if err != nil {
		return "", fmt.Errorf("cannot reach %s: %v", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", errors.New("no admin token: pass --token (parley token --admin), or --key and --secret, or --config with keys")
	}
	var t struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return "", err
	}
	return t.Token, nil
}

type apiClient struct {
	base, token string
	client      http.Client
}

// do calls the API; a non-2xx answer is an error with the server's message.
func (c *apiClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.client.Timeout = 15 * time.Second
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %v", c.base, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s (%s)", e.Error.Message, e.Error.Code)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}
