// Package image builds Trellis's container images without Docker: one
// reproducible layer (sorted entries, zero timestamps, root-owned) holding
// static binaries and whatever host files they need, written as an image
// tarball that `ctr images import` loads into containerd and `crane push`
// sends to any registry.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of the image's filesystem: a regular file (Data) or a
// symbolic link (Link).
type File struct {
	Path string // absolute, e.g. /usr/sbin/xtables-nft-multi
	Mode int64
	Data []byte
	Link string
}

// Spec describes an image.
type Spec struct {
	Tag        string // e.g. localhost/trellis-proxy:v0.1.0
	Files      []File
	Entrypoint []string
	// User is "UID:GID"; the image runs as it unless the Pod says otherwise.
	User   string
	Env    []string
	Labels map[string]string
}

// Write builds the image and writes it to out as a tarball.
func Write(spec Spec, out string) error {
	ref, err := name.NewTag(spec.Tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", spec.Tag, err)
	}
	layerTar, err := layer(spec.Files)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = v1.Config{Entrypoint: spec.Entrypoint, User: spec.User, Env: spec.Env, Labels: spec.Labels, WorkingDir: "/"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// layer is the reproducible tar of files, with every parent directory.
func layer(files []File) ([]byte, error) {
	entries := map[string]File{}
	dirs := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image path %q is not absolute", f.Path)
		}
		for dir := path.Dir(f.Path); dir != "/"; dir = path.Dir(dir) {
			dirs[dir] = true
		}
		entries[f.Path] = f
	}
	for d := range dirs {
		if _, ok := entries[d]; ok {
			return nil, fmt.Errorf("image path %q is both a file and a directory", d)
		}
		entries[d] = File{Path: d, Mode: 0o755}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: f.Mode, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		case dirs[p]:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// HostFile reads a file of this machine into the image at the same path.
func HostFile(p string) (File, error) {
	st, err := os.Stat(p)
	if err != nil {
		return File{}, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return File{}, err
	}
	return File{Path: p, Mode: int64(st.Mode().Perm()), Data: b}, nil
}
