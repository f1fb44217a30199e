package idemd

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// serverSetting reads the SETTINGS frame idemd sends first on a new
// connection and returns the value of id (ok false: not sent, which HTTP/2
// reads as no bound).
func serverSetting(t *testing.T, addr string, id http2.SettingID) (n uint32, ok bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading idemd's SETTINGS: %v", err)
		}
		if s, isSettings := f.(*http2.SettingsFrame); isSettings && !s.IsAck() {
			return s.Value(id)
		}
	}
}

// One client connection cannot make idemd hold an unbounded number of
// calls (each a goroutine and its buffers): the bound is announced to
// clients, which queue calls past it instead of failing them.
func TestMaxStreamsFlag(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		want   uint32
		wantOK bool
	}{
		{nil, 1000, true},
		{[]string{"--max-streams", "7"}, 7, true},
		{[]string{"--max-streams", "0"}, 0, false},
	} {
		t.Run(strings.Join(append([]string{"args"}, tt.args...), " "), func(t *testing.T) {
			cfg, err := parse(t, tt.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Listen, cfg.Store = "127.0.0.1:0", "memory://"
			addr, stop, done := serveInBackground(t, cfg, newGate())
			defer func() { stop(); <-done }()
			n, ok := serverSetting(t, addr, http2.SettingMaxConcurrentStreams)
			if ok != tt.wantOK || n != tt.want {
				t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (sent %v), want %d (sent %v)", n, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestMaxStreamsRefusesNegative(t *testing.T) {
	_, err := parse(t, nil, map[string]string{"IDEM_MAX_STREAMS": "-1"})
	if err == nil || !strings.Contains(err.Error(), "IDEM_MAX_STREAMS") {
		t.Errorf("error = %v, want one naming IDEM_MAX_STREAMS", err)
	}
}
