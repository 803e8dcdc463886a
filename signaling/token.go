package signaling

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parley-rtc/parley/rooms"
)

// MinSecretLen is the shortest API secret accepted (HS256 wants 256 bits).
const MinSecretLen = 32

// TokenSpec is what a join token grants.
type TokenSpec struct {
	Room, Identity, Name string
	Grants               rooms.Grants
	TTL                  time.Duration
}

// Claims is a verified token.
type Claims struct {
	jwt.RegisteredClaims
	Name   string       `json:"name,omitempty"`
	Room   string       `json:"room"`
	Grants rooms.Grants `json:"grants"`
}

// MintToken signs a join token with the API key's secret (HS256).
func MintToken(apiKey, secret string, spec TokenSpec) (string, error) {
	if apiKey == "" || len(secret) < MinSecretLen {
		return "", fmt.Errorf("%w: need an API key and a secret of at least %d characters", ErrBadConfig, MinSecretLen)
	}
	if spec.Room == "" || spec.Identity == "" {
		return "", fmt.Errorf("%w: room and identity are required", ErrInvalidToken)
	}
	if spec.TTL <= 0 {
		spec.TTL = time.Hour
	}
	now := time.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    apiKey,
			Subject:   spec.Identity,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(now.Add(spec.TTL)),
		},
		Name:   spec.Name,
		Room:   spec.Room,
		Grants: spec.Grants,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}

// VerifyToken checks signature (HS256 only, so no "none" and no key
// confusion), expiry, not-before and required claims. keys maps API key to
// secret; the token's iss picks the key.
func VerifyToken(keys map[string]string, token string) (*Claims, error) {
	var c Claims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
	)
	_, err := parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		iss, _ := t.Claims.GetIssuer()
		secret, ok := keys[iss]
		if !ok {
			return nil, fmt.Errorf("unknown API key %q", iss)
		}
		return []byte(secret), nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, fmt.Errorf("%w: %v", ErrTokenExpired, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" || c.Room == "" {
		return nil, fmt.Errorf("%w: sub (identity) and room claims are required", ErrInvalidToken)
	}
	if len(c.Subject) > 256 || len(c.Room) > 256 || len(c.Name) > 256 {
		return nil, fmt.Errorf("%w: identity, room and name are limited to 256 bytes", ErrInvalidToken)
	}
	return &c, nil
}
