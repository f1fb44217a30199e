package idemd

import "runtime/debug"

// version is set at build time with
// -ldflags "-X github.com/idemhq/idem/server/idemd.version=v1.2.3".
var version string

// Version is idemd's version: the one set at build time, else the main
// module's from the build information, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
