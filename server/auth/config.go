package auth

import (
	"flag"
	"fmt"
	"time"
)

// DefaultTenantURIPrefix is the URI SAN prefix that names a certificate's tenant.
const DefaultTenantURIPrefix = "spiffe://idem/tenant/"

// Config selects TLS and how callers are authenticated. idemd fills it from
// flags (--tls-cert, --tls-key, --tls-client-ca, --tokens-file, …).
type Config struct {
	// TLSCert and TLSKey are the server's PEM certificate chain and key.
	// Both or neither.
	TLSCert string
	TLSKey  string
	// TLSClientCA is a PEM bundle of the CAs client certificates must chain
	// to. Setting it turns on mutual TLS and certificate authentication.
	TLSClientCA string
	// TokensFile lists accepted bearer tokens by hash, certificate
	// mappings and revoked certificates (see the package documentation).
	TokensFile string
	// TenantURIPrefix: a client certificate with a URI SAN
	// "<prefix><tenant>" acts for that tenant with role client,
	// "<prefix><tenant>/admin" with role admin. Tenants may contain '/'
	// (multi-region tenants are "<region>/<name>"); a final "/admin" is
	// always the role. Empty disables URI mapping.
	TenantURIPrefix string
	// TenantFromCN maps a client certificate without a matching URI SAN or
	// cert: line to the tenant named by its Common Name, role client.
	TenantFromCN bool
	// ReloadInterval is how often Watch checks the files for changes; 0
	// means only on SIGHUP.
	ReloadInterval time.Duration
	// Insecure allows plaintext on a non-loopback address (CheckListen).
	Insecure bool
}

// RegisterFlags binds c's fields to flags of fs, c's values as defaults.
// idemd reads each also from IDEM_<FLAG>.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "server certificate chain (PEM); with --tls-key turns on TLS")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "server private key (PEM)")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", c.TLSClientCA, "CA bundle (PEM) for client certificates: turns on mutual TLS")
	fs.StringVar(&c.TokensFile, "tokens-file", c.TokensFile, "accepted bearer tokens (SHA-256 hashes), certificate mappings and revocations; reloaded on change and SIGHUP")
	fs.StringVar(&c.TenantURIPrefix, "tenant-uri-prefix", c.TenantURIPrefix, "client certificate URI SAN prefix naming the tenant (<prefix><tenant>[/admin])")
	fs.BoolVar(&c.TenantFromCN, "tenant-from-cn", c.TenantFromCN, "map a client certificate without a matching URI SAN to the tenant named by its CN")
	fs.DurationVar(&c.ReloadInterval, "credentials-reload-interval", c.ReloadInterval, "how often certificate and tokens files are checked for changes (0: only on SIGHUP)")
	fs.BoolVar(&c.Insecure, "insecure", c.Insecure, "allow plaintext gRPC on a non-loopback address")
}

// DefaultConfig is the configuration without TLS or authentication.
func DefaultConfig() Config {
	return Config{TenantURIPrefix: DefaultTenantURIPrefix, ReloadInterval: 10 * time.Second}
}

// TLS reports whether the server serves TLS.
func (c Config) TLS() bool { return c.TLSCert != "" }

// Enabled reports whether callers must authenticate.
func (c Config) Enabled() bool { return c.TLSClientCA != "" || c.TokensFile != "" }

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("idem: --tls-cert and --tls-key must be given together")
	}
	if c.TLSClientCA != "" && !c.TLS() {
		return fmt.Errorf("idem: --tls-client-ca needs --tls-cert and --tls-key")
	}
	if c.TenantFromCN && c.TLSClientCA == "" {
		// Accepted, it would map nothing: no client certificate is asked for.
		return fmt.Errorf("idem: --tenant-from-cn maps client certificates: it needs --tls-client-ca")
	}
	if c.ReloadInterval < 0 {
		return fmt.Errorf("idem: --credentials-reload-interval %v is negative (0: only on SIGHUP)", c.ReloadInterval)
	}
	return nil
}
