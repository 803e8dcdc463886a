package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServeSmoke(t *testing.T) {
	base, _ := startServer(t)
	resp, body := get(t, base+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") == "" || !strings.Contains(body, "app.js") {
		t.Fatalf("/: %d %q", resp.StatusCode, resp.Header)
	}
	if resp, _ := get(t, base+"/healthz"); resp.StatusCode != 200 {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	resp, body = get(t, base+"/api/dev-token?room=x&name=Ann")
	var tok struct{ Token, Identity, Room string }
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &tok) != nil || tok.Token == "" || tok.Room != "x" {
		t.Fatalf("dev token: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get(t, base+"/api/dev-token?room=&name=Ann"); resp.StatusCode != 400 {
		t.Fatalf("dev token without room: %d", resp.StatusCode)
	}
}

func TestNoDevTokensWithKeys(t *testing.T) {
	base, _ := startServer(t, func(c *Config) { c.Keys = map[string]string{"k": strings.Repeat("s", 32)} })
	if resp, _ := get(t, base+"/api/dev-token?room=x&name=y"); resp.StatusCode != 404 {
		t.Fatalf("dev-token with keys configured: %d, want 404", resp.StatusCode)
	}
}

func TestTokenCommand(t *testing.T) {
	secret := strings.Repeat("x", 40)
	var out, errb bytes.Buffer
	env := func(string) string { return "" }
	code := realMain([]string{"token", "--room", "standup", "--identity", "alice", "--name", "Alice", "--ttl", "2h",
		"--key", "k1", "--secret", secret}, env, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(out.String()), claims, func(*jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		t.Fatal(err)
	}
	if claims["room"] != "standup" || claims["sub"] != "alice" || claims["name"] != "Alice" || claims["iss"] != "k1" {
		t.Fatalf("claims %v", claims)
	}
	exp, _ := claims.GetExpirationTime()
	if d := time.Until(exp.Time); d < 119*time.Minute || d > 121*time.Minute {
		t.Fatalf("expiry in %s, want 2h", d)
	}
	errb.Reset()
	if code := realMain([]string{"token", "--room", "r"}, env, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--identity") {
		t.Fatalf("missing identity: exit %d %q", code, errb.String())
	}
}
