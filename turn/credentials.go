package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are defined with HMAC-SHA1
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Credentials mints TURN REST style credentials: username "expiry:identity"
// (expiry in unix seconds), password base64(HMAC-SHA1(secret, username)).
// coturn's use-auth-secret accepts the same.
func Credentials(secret, identity string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + identity
	return username, turnPassword(secret, username)
}

func turnPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// checkUsername returns the password for username if it is well formed and
// not expired at now.
func checkUsername(secret, username string, now time.Time) (string, bool) {
	exp, _, ok := strings.Cut(username, ":")
	if !ok {
		return "", false
	}
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || t < now.Unix() {
		return "", false
	}
	return turnPassword(secret, username), true
}
