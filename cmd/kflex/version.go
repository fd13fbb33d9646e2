package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	commands["version"] = command{summary: "print kflex's version (also: kflex --version)", run: runVersion}
}

// versionInfo is kflex version's output, and its JSON form.
type versionInfo struct {
	Version   string `json:"version"`            // the module's version, "(devel)" for a build from a checkout
	Revision  string `json:"revision,omitempty"` // the VCS revision, when the build recorded one
	Time      string `json:"revision_time,omitempty"`
	Modified  bool   `json:"modified"` // the checkout had uncommitted changes
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

func runVersion(args []string, out io.Writer) error {
	fs := newFlags("version", "[--json]", `Print kflex's version: the module version it was built as ("(devel)" for a
build from a checkout), the VCS revision when the build recorded one (go build
in a git checkout, without -buildvcs=false), and the Go toolchain.`, out)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	v := readVersion(bi)
	if *asJSON {
		return writeJSON(out, v)
	}
	fmt.Fprintln(out, v)
	return nil
}

// readVersion reads what bi (nil: no build information) says of the build.
func readVersion(bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: "(unknown)", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return v
	}
	v.GoVersion = bi.GoVersion
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v versionInfo) String() string {
	s := "kflex " + v.Version
	if v.Revision != "" {
		s += ", revision " + v.Revision
		if v.Time != "" {
			s += " (" + v.Time + ")"
		}
		if v.Modified {
			s += ", modified"
		}
	}
	return s + ", " + v.GoVersion + " " + v.Platform
}
