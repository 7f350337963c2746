// Command cnet is a CNI plugin (spec 1.0.0 and 1.1.0) over libcnet: a
// bridge network whose containers get their address from cnet's IPAM
// store (a file store by default, or etcd). A runtime (podman, containerd,
// CRI-O) executes it once per call: the verb in CNI_COMMAND, the network
// configuration on stdin, the result or error as JSON on stdout.
//
//	ADD    ensure the bridge, attach the container (veth, address, route):
//	       rolled back on any failure; prints a CNI result
//	DEL    detach: fine when the namespace, link or address is gone
//	CHECK  the container is as ADD made it and as prevResult says
//	GC     release addresses of attachments not in cni.dev/valid-attachments
//	STATUS the store can be read
//	VERSION
//
// Every call is a new process: nothing is kept between calls besides the
// kernel's objects and the store.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Stdin, os.Stdout, os.Getenv))
}

// run executes one call; its exit status.
func run(stdin io.Reader, stdout io.Writer, env func(string) string) int {
	cmd := env("CNI_COMMAND")
	out, e := dispatch(cmd, stdin, env)
	if e != nil {
		if e.CNIVersion == "" {
			e.CNIVersion = supportedVersions[len(supportedVersions)-1]
		}
		writeJSON(stdout, e)
		fmt.Fprintf(os.Stderr, "cnet: %s: %s\n", cmd, e.Msg)
		return 1
	}
	if out != nil {
		writeJSON(stdout, out)
	}
	return 0
}

func writeJSON(w io.Writer, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"code":999,"msg":"cannot encode the answer"}`)
	}
	_, _ = w.Write(append(b, '\n'))
}

func dispatch(cmd string, stdin io.Reader, env func(string) string) (interface{}, *Error) {
	data, err := io.ReadAll(stdin)
	if err != nil {
		return nil, newError(ErrIO, "failed to read stdin", err.Error())
	}
	if cmd == "VERSION" {
		return versionInfo(data), nil
	}
	conf, e := parseConf(data)
	if e != nil {
		return nil, e
	}
	withVersion := func(out interface{}, e *Error) (interface{}, *Error) {
		if e != nil {
			e.CNIVersion = conf.CNIVersion
		}
		return out, e
	}
	switch cmd {
	case "ADD":
		return withVersion(cmdAdd(conf, env))
	case "DEL":
		return withVersion(nil, cmdDel(conf, env))
	case "CHECK":
		return withVersion(nil, cmdCheck(conf, env))
	case "GC":
		return withVersion(nil, cmdGC(conf))
	case "STATUS":
		return withVersion(nil, cmdStatus(conf))
	case "":
		return withVersion(nil, newError(ErrInvalidEnv, "CNI_COMMAND is not set", ""))
	default:
		return withVersion(nil, newError(ErrInvalidEnv, fmt.Sprintf("CNI_COMMAND %q is not a CNI verb", cmd), ""))
	}
}

// versionInfo answers VERSION (stdin's cniVersion, when given, echoed).
func versionInfo(data []byte) interface{} {
	var req struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(data, &req)
	v := req.CNIVersion
	if v == "" {
		v = supportedVersions[len(supportedVersions)-1]
	}
	return map[string]interface{}{"cniVersion": v, "supportedVersions": supportedVersions}
}
