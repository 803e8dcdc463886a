package turn

import (
	"net"
	"testing"
)

func TestPeerPolicyDefaults(t *testing.T) {
	p, err := NewPeerPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused := []string{
		"0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255",
		"192.168.1.1", "100.64.0.1", "100.127.255.255", "169.254.169.254", "224.0.0.1", "239.255.255.250",
		"255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "192.0.0.170",
		"::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
		"::ffff:169.254.169.254", "::127.0.0.1", "::10.0.0.1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0",
		"ff02::1", "ff0e::1", "64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:7f00:1::1", "2001:0:4136:e378::1",
		"2001:db8::1", "100::1", "fec0::1",
	}
	for _, s := range refused {
		ip := net.ParseIP(s)
		if ip == nil {
			// zone form
			host, _, _ := net.SplitHostPort("[" + s + "]:1")
			ip = net.ParseIP(host)
			if ip == nil {
				ip = net.ParseIP("fe80::1")
			}
		}
		if p.Allowed(ip) {
			t.Errorf("%s was allowed", s)
		}
	}
	allowed := []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "::ffff:8.8.8.8", "2606:4700::1111", "2a00:1450::1"}
	for _, s := range allowed {
		if !p.Allowed(net.ParseIP(s)) {
			t.Errorf("%s was refused", s)
		}
	}
	if p.Allowed(nil) || p.Allowed(net.IP{1, 2, 3}) {
		t.Error("malformed addresses must be refused")
	}
}

func TestPeerPolicyLists(t *testing.T) {
	p, err := NewPeerPolicy([]string{"127.0.0.0/8", "10.0.0.5"}, []string{"8.8.4.0/24", "127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{
		"127.0.0.1":        true,  // allow-listed
		"::ffff:127.0.0.1": true,  // allow-listed, mapped form
		"127.0.0.2":        false, // deny beats allow
		"10.0.0.5":         true,
		"10.0.0.6":         false, // still private
		"8.8.4.4":          false, // denied public
		"::ffff:8.8.4.4":   false, // denied, mapped form
		"8.8.8.8":          true,
		"::1":              false, // v6 loopback is not in the allow-list
	}
	for s, want := range cases {
		if got := p.Allowed(net.ParseIP(s)); got != want {
			t.Errorf("%s: got %v, want %v", s, got, want)
		}
	}
	if _, err := NewPeerPolicy([]string{"not-a-cidr"}, nil); err == nil {
		t.Error("bad allow entry accepted")
	}
}

func FuzzPeerPolicy(f *testing.F) {
	p, _ := NewPeerPolicy(nil, nil)
	f.Add([]byte{127, 0, 0, 1})
	f.Add([]byte(net.ParseIP("::ffff:127.0.0.1")))
	f.Fuzz(func(t *testing.T, b []byte) {
		ip := net.IP(b)
		if p.Allowed(ip) {
			if v4 := ip.To4(); v4 != nil && (v4.IsLoopback() || v4.IsPrivate() || v4.IsUnspecified()) {
				t.Fatalf("allowed %v", ip)
			}
			if ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
				t.Fatalf("allowed %v", ip)
			}
		}
	})
}
