package tail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileOffsets(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "positions.json")
	st := openStore(t, dir)
	if _, ok, err := st.Load("/var/log/mail.log"); ok || err != nil {
		t.Fatalf("empty store: %v %v", ok, err)
	}
	p := Position{Dev: 1, Ino: 2, Offset: 3, HeadLen: 3, HeadSum: headSum([]byte("abc"))}
	if err := st.Save("/var/log/mail.log", p); err != nil {
		t.Fatal(err)
	}
	if err := st.Save("/var/log/exim4/mainlog", Position{}); err != nil {
		t.Fatal(err)
	}
	st2 := openStore(t, dir)
	if got, ok, err := st2.Load("/var/log/mail.log"); !ok || err != nil || got != p {
		t.Fatalf("loaded %+v %v %v, want %+v", got, ok, err, p)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("files left: %v", ents)
	}
	writeFile(t, name, "{")
	if _, err := OpenFileOffsets(name); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("corrupt file: %v", err)
	}
	writeFile(t, name, `{"version":2}`)
	if _, err := OpenFileOffsets(name); err == nil {
		t.Error("unknown version accepted")
	}
	// A failed write keeps the last saved state.
	ro := &FileOffsets{name: filepath.Join(dir, "missing", "positions.json"), m: map[string]Position{}}
	if err := ro.Save("x", p); err == nil {
		t.Error("save into a missing folder succeeded")
	}
	if _, ok, _ := ro.Load("x"); ok {
		t.Error("failed save kept")
	}
}

func TestLastLineEnd(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	for _, tc := range []struct {
		content string
		off     int64
		skip    bool
	}{
		{"", 0, false},
		{"abc\n", 4, false},
		{"abc\nde", 4, false},
		{"abc", 0, false},
		{"abc\n" + strings.Repeat("x", 70000), 70004, true},
		{strings.Repeat("x", 70000) + "\nab", 70001, false},
	} {
		writeFile(t, name, tc.content)
		fp, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		off, skip := lastLineEnd(fp, int64(len(tc.content)))
		fp.Close()
		if off != tc.off || skip != tc.skip {
			t.Errorf("%.10q…: %d %v, want %d %v", tc.content, off, skip, tc.off, tc.skip)
		}
	}
}
