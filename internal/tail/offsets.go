package tail

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// HeadBytes is how much of a file's start identifies it, together with its
// device and inode: a file whose inode was reused, or that was truncated and
// written again, has another start.
const HeadBytes = 1024

// Position is where the reading of one followed file stands.
type Position struct {
	Dev     uint64 `json:"dev"`      // device of the file read (0: none yet)
	Ino     uint64 `json:"ino"`      // inode of the file read (0: none yet)
	Offset  int64  `json:"offset"`   // end of the last complete line handed out
	HeadLen int    `json:"head_len"` // bytes of the file's start that HeadSum covers: min(Offset, HeadBytes)
	HeadSum string `json:"head_sum"` // hex SHA-256 of those bytes
}

// OffsetStore keeps positions across restarts, keyed by the followed path
// as configured. Save is called from the follower's goroutine at most once
// per file and Config.SaveEvery while lines flow, and at stop.
type OffsetStore interface {
	// Load returns the position saved for path; false when there is none.
	Load(path string) (Position, bool, error)
	// Save records the position of path durably.
	Save(path string, p Position) error
}

// headSum returns the hex SHA-256 of b.
func headSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readHead returns the first n bytes of f, fewer when the file is shorter.
func readHead(f *os.File, n int) ([]byte, error) {
	b := make([]byte, n)
	m, err := f.ReadAt(b, 0)
	if err == io.EOF {
		err = nil
	}
	return b[:m], err
}

// headMatches reports whether f starts with the bytes p was taken from.
func headMatches(f *os.File, p Position) bool {
	if p.HeadLen == 0 {
		return true
	}
	b, err := readHead(f, p.HeadLen)
	return err == nil && len(b) == p.HeadLen && headSum(b) == p.HeadSum
}

func sameHead(f *os.File, head []byte) bool {
	if len(head) == 0 {
		return true
	}
	b, err := readHead(f, len(head))
	if err != nil {
		return true // a read error is no evidence of another file
	}
	return bytes.Equal(b, head)
}

// FileOffsets is an OffsetStore in one JSON file, rewritten whole and
// atomically (temporary file, fsync, rename, fsync of the folder) on every
// Save. It suits a few followed files; it is safe for concurrent use.
type FileOffsets struct {
	name string

	mu sync.Mutex
	m  map[string]Position
}

type offsetsFile struct {
	Version int                 `json:"version"`
	Files   map[string]Position `json:"files"`
}

// OpenFileOffsets reads the positions saved in name; a missing file holds
// none (it is created by the first Save).
func OpenFileOffsets(name string) (*FileOffsets, error) {
	s := &FileOffsets{name: name, m: make(map[string]Position)}
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("log positions %s: %w", name, err)
	}
	var f offsetsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("log positions %s: %v (remove the file to follow the logs from their end)", name, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("log positions %s: version %d, want 1 (remove the file to follow the logs from their end)", name, f.Version)
	}
	for k, v := range f.Files {
		s.m[k] = v
	}
	return s, nil
}

// Load returns the position saved for path.
func (s *FileOffsets) Load(path string) (Position, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[path]
	return p, ok, nil
}

// Save records the position of path and rewrites the file.
func (s *FileOffsets) Save(path string, p Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.m[path]
	s.m[path] = p
	if err := s.write(); err != nil {
		if had {
			s.m[path] = old
		} else {
			delete(s.m, path)
		}
		return err
	}
	return nil
}

func (s *FileOffsets) write() error {
	f := offsetsFile{Version: 1, Files: s.m}
	b, err := json.MarshalIndent(f, "", "\t")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	dir := filepath.Dir(s.name)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.name)+".tmp*")
	if err != nil {
		return fmt.Errorf("log positions %s: %w", s.name, err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.name)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("log positions %s: %w", s.name, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
