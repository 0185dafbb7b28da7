package reconciler

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestActionTypesListsEveryConstant keeps ActionTypes complete: it parses action.go and
// requires every ActionType constant to appear in the list, in declaration order.
func TestActionTypesListsEveryConstant(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "action.go", nil, 0)
	require.NoError(t, err)
	var declared []ActionType
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "ActionType" {
				continue
			}
			lit := v.Values[0].(*ast.BasicLit)
			s, err := strconv.Unquote(lit.Value)
			require.NoError(t, err)
			declared = append(declared, ActionType(s))
		}
	}
	require.NotEmpty(t, declared)
	require.Equal(t, declared, ActionTypes)
}
