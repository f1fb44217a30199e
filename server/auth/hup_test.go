package auth

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// With TLS but no client authentication there are still files to reload:
// the server's certificate and key. A SIGHUP must rotate them, the only
// way to with --credentials-reload-interval=0.
func TestHUPReloadsCertificateWithoutClientAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	f := newFixture(t, "", func(c *Config) {
		c.TLSClientCA, c.TokensFile = "", ""
		c.ReloadInterval = 0
	})
	if f.auth.Enabled() {
		t.Fatal("Enabled() = true without a client CA or tokens file")
	}
	hup := make(chan os.Signal) // unbuffered: a send returns once watch took it
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.auth.watch(wctx, hup); close(done) }()
	defer func() { stop(); <-done }()

	before := f.auth.tls.Load()
	ca2 := newCA(t, "rotated CA")
	certPEM, keyPEM, _ := ca2.issue(t, leafOpts{cn: "idemd", server: true})
	writeFile(t, f.dir, "server.crt", certPEM)
	writeFile(t, f.dir, "server.key", keyPEM)
	for range 2 { // the second send waits for the first to be handled
		select {
		case hup <- os.Interrupt:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if f.auth.tls.Load() == before {
		t.Fatalf("server certificate not reloaded on SIGHUP with TLS and no client authentication")
	}
}

func TestConfigValidateNamesTheFlag(t *testing.T) {
	err := Config{ReloadInterval: -time.Second}.Validate()
	if err == nil || !strings.Contains(err.Error(), "--credentials-reload-interval") {
		t.Errorf("Validate() of a negative reload interval = %v, want an error naming --credentials-reload-interval", err)
	}
}
