package signaling

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/rooms"
)

var keys = map[string]string{testKey: testSecret}

func sign(t *testing.T, method jwt.SigningMethod, key any, c Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claimsFor(exp time.Time) Claims {
	return Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: testKey, Subject: "alice", ExpiresAt: jwt.NewNumericDate(exp)},
		Room: "r", Name: "Alice", Grants: rooms.Grants{Publish: true}}
}

func TestMintAndVerify(t *testing.T) {
	tok, err := MintToken(testKey, testSecret, TokenSpec{Room: "r", Identity: "alice", Name: "Alice", TTL: time.Minute, Grants: rooms.Grants{Publish: true, Subscribe: true}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyToken(keys, tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Room != "r" || c.Subject != "alice" || c.Name != "Alice" || !c.Grants.Publish || !c.Grants.Subscribe || c.Grants.Admin {
		t.Fatalf("claims %+v", c)
	}
}

func TestVerifyRejects(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	good := claimsFor(time.Now().Add(time.Hour))
	noExp := good
	noExp.ExpiresAt = nil
	noRoom := good
	noRoom.Room = ""
	unknownKey := good
	unknownKey.Issuer = "other"
	future := good
	future.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)
	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"garbage", "not.a.token", ErrInvalidToken},
		{"empty", "", ErrInvalidToken},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-enough-length-000"), good), ErrInvalidToken},
		{"alg none", none, ErrInvalidToken},
		{"HS512 not allowed", sign(t, jwt.SigningMethodHS512, []byte(testSecret), good), ErrInvalidToken},
		{"RS256 key confusion", sign(t, jwt.SigningMethodRS256, rsaKey, good), ErrInvalidToken},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claimsFor(time.Now().Add(-time.Minute))), ErrTokenExpired},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, []byte(testSecret), future), ErrTokenExpired},
		{"no expiry", sign(t, jwt.SigningMethodHS256, []byte(testSecret), noExp), ErrInvalidToken},
		{"no room", sign(t, jwt.SigningMethodHS256, []byte(testSecret), noRoom), ErrInvalidToken},
		{"unknown key", sign(t, jwt.SigningMethodHS256, []byte(testSecret), unknownKey), ErrInvalidToken},
		{"tampered", tamper(sign(t, jwt.SigningMethodHS256, []byte(testSecret), good)), ErrInvalidToken},
	}
	for _, c := range cases {
		_, err := VerifyToken(keys, c.token)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	c := claimsFor(time.Now().Add(time.Hour))
	c.Room = "other-room"
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SigningString()
	return forged + "." + parts[2]
}

func TestMintRefusesWeakSecret(t *testing.T) {
	if _, err := MintToken("k", "short", TokenSpec{Room: "r", Identity: "i"}); err == nil {
		t.Fatal("a short secret was accepted")
	}
}

func FuzzVerifyToken(f *testing.F) {
	tok, _ := MintToken(testKey, testSecret, TokenSpec{Room: "r", Identity: "a", TTL: time.Hour})
	f.Add(tok)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := VerifyToken(keys, s)
		if err == nil && (c.Room == "" || c.Subject == "") {
			t.Fatalf("accepted a token without room or identity: %q", s)
		}
	})
}
