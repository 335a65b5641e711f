package pgsession

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

var updateSchemaFiles = flag.Bool("update", false, "rewrite schema.sql from sql.go")

const schemaHeader = `-- pgsession: the session table and its index. New runs the same DDL, for
-- the configured names, unless Config.SkipCreateTable is set. To provision
-- the table by migration, run this file with your table's name in place of
-- http_sessions. Running it again changes nothing.
--
-- Generated from sql.go: go test -run TestSchemaFiles -update
`

// TestSchemaFiles keeps schema.sql equal to the DDL New runs for the
// default names.
func TestSchemaFiles(t *testing.T) {
	files := map[string]string{
		"schema.sql": schemaHeader + ddl("", DefaultTable),
	}
	for name, want := range files {
		if *updateSchemaFiles {
			if err := os.WriteFile(name, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s differs from the DDL in sql.go: run go test -run TestSchemaFiles -update", name)
		}
	}
}

// TestDDLCommentsNameNothing: a configured name is never substituted into
// a comment (a newline in it would end the comment and run the rest).
func TestDDLCommentsNameNothing(t *testing.T) {
	const table = "zzname"
	comment := regexp.MustCompile(`--[^\n]*`)
	for _, c := range comment.FindAllString(ddl("zzschema", table), -1) {
		if strings.Contains(c, "zz") {
			t.Errorf("comment %q carries a name", c)
		}
	}
	if strings.Contains(ddl("", table), "/*") {
		t.Error("the DDL has a block comment")
	}
}

func TestObjectNames(t *testing.T) {
	suffixes := []string{indexSuffix}
	tables := []string{
		DefaultTable,
		strings.Repeat("t", 48),
		strings.Repeat("t", 49),
		strings.Repeat("t", 63),
		strings.Repeat("é", 31) + "x", // 63 bytes, 2-byte characters
	}
	for _, table := range tables {
		seen := map[string]bool{table: true}
		for _, suffix := range suffixes {
			name := objectName(table, suffix)
			switch {
			case len(name) > maxIdentifierLen:
				t.Errorf("%q+%q: %q is %d bytes", table, suffix, name, len(name))
			case !utf8.ValidString(name):
				t.Errorf("%q+%q: %q is not valid UTF-8", table, suffix, name)
			case !strings.HasSuffix(name, suffix):
				t.Errorf("%q+%q: %q lost its suffix", table, suffix, name)
			case seen[name]:
				t.Errorf("%q+%q: %q names two objects", table, suffix, name)
			}
			seen[name] = true
		}
	}
	if got := objectName(DefaultTable, indexSuffix); got != "http_sessions_expires_at_idx" {
		t.Errorf("the default index is %q", got)
	}
	// Two long tables with one prefix get different names.
	a, b := strings.Repeat("t", 62)+"a", strings.Repeat("t", 62)+"b"
	if objectName(a, indexSuffix) == objectName(b, indexSuffix) {
		t.Error("two long tables share an index name")
	}
}
