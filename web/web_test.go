package web

import (
	"io/fs"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	cases := []struct {
		method, path, ctype string
		code                int
	}{
		{"GET", "/", "text/html; charset=utf-8", 200},
		{"GET", "/?room=standup&name=Alice", "text/html; charset=utf-8", 200},
		{"GET", "/index.html", "text/html; charset=utf-8", 200},
		{"GET", "/app.js", "application/javascript; charset=utf-8", 200},
		{"GET", "/signal.js", "application/javascript; charset=utf-8", 200},
		{"GET", "/ui.js", "application/javascript; charset=utf-8", 200},
		{"GET", "/session.js", "application/javascript; charset=utf-8", 200},
		{"GET", "/style.css", "text/css; charset=utf-8", 200},
		{"HEAD", "/app.js", "application/javascript; charset=utf-8", 200},
		{"GET", "/nope.js", "", 404},
		{"GET", "/nope", "", 404},
		{"GET", "/static/app.js", "", 404},
		{"GET", "/../web.go", "", 404},
		{"GET", "/web.go", "", 404},
		{"POST", "/", "", 405},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, rec.Code, c.code)
		}
		if c.ctype != "" && rec.Header().Get("Content-Type") != c.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", c.method, c.path, rec.Header().Get("Content-Type"), c.ctype)
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": CSP,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-cache",
			"Permissions-Policy":      "camera=(self), microphone=(self), display-capture=(self)",
		} {
			if got := rec.Header().Get(k); got != want {
				t.Errorf("%s %s: %s %q, want %q", c.method, c.path, k, got, want)
			}
		}
	}
}

func TestRevalidation(t *testing.T) {
	h := Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/app.js", nil))
	tag := rec.Header().Get("ETag")
	if rec.Code != 200 || tag == "" {
		t.Fatalf("GET /app.js: status %d, ETag %q", rec.Code, tag)
	}
	req := httptest.NewRequest("GET", "/app.js", nil)
	req.Header.Set("If-None-Match", tag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 304 {
		t.Fatalf("GET /app.js with If-None-Match: status %d, want 304", rec.Code)
	}
}

func TestCSPIsStrict(t *testing.T) {
	for _, d := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
		"base-uri 'none'", "frame-ancestors 'none'", "connect-src 'self' ws: wss:", "media-src 'self' blob:"} {
		if !strings.Contains(CSP, d+";") && !strings.HasSuffix(CSP, d) {
			t.Errorf("CSP lacks %q", d)
		}
	}
	if strings.Contains(CSP, "unsafe-") {
		t.Errorf("CSP allows something unsafe: %s", CSP)
	}
}

// The CSP forbids inline scripts, inline styles and event handler
// attributes, and the page must load nothing from elsewhere.
var moduleScript = regexp.MustCompile(`<script type="module" src="([a-z]+\.js)"></script>`)

func TestStaticFilesObeyCSP(t *testing.T) {
	inline := regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=|javascript:`)
	external := regexp.MustCompile(`(?i)(src|href)=["']?(https?:)?//`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		s := string(b)
		if strings.HasSuffix(p, ".html") {
			if m := inline.FindString(s); m != "" {
				t.Errorf("%s: inline script or style %q, which the CSP forbids", p, m)
			}
			m := moduleScript.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("%s: does not load its script as a module", p)
			} else if _, err := static.ReadFile("static/" + m[1]); err != nil {
				t.Errorf("%s: loads %s, which is not there", p, m[1])
			}
		}
		if m := external.FindString(s); m != "" {
			t.Errorf("%s: loads %q from elsewhere", p, m)
		}
		if strings.HasSuffix(p, ".js") && (strings.Contains(s, ".innerHTML") || strings.Contains(s, "eval(")) {
			t.Errorf("%s: uses innerHTML or eval", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
