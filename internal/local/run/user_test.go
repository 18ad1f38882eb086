package run

import (
	"os"
	"path/filepath"
	"testing"
)

// An application's user runs its program by its own path (argv[0] as
// given) when it can reach it, and not when a directory above it or the
// file's mode shuts the user out.
func TestUserCanRun(t *testing.T) {
	nobody := &appUser{name: "nobody", uid: 65534, gid: 65534}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(private, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(dir, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(closed, "prog")
	if err := os.WriteFile(inside, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	owner := &appUser{name: "owner", uid: os.Getuid(), gid: os.Getgid()}
	for _, tc := range []struct {
		u    *appUser
		path string
		want bool
	}{
		{nobody, "/bin/sh", true},
		{nobody, open, true},
		{nobody, private, false},
		{nobody, inside, false},
		{owner, private, true},
		{nobody, filepath.Join(dir, "missing"), false},
	} {
		if got := tc.u.canRun(tc.path); got != tc.want {
			t.Errorf("%s can run %s: %v, want %v", tc.u.name, tc.path, got, tc.want)
		}
	}
}
