package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestParseCNIArgs(t *testing.T) {
	a, e := parseCNIArgs("IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.244.1.9;MAC=02:42:0a:f4:01:09")
	if e != nil || a.IP != "10.244.1.9" || a.MAC != "02:42:0a:f4:01:09" {
		t.Fatalf("got %+v, %v", a, e)
	}
	if _, e := parseCNIArgs("FOO=1"); e == nil || e.Code != ErrUnsupportedField {
		t.Fatalf("unknown key: %v", e)
	}
	if _, e := parseCNIArgs("IP"); e == nil || e.Code != ErrInvalidEnv {
		t.Fatalf("no '=': %v", e)
	}
}

func TestParseConf(t *testing.T) {
	c, e := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"cnet","subnet":"10.244.1.0/24"}`))
	if e != nil || c.Bridge != "cni0" || c.Store.Dir != DefaultStoreDir {
		t.Fatalf("defaults: %+v %v", c, e)
	}
	for _, tc := range []struct {
		conf string
		code uint
	}{
		{`{`, ErrDecode},
		{`{"cniVersion":"0.4.0","subnet":"10.244.1.0/24"}`, ErrIncompatibleVersion},
		{`{"cniVersion":"1.0.0"}`, ErrInvalidConfig},
		{`{"cniVersion":"1.0.0","subnet":"10.244.1.0/33"}`, ErrInvalidConfig},
		{`{"cniVersion":"1.0.0","subnet":"10.244.1.0/24","clusterNetwork":"10.244.0.0/16"}`, ErrInvalidConfig},
		{`{"cniVersion":"1.0.0","subnet":"10.244.1.0/24","store":{"etcd":{}}}`, ErrInvalidConfig},
		{`{"cniVersion":"1.0.0","subnet":"10.244.1.0/24","bridge":"a-very-long-bridge-name"}`, ErrInvalidConfig},
	} {
		if _, e := parseConf([]byte(tc.conf)); e == nil || e.Code != tc.code {
			t.Errorf("%s: got %v, want code %d", tc.conf, e, tc.code)
		}
	}
}

func TestRequestedIPAndMAC(t *testing.T) {
	c := &NetConf{}
	c.RuntimeConfig.IPs = []string{"10.244.1.7/24"}
	if ip, e := c.requestedIP("10.244.1.8"); e != nil || ip != "10.244.1.7" {
		t.Fatalf("runtimeConfig first: %q %v", ip, e)
	}
	if _, e := (&NetConf{}).requestedIP("nonsense"); e == nil {
		t.Fatal("a bad address is an error")
	}
	if mac, e := (&NetConf{}).requestedMAC("02:42:0A:F4:01:09"); e != nil || mac != "02:42:0a:f4:01:09" {
		t.Fatalf("mac: %q %v", mac, e)
	}
}

func TestVersionAndErrorsAreSpecJSON(t *testing.T) {
	var out bytes.Buffer
	env := map[string]string{"CNI_COMMAND": "VERSION"}
	if rc := run(strings.NewReader(`{"cniVersion":"1.1.0"}`), &out, func(k string) string { return env[k] }); rc != 0 {
		t.Fatalf("VERSION exit %d", rc)
	}
	var v map[string]interface{}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v["cniVersion"] != "1.1.0" {
		t.Fatalf("VERSION: %s", out.String())
	}
	out.Reset()
	env["CNI_COMMAND"] = "ADD"
	if rc := run(strings.NewReader(`{`), &out, func(k string) string { return env[k] }); rc == 0 {
		t.Fatal("bad config must exit non-zero")
	}
	var e Error
	if err := json.Unmarshal(out.Bytes(), &e); err != nil || e.Code != ErrDecode || e.Msg == "" || e.CNIVersion == "" {
		t.Fatalf("error: %s", out.String())
	}
}
