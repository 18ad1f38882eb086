package run

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/proxy/iptables"
)

// DefaultUser is who applications run as when `trellis run` is root.
const DefaultUser = "nobody"

// appUser is the unprivileged user an application runs as: it cannot read
// the control plane's keys or its API socket, change its interception
// rules (no capabilities) or become the proxy's user.
type appUser struct {
	name     string
	uid, gid int
	home     string
	known    bool // in the user database: its supplementary groups apply
}

// lookupUser resolves --user: NAME or UID, optionally :GROUP or :GID. Nil
// means the application keeps trellis's own user: it is not root, or the
// user asked for root.
func lookupUser(spec string) (*appUser, error) {
	if os.Geteuid() != 0 {
		if spec != "" {
			return nil, fmt.Errorf("--user %s: needs root (otherwise the application runs as the user running trellis)", spec)
		}
		return nil, nil
	}
	if spec == "" {
		spec = DefaultUser
	}
	name, group, _ := strings.Cut(spec, ":")
	u := &appUser{name: name, home: "/"}
	pw, err := user.Lookup(name)
	if err != nil {
		pw, err = user.LookupId(name)
	}
	if err == nil {
		u.uid, _ = strconv.Atoi(pw.Uid)
		u.gid, _ = strconv.Atoi(pw.Gid)
		u.name, u.home, u.known = pw.Username, pw.HomeDir, true
	} else if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		u.uid, u.gid = id, id
	} else {
		return nil, fmt.Errorf("--user %s: no such user", spec)
	}
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			u.gid, _ = strconv.Atoi(g.Gid)
		} else if id, err := strconv.Atoi(group); err == nil && id >= 0 {
			u.gid = id
		} else {
			return nil, fmt.Errorf("--user %s: no such group %q", spec, group)
		}
	}
	if u.uid == 0 {
		return nil, nil // root, as asked: the application can read the mesh's keys
	}
	if isProxyUID(u.uid) {
		return nil, fmt.Errorf("--user %s: %d is a proxy's user, whose traffic is not intercepted", spec, u.uid)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		return nil, errors.New("running the application as --user needs setpriv (Debian: util-linux)")
	}
	return u, nil
}

// wrap runs argv as u, with no capabilities (none inherited, an empty
// bounding set) and no way to gain privileges (no_new_privs: no setuid
// binary), killed when trellis dies.
func (u *appUser) wrap(argv []string) []string {
	groups := "--clear-groups"
	if u.known {
		groups = "--init-groups" // its groups from the user database
	}
	return append([]string{"setpriv", "--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), groups,
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--pdeathsig=SIGKILL", "--"}, argv...)
}

// canRun reports whether u can reach and run the program at path itself:
// every directory above it searchable, the file readable and executable
// (by owner, group or other, as u's IDs select).
func (u *appUser) canRun(path string) bool {
	groups := map[int]bool{u.gid: true}
	if u.known {
		if pw, err := user.LookupId(strconv.Itoa(u.uid)); err == nil {
			if ids, err := pw.GroupIds(); err == nil {
				for _, g := range ids {
					id, _ := strconv.Atoi(g)
					groups[id] = true
				}
			}
		}
	}
	allows := func(p string, need os.FileMode) bool {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil {
			return false
		}
		mode := os.FileMode(st.Mode) & os.ModePerm
		switch {
		case int(st.Uid) == u.uid:
			mode >>= 6
		case groups[int(st.Gid)]:
			mode >>= 3
		}
		return mode&need == need
	}
	abs, err := filepath.Abs(path)
	if err != nil || !allows(abs, 0o5) {
		return false
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if !allows(dir, 0o1) {
			return false
		}
		if dir == "/" {
			return true
		}
	}
}

// env is the user's part of the application's environment.
func (u *appUser) env() []string {
	return []string{"HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name}
}

// appUserLabels name, on the workload, who its application runs as (u,
// or, nil, trellis's own user), for `trellis get workloads -o wide`.
func appUserLabels(u *appUser) map[string]string {
	name, uid := "", os.Geteuid()
	if u != nil {
		name, uid = u.name, u.uid
	} else if cur, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		name = cur.Username
	}
	labels := map[string]string{resources.AppUIDLabel: strconv.Itoa(uid)}
	if len(validation.IsValidLabelValue(name)) == 0 {
		labels[resources.AppUserLabel] = name
	}
	return labels
}

// In transparent mode every replica's proxy runs as a user of its own:
// proxyUIDBase plus the low 24 bits of the replica's address (unique: the
// host's bridges differ in them, see netns.EnsureBridge). Its
// namespace's iptables leave that user's connections alone; no proxy can
// read another's files (its token, its trust anchors) or signal it.
// iptables.DefaultProxyUID (2102) is the Kubernetes sidecar's.
const (
	proxyUIDBase  = 21020000
	proxyUIDRange = 1 << 24
)

// proxyUID is the user of the proxy of the replica at a.
func proxyUID(a netip.Addr) int {
	ip := a.As4()
	return proxyUIDBase + int(binary.BigEndian.Uint32(ip[:])%proxyUIDRange)
}

// isProxyUID reports whether uid is one proxies run as.
func isProxyUID(uid int) bool {
	return uid == iptables.DefaultProxyUID || uid >= proxyUIDBase && uid < proxyUIDBase+proxyUIDRange
}
