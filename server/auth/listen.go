package auth

import (
	"fmt"
	"net"
	"strings"
)

// CheckListen refuses to serve plaintext on an address other machines can
// reach: without TLS, addr must be a loopback address or a unix socket,
// unless insecure is set (--insecure). A host that is empty or a name
// other than localhost counts as reachable.
func CheckListen(addr string, tlsOn, insecure bool) error {
	if tlsOn || insecure || strings.HasPrefix(addr, "unix:") {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("idem: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("idem: refusing to listen on %q without TLS: give --tls-cert and --tls-key, listen on a loopback address, or pass --insecure", addr)
}
