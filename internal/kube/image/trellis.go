package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// ProxyUID is the user the proxy image runs as (the injector's too).
const ProxyUID = "2102"

// staticUID is the user the other images run as.
const staticUID = "65532"

// iptablesTools are the names `trellis-proxy init` runs, for both
// backends and families, as links to the multi-call binaries.
var iptablesTools = map[string]string{
	"iptables-nft-save": "xtables-nft-multi", "iptables-nft-restore": "xtables-nft-multi",
	"ip6tables-nft-save": "xtables-nft-multi", "ip6tables-nft-restore": "xtables-nft-multi",
	"iptables-legacy-save": "xtables-legacy-multi", "iptables-legacy-restore": "xtables-legacy-multi",
	"ip6tables-legacy-save": "xtables-legacy-multi", "ip6tables-legacy-restore": "xtables-legacy-multi",
}

// Proxy is the trellis-proxy image: the static proxy binary and, for its
// init subcommand, this machine's iptables (nft and legacy) with the
// libraries and extensions it loads.
func Proxy(tag, binary, version string) (Spec, error) {
	files, err := binaryFile("/trellis-proxy", binary)
	if err != nil {
		return Spec{}, err
	}
	for link, target := range iptablesTools {
		files = append(files, File{Path: "/usr/sbin/" + link, Mode: 0o777, Link: target})
	}
	multi, err := WithLibraries("/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi")
	if err != nil {
		return Spec{}, fmt.Errorf("iptables for the init container (install Debian's iptables): %w", err)
	}
	files = append(files, multi...)
	ext, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	if len(ext) == 0 {
		return Spec{}, fmt.Errorf("no iptables extensions in /usr/lib/x86_64-linux-gnu/xtables")
	}
	extFiles, err := WithLibraries(ext...)
	if err != nil {
		return Spec{}, err
	}
	files = append(files, extFiles...)
	files = append(files, users("trellis-proxy", ProxyUID)...)
	return Spec{Tag: tag, Files: files, Entrypoint: []string{"/trellis-proxy"}, User: ProxyUID + ":" + ProxyUID,
		Labels: labels("trellis-proxy", version)}, nil
}

// Static is the image of one static binary, name (trellis-control, or
// trellis for the CLI and the demo application), run as an unprivileged
// user.
func Static(name, tag, binary, version string) (Spec, error) {
	files, err := binaryFile("/"+name, binary)
	if err != nil {
		return Spec{}, err
	}
	files = append(files, users(name, staticUID)...)
	return Spec{Tag: tag, Files: files, Entrypoint: []string{"/" + name}, User: staticUID + ":" + staticUID,
		Labels: labels(name, version)}, nil
}

func binaryFile(at, from string) ([]File, error) {
	f, err := HostFile(from)
	if err != nil {
		return nil, err
	}
	f.Path, f.Mode = at, 0o755
	return []File{f}, nil
}

func labels(title, version string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title": title, "org.opencontainers.image.version": version,
		"org.opencontainers.image.source": "https://github.com/trellis-mesh/trellis", "org.opencontainers.image.licenses": "Apache-2.0",
	}
}

// users is /etc/passwd and /etc/group with root and the image's user.
func users(name, uid string) []File {
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/:/sbin/nologin\n" + name + ":x:" + uid + ":" + uid + "::/:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\n" + name + ":x:" + uid + ":\n")},
	}
}

var lddPath = regexp.MustCompile(`(?m)(?:=> )?(/\S+) \(0x`)

// WithLibraries reads host executables or shared objects into the image at
// their paths, with every shared library ldd says they load.
func WithLibraries(paths ...string) ([]File, error) {
	seen := map[string]bool{}
	var files []File
	add := func(p string) error {
		if seen[p] {
			return nil
		}
		seen[p] = true
		f, err := HostFile(p) // follows symbolic links: the image gets the content
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	}
	for _, p := range paths {
		if err := add(p); err != nil {
			return nil, err
		}
		out, err := exec.Command("ldd", p).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", p, err)
		}
		for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
			if strings.Contains(m[1], "linux-vdso") {
				continue
			}
			if err := add(m[1]); err != nil {
				return nil, err
			}
		}
	}
	if _, err := os.Stat("/lib64/ld-linux-x86-64.so.2"); err == nil {
		if err := add("/lib64/ld-linux-x86-64.so.2"); err != nil {
			return nil, err
		}
	}
	return files, nil
}
