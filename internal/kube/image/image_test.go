package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// read loads an image tarball and returns its digest, config and files.
func read(t *testing.T, file string) (string, map[string]*tar.Header, map[string][]byte, []string, string) {
	t.Helper()
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	headers, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		data[h.Name], _ = io.ReadAll(tr)
	}
	return digest.String(), headers, data, cf.Config.Entrypoint, cf.Config.User
}

func TestWriteIsReproducibleAndLoadable(t *testing.T) {
	spec := Spec{Tag: "localhost/test:v1", Entrypoint: []string{"/bin/app"}, User: "2102:2102", Labels: map[string]string{"a": "b"},
		Files: []File{{Path: "/bin/app", Mode: 0o755, Data: []byte("#!app")}, {Path: "/usr/sbin/tool", Mode: 0o777, Link: "multi"}}}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	if err := Write(spec, a); err != nil {
		t.Fatal(err)
	}
	if err := Write(spec, b); err != nil {
		t.Fatal(err)
	}
	da, headers, data, entry, user := read(t, a)
	if db, _, _, _, _ := read(t, b); da != db {
		t.Errorf("two builds of one spec differ: %s, %s", da, db)
	}
	if strings.Join(entry, " ") != "/bin/app" || user != "2102:2102" {
		t.Errorf("entrypoint %v, user %q", entry, user)
	}
	if string(data["bin/app"]) != "#!app" || headers["bin/app"].Mode != 0o755 {
		t.Errorf("bin/app: %q mode %o", data["bin/app"], headers["bin/app"].Mode)
	}
	if h := headers["usr/sbin/tool"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "multi" {
		t.Errorf("usr/sbin/tool: %+v", h)
	}
	if h := headers["usr/sbin"]; h == nil || h.Typeflag != tar.TypeDir {
		t.Errorf("no directory entry for usr/sbin: %+v", h)
	}
	if err := Write(Spec{Tag: "x", Files: []File{{Path: "relative"}}}, filepath.Join(dir, "c.tar")); err == nil {
		t.Error("a relative path was accepted")
	}
}

// The proxy image on its own, with nothing from the host, programs a
// network namespace's interception rules: its iptables and every library
// and extension it loads are in the image.
func TestProxyImageProgramsInterception(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for chroot and a network namespace")
	}
	for _, tool := range []string{"unshare", "chroot", "xtables-nft-multi"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	binary := filepath.Join(dir, "trellis-proxy")
	build := exec.Command("go", "build", "-o", binary, "github.com/trellis-mesh/trellis/cmd/trellis-proxy")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	spec, err := Proxy("localhost/trellis-proxy:test", binary, "test")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "proxy.tar")
	if err := Write(spec, file); err != nil {
		t.Fatal(err)
	}
	_, headers, data, entry, user := read(t, file)
	if entry[0] != "/trellis-proxy" || user != ProxyUID+":"+ProxyUID {
		t.Errorf("entrypoint %v user %q", entry, user)
	}
	root := filepath.Join(dir, "rootfs")
	for name, h := range headers {
		p := filepath.Join(root, name)
		switch h.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Symlink(h.Linkname, p)
		default:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, data[name], os.FileMode(h.Mode))
		}
	}
	script := `chroot "$1" /trellis-proxy init --skip-inbound-ports 4190,4191 && chroot "$1" /usr/sbin/iptables-nft-save -t nat`
	out, err := exec.Command("unshare", "--net", "sh", "-c", script, "sh", root).CombinedOutput()
	if err != nil {
		t.Fatalf("init from the image alone: %v\n%s", err, out)
	}
	for _, want := range []string{"-m owner --uid-owner 2102", "REDIRECT --to-ports 4143", "REDIRECT --to-ports 4140"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("rules lack %q:\n%s", want, out)
		}
	}
}
