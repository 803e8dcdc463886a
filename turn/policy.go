package turn

import (
	"fmt"
	"net"
	"net/netip"
)

// blocked are the peer ranges a relay refuses unless the allow-list names
// them: a TURN server must never be a way into the server's own host or
// network (coturn CVE-2020-26262 and CVE-2026-27624 were bypasses of such
// checks through 0.0.0.0, ::, ::1 and IPv4-mapped forms).
var blocked = mustPrefixes(
	// IPv4
	"0.0.0.0/8",       // "this network", includes 0.0.0.0
	"10.0.0.0/8",      // RFC 1918
	"100.64.0.0/10",   // carrier-grade NAT, RFC 6598
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local
	"172.16.0.0/12",   // RFC 1918
	"192.0.0.0/24",    // IETF protocol assignments
	"192.0.2.0/24",    // TEST-NET-1
	"192.88.99.0/24",  // 6to4 relay anycast
	"192.168.0.0/16",  // RFC 1918
	"198.18.0.0/15",   // benchmarking
	"198.51.100.0/24", // TEST-NET-2
	"203.0.113.0/24",  // TEST-NET-3
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, includes 255.255.255.255
	// IPv6
	"::/96", // unspecified, loopback and IPv4-compatible (::127.0.0.1)
	// IPv4-mapped addresses (::ffff:a.b.c.d) are unmapped and judged as IPv4.
	"64:ff9b::/96", // NAT64, may embed private IPv4
	"64:ff9b:1::/48",
	"100::/64",      // discard
	"2001::/32",     // Teredo, embeds IPv4
	"2001:db8::/32", // documentation
	"2002::/16",     // 6to4, embeds IPv4
	"fc00::/7",      // unique local, RFC 4193
	"fe80::/10",     // link-local
	"fec0::/10",     // site-local (deprecated)
	"ff00::/8",      // multicast
)

func mustPrefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

// PeerPolicy decides which peer addresses a client may relay to.
// Order: deny-list, then allow-list, then the built-in blocked ranges.
type PeerPolicy struct {
	allow, deny []netip.Prefix
}

// NewPeerPolicy parses allow and deny lists of CIDRs or single addresses.
func NewPeerPolicy(allow, deny []string) (*PeerPolicy, error) {
	p := &PeerPolicy{}
	var err error
	if p.allow, err = parsePrefixes("turn.allow_peers", allow); err != nil {
		return nil, err
	}
	if p.deny, err = parsePrefixes("turn.deny_peers", deny); err != nil {
		return nil, err
	}
	return p, nil
}

func parsePrefixes(key string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%w: %s: %q is neither a CIDR nor an IP address", ErrBadConfig, key, s)
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, pfx.Masked())
	}
	return out, nil
}

// Allowed reports whether relaying to ip is permitted.
func (p *PeerPolicy) Allowed(ip net.IP) bool {
	raw, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	raw = raw.WithZone("")
	addr := raw.Unmap()
	for _, a := range []netip.Addr{raw, addr} {
		if contains(p.deny, a) {
			return false
		}
	}
	if contains(p.allow, addr) || contains(p.allow, raw) {
		return true
	}
	if addr.IsLoopback() || addr.IsPrivate() || addr.IsUnspecified() || addr.IsMulticast() ||
		addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() || addr.IsInterfaceLocalMulticast() {
		return false
	}
	return !contains(blocked, addr)
}

func contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
