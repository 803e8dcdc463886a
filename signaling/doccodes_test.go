package signaling

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestProtocolDocListsEveryErrorCode: every Code* constant of errors.go
// has its row in the error table of docs/protocol.md, so that a client
// written from the document knows every code the server may send.
func TestProtocolDocListsEveryErrorCode(t *testing.T) {
	raw, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	// The signaling error table, not the data channels' one.
	_, doc, ok := strings.Cut(string(raw), "### `error` (server → client)")
	doc, _, ok2 := strings.Cut(doc, "\n## ")
	if !ok || !ok2 {
		t.Fatal("docs/protocol.md has no section \"### `error` (server → client)\" followed by another section")
	}
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		vs, ok := node.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Code") || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok {
			return true
		}
		code, _ := strconv.Unquote(lit.Value)
		n++
		if !strings.Contains(doc, "| `"+code+"`") {
			t.Errorf("docs/protocol.md has no table row for error code %q (%s)", code, vs.Names[0].Name)
		}
		return true
	})
	if n < 20 {
		t.Fatalf("found only %d error codes in errors.go", n)
	}
}
