package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	cases := []struct {
		path, ctype string
		code        int
	}{
		{"/", "text/html", 200},
		{"/?room=x&name=y", "text/html", 200},
		{"/app.js", "text/javascript", 200},
		{"/style.css", "text/css", 200},
		{"/nope.js", "", 404},
		{"/../web.go", "", 404},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s: status %d, want %d", c.path, rec.Code, c.code)
		}
		if !strings.Contains(rec.Header().Get("Content-Type"), c.ctype) {
			t.Errorf("%s: content type %q", c.path, rec.Header().Get("Content-Type"))
		}
		if rec.Header().Get("Content-Security-Policy") != CSP {
			t.Errorf("%s: no CSP", c.path)
		}
	}
}

func TestNoInlineScriptOrStyle(t *testing.T) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	if strings.Contains(html, "<script>") || strings.Contains(html, "style=") || strings.Contains(html, "<style") || strings.Contains(html, "onclick") {
		t.Fatal("index.html has inline script or style, which the CSP forbids")
	}
}
