package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/trellis-mesh/trellis/internal/control/store"
)

// SocketName is the API socket's file name in the data directory.
const SocketName = "api.sock"

// ErrNotRunning means no control plane answers on the socket.
var ErrNotRunning = errors.New("no control plane is running")

// Client calls the API of the control plane at a socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// NewTCPClient returns a client for the read-only API at a TCP address
// (--view-addr, reached through a port-forward in Kubernetes); where names
// it in errors.
func NewTCPClient(addr, where string) *Client {
	return &Client{socket: where, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}}}
}

// CallError is an error the API answered with.
type CallError struct {
	Status int
	Error_ Error
}

func (e *CallError) Error() string { return e.Error_.Error }

// NotFound reports whether err is the API's 404.
func NotFound(err error) bool {
	var ce *CallError
	return errors.As(err, &ce) && ce.Status == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://trellis"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.explain(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return callError(resp)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Status returns the control plane's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// List returns the objects of kind in namespace ("" for all).
func (c *Client) List(ctx context.Context, kind, namespace string) ([]store.Resource, error) {
	var l List
	err := c.do(ctx, http.MethodGet, "/v1/resources/"+url.PathEscape(kind)+"?namespace="+url.QueryEscape(namespace), nil, &l)
	return l.Items, err
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, k store.Key) (store.Resource, error) {
	var r store.Resource
	return r, c.do(ctx, http.MethodGet, resourcePath(k), nil, &r)
}

// Apply creates or replaces every object, or none if any is invalid.
func (c *Client) Apply(ctx context.Context, items []store.Resource) ([]Applied, error) {
	var out ApplyResponse
	return out.Items, c.do(ctx, http.MethodPut, "/v1/resources", ApplyRequest{Items: items}, &out)
}

// Delete removes one object.
func (c *Client) Delete(ctx context.Context, k store.Key) error {
	return c.do(ctx, http.MethodDelete, resourcePath(k), nil, nil)
}

// JoinToken issues a join token for identity, single-use if once.
func (c *Client) JoinToken(ctx context.Context, identity string, ttl time.Duration, once bool) (string, error) {
	var t TokenResponse
	return t.Token, c.do(ctx, http.MethodPost, "/v1/join-tokens", TokenRequest{Identity: identity, TTL: ttl, Once: once}, &t)
}

// AllocateAddress returns owner's address on the bridge network.
func (c *Client) AllocateAddress(ctx context.Context, owner string) (AddressResponse, error) {
	var a AddressResponse
	return a, c.do(ctx, http.MethodPost, "/v1/addresses", AddressRequest{Owner: owner}, &a)
}

// ReleaseAddress frees owner's address.
func (c *Client) ReleaseAddress(ctx context.Context, owner string) error {
	return c.do(ctx, http.MethodDelete, "/v1/addresses/"+url.PathEscape(owner), nil, nil)
}

// Shutdown asks the control plane to stop.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/shutdown", nil, nil)
}

func resourcePath(k store.Key) string {
	return "/v1/resources/" + url.PathEscape(k.Kind) + "/" + url.PathEscape(k.Namespace) + "/" + url.PathEscape(k.Name)
}

// Query calls GET path (with its query string) and decodes the JSON answer
// into out: the metrics API's stat, routes and edges.
func (c *Client) Query(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// Stream calls GET path and returns the body as it arrives, without the
// client's timeout (tap streams, raw metrics); the caller closes it.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://trellis"+path, nil)
	if err != nil {
		return nil, err
	}
	streaming := &http.Client{Transport: c.http.Transport}
	resp, err := streaming.Do(req)
	if err != nil {
		return nil, c.explain(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, callError(resp)
	}
	return resp.Body, nil
}

// explain turns a refused or missing socket into ErrNotRunning.
func (c *Client) explain(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)) {
		return fmt.Errorf("%w (socket %s): start it with 'trellis up'", ErrNotRunning, c.socket)
	}
	return err
}

// callError reads the API's error answer.
// It is JSON; a plain-text answer is taken as the error's text.
func callError(resp *http.Response) *CallError {
	ce := &CallError{Status: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(body, &ce.Error_); err != nil || ce.Error_.Error == "" {
		ce.Error_.Error = strings.TrimSpace(string(body))
		if ce.Error_.Error == "" || !utf8.Valid(body) {
			ce.Error_.Error = resp.Status
		}
	}
	return ce
}
