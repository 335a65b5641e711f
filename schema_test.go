package pgsession

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

var updateSchemaFiles = flag.Bool("update", false, "rewrite schema.sql and upgrade.sql from sql.go")

const schemaHeader = `-- pgsession: the session table, its index, and the triggers that tell every
-- instance's cache of changes made to the table by other SQL. New runs the
-- same DDL, for the configured names, unless Config.SkipCreateTable is set.
-- To provision the table by migration, run this file with your table's name
-- in place of http_sessions. The triggers' argument is the channel: it must
-- be the store's Config.Channel (by default "pgsession:" and the lower-case
-- schema.table, as here for a table in schema public). Running the file again
-- changes nothing.
--
-- Generated from sql.go: go test -run TestSchemaFiles -update
`

const upgradeHeader = `-- pgsession: upgrade a session table made by an earlier version: it adds the
-- user columns and index (Config.UserKey, Sessions, RecordClient) and the
-- triggers (without them an UPDATE, DELETE or TRUNCATE by other SQL did not
-- reach the instances' caches). The index is built with a plain CREATE INDEX,
-- which blocks writes while it runs: on a large table, create it first with
-- CREATE INDEX CONCURRENTLY under the same name. New does this itself
-- unless Config.SkipCreateTable is set; with it set, run
-- this file as the table's owner, with your table's name in place of
-- http_sessions and, if it differs, the store's Config.Channel in place of
-- the channel (see schema.sql). Running it again changes nothing.
--
-- Generated from sql.go: go test -run TestSchemaFiles -update
`

// TestSchemaFiles keeps schema.sql and upgrade.sql equal to the DDL New
// runs for the default names.
func TestSchemaFiles(t *testing.T) {
	n := newDDLNames("", DefaultTable, defaultChannel("public", DefaultTable))
	files := map[string]string{
		"schema.sql":  schemaHeader + ddl("", DefaultTable),
		"upgrade.sql": upgradeHeader + upgradeDDL(n),
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
	suffixes := []string{indexSuffix, functionSuffix}
	for _, tr := range notifyTriggers {
		suffixes = append(suffixes, tr.suffix)
	}
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

func TestQuoteLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"pgsession:public.t": `'pgsession:public.t'`,
		"it's":               `'it''s'`,
		`a\b'c`:              `E'a\\b''c'`,
	} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}
