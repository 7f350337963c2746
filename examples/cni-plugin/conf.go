package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
)

// Versions of the CNI spec this plugin speaks (the result is the 1.0.0
// shape, which 1.1.0 keeps).
var supportedVersions = []string{"1.0.0", "1.1.0"}

// NetConf is the network configuration of a `cnet` plugin (one entry of a
// conflist's "plugins", with what the runtime adds: runtimeConfig,
// prevResult, cni.dev/valid-attachments).
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// The bridge's name (default "cni0") and the MTU of the bridge and of
	// every veth (0: 1500).
	Bridge string `json:"bridge"`
	MTU    uint32 `json:"mtu"`
	// The node subnet ("10.244.1.0/24"), with an optional range and
	// gateway; or, instead of Subnet, the cluster network the node leases
	// its subnet from (NodeSubnetLen, Node: default the host name).
	Subnet          string `json:"subnet"`
	RangeStart      string `json:"rangeStart"`
	RangeEnd        string `json:"rangeEnd"`
	Gateway         string `json:"gateway"`
	ClusterNetwork  string `json:"clusterNetwork"`
	NodeSubnetLen   uint8  `json:"nodeSubnetLen"`
	Node            string `json:"node"`
	LeaseTTLSeconds uint64 `json:"leaseTTLSeconds"`
	// Where addresses are kept: a file store directory (default
	// /run/cni/cnet) or etcd.
	Store StoreConf `json:"store"`
	// Masquerade what the containers send beyond the cluster network
	// (clusterNetwork, else the node subnet).
	IPMasq bool `json:"ipMasq"`

	RuntimeConfig struct {
		IPs []string `json:"ips"`
		Mac string   `json:"mac"`
	} `json:"runtimeConfig"`
	PrevResult       json.RawMessage `json:"prevResult"`
	ValidAttachments []Attachment    `json:"cni.dev/valid-attachments"`
}

// StoreConf names the IPAM store.
type StoreConf struct {
	Dir  string    `json:"dir"`
	Etcd *EtcdConf `json:"etcd"`
}

// EtcdConf is an etcd store: endpoints of one cluster, keys under Prefix.
type EtcdConf struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	TimeoutMs uint64   `json:"timeoutMs"`
	CAFile    string   `json:"caFile"`
	CertFile  string   `json:"certFile"`
	KeyFile   string   `json:"keyFile"`
}

// Attachment is one entry of cni.dev/valid-attachments.
type Attachment struct {
	ContainerID string `json:"containerID"`
	Ifname      string `json:"ifname"`
}

// DefaultStoreDir is the file store's directory when the config names
// none: under /run, a tmpfs cleared at boot, because container addresses
// describe namespaces and veths that never survive a reboot (host-local's
// files under /var/lib/cni do, and block those addresses after a reboot:
// podman issues 3759 and 5433). A node lease from clusterNetwork kept in
// a file store is this node's alone and is taken again after a reboot.
const DefaultStoreDir = "/run/cni/cnet"

// parseConf decodes and validates stdin's network configuration.
func parseConf(data []byte) (*NetConf, *Error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, newError(ErrDecode, "failed to decode the network configuration", err.Error())
	}
	if c.CNIVersion == "" {
		return nil, newError(ErrInvalidConfig, "the network configuration has no cniVersion", "")
	}
	if !versionSupported(c.CNIVersion) {
		return nil, newError(ErrIncompatibleVersion,
			fmt.Sprintf("cniVersion %q is not supported", c.CNIVersion),
			"supported: "+strings.Join(supportedVersions, ", "))
	}
	if c.Bridge == "" {
		c.Bridge = "cni0"
	}
	if len(c.Bridge) > 15 {
		return nil, newError(ErrInvalidConfig, fmt.Sprintf("bridge name %q is longer than 15 bytes", c.Bridge), "")
	}
	switch {
	case c.Subnet != "" && c.ClusterNetwork != "":
		return nil, newError(ErrInvalidConfig, "give either subnet or clusterNetwork, not both", "")
	case c.Subnet != "":
		if _, _, err := net.ParseCIDR(c.Subnet); err != nil {
			return nil, newError(ErrInvalidConfig, fmt.Sprintf("subnet %q is not a CIDR", c.Subnet), err.Error())
		}
	case c.ClusterNetwork != "":
		if _, _, err := net.ParseCIDR(c.ClusterNetwork); err != nil {
			return nil, newError(ErrInvalidConfig, fmt.Sprintf("clusterNetwork %q is not a CIDR", c.ClusterNetwork), err.Error())
		}
		if c.Node == "" {
			h, err := os.Hostname()
			if err != nil {
				return nil, newError(ErrInvalidConfig, "no node name given and the host name is unreadable", err.Error())
			}
			c.Node = h
		}
		if c.LeaseTTLSeconds == 0 {
			c.LeaseTTLSeconds = 24 * 3600
		}
	default:
		return nil, newError(ErrInvalidConfig, "the network configuration needs subnet or clusterNetwork", "")
	}
	if c.Store.Etcd != nil {
		if c.Store.Dir != "" {
			return nil, newError(ErrInvalidConfig, "give either store.dir or store.etcd, not both", "")
		}
		if len(c.Store.Etcd.Endpoints) == 0 {
			return nil, newError(ErrInvalidConfig, "store.etcd has no endpoints", "")
		}
		if c.Store.Etcd.Prefix == "" {
			c.Store.Etcd.Prefix = "/cnet"
		}
		if c.Store.Etcd.TimeoutMs == 0 {
			c.Store.Etcd.TimeoutMs = 5000
		}
	} else if c.Store.Dir == "" {
		c.Store.Dir = DefaultStoreDir
	}
	return &c, nil
}

func versionSupported(v string) bool {
	for _, s := range supportedVersions {
		if s == v {
			return true
		}
	}
	return false
}

// cniArgs is what CNI_ARGS asks for ("IgnoreUnknown=1;IP=10.244.1.9;
// MAC=02:42:…", as podman passes --ip and --mac-address).
type cniArgs struct{ IP, MAC string }

// parseCNIArgs reads CNI_ARGS. Unknown keys are an error unless
// IgnoreUnknown is true.
func parseCNIArgs(s string) (a cniArgs, e *Error) {
	if s == "" {
		return a, nil
	}
	ignore := false
	var unknown []string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return a, newError(ErrInvalidEnv, fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", kv), "")
		}
		switch k {
		case "IgnoreUnknown":
			ignore = v == "1" || strings.EqualFold(v, "true")
		case "IP":
			a.IP = v
		case "MAC":
			a.MAC = v
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 && !ignore {
		return a, newError(ErrUnsupportedField, "CNI_ARGS: unknown keys "+strings.Join(unknown, ", "),
			"set IgnoreUnknown=1 to ignore them")
	}
	return a, nil
}

// requestedIP is the address asked for: runtimeConfig.ips first, then
// CNI_ARGS IP (plain or with a prefix). "" when none.
func (c *NetConf) requestedIP(argsIP string) (string, *Error) {
	want := argsIP
	if len(c.RuntimeConfig.IPs) > 1 {
		return "", newError(ErrInvalidConfig, "runtimeConfig.ips: cnet gives one address per interface", "")
	}
	if len(c.RuntimeConfig.IPs) == 1 {
		want = c.RuntimeConfig.IPs[0]
	}
	if want == "" {
		return "", nil
	}
	ip := net.ParseIP(want)
	if ip == nil {
		var err error
		ip, _, err = net.ParseCIDR(want)
		if err != nil {
			return "", newError(ErrInvalidConfig, fmt.Sprintf("requested address %q is not an IP address", want), "")
		}
	}
	return ip.String(), nil
}

// requestedMAC is runtimeConfig.mac, else CNI_ARGS MAC, checked.
func (c *NetConf) requestedMAC(argsMAC string) (string, *Error) {
	want := argsMAC
	if c.RuntimeConfig.Mac != "" {
		want = c.RuntimeConfig.Mac
	}
	if want == "" {
		return "", nil
	}
	hw, err := net.ParseMAC(want)
	if err != nil || len(hw) != 6 {
		return "", newError(ErrInvalidConfig, fmt.Sprintf("requested MAC %q is not a MAC address", want), "")
	}
	return hw.String(), nil
}
