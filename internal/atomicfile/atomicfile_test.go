package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholeFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteJSON(p, map[string]int{"a": 1}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(p, map[string]int{"b": 2}, 0o600); err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := ReadJSON(p, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["b"] != 2 {
		t.Errorf("got %v", got)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v err %v", st.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestReadMissingAndDamaged(t *testing.T) {
	dir := t.TempDir()
	var v map[string]int
	if err := ReadJSON(filepath.Join(dir, "none"), &v); !IsNotExist(err) {
		t.Errorf("missing: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("{"), 0o600)
	if err := ReadJSON(bad, &v); err == nil || IsNotExist(err) {
		t.Errorf("damaged: %v", err)
	}
}

func TestWriteIntoMissingDir(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "no", "x"), []byte("x"), 0o600); err == nil {
		t.Error("want error")
	}
}
