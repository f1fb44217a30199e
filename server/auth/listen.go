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
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("idem: listen address %q: %w", addr, err)
	}
	if !Reachable(addr) {
		return nil
	}
	return fmt.Errorf("idem: refusing to listen on %q without TLS: give --tls-cert and --tls-key, listen on a loopback address, or pass --insecure", addr)
}

// Reachable reports whether a listen address (host:port or unix:PATH) may
// be reached from other machines: anything but a unix socket, localhost
// or a loopback IP, including an address that does not parse.
func Reachable(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip == nil || !ip.IsLoopback()
}
