// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// c10m steering program: sends the dataplane's frames to its AF_XDP sockets
// and everything else to the kernel, untouched.
//
//   Ethernet
//     802.1Q / 802.1ad tag (any VLAN)                  -> XDP_PASS, counted as vlan
//     ARP, target protocol address in `addrs`          -> XSK of this rx queue
//     IPv4, not a fragment
//       ICMP to an address in `addrs`                  -> XSK
//       TCP/UDP, (daddr, proto, dport) in `services`   -> XSK
//         TCP SYN whose service and queue say cookie  -> SYN-ACK out (redirect)
//       TCP/UDP, (proto, daddr) in a prefix of `prefixes` -> XSK, or for a
//         tallied prefix: counted by TCP flags, XDP_DROP
//       malformed (IHL < 5, L4 header cut short)
//         to an address in `addrs`                     -> XDP_DROP
//         to any other address                         -> XDP_PASS, counted as error
//   IPv6
//     TCP or ICMPv6 to an address in `addrs6`          -> XSK
//       TCP SYN whose service (`services6`) and queue say cookie -> SYN-ACK out
//     UDP, (daddr, proto, dport) in `services6`        -> XSK
//     an extension header or fragment to such an address -> XSK (the stack
//       drops and counts it: `extension_header`, `fragment`)
//     neighbour solicitation whose target is in `addrs6` (to its solicited-node
//       group, which the kernel's own addresses may share) -> XSK
//     version not 6, to an address in `addrs6`         -> XDP_DROP
//   anything else                                      -> XDP_PASS
//
// "-> XSK" is bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS): when no
// socket is registered for the queue the frame goes to the kernel and is
// counted as `no_xsk`. Each frame is counted exactly once in `counters`.
// IPv4 fragments (MF set or a non-zero offset) always go to the kernel: only
// the first fragment carries ports, and the dataplane does not reassemble.
// VLAN-tagged frames always go to the kernel too, whatever they carry: the
// stack does not parse tags, so steering them would only get them dropped,
// while the kernel's VLAN interfaces (e.g. dut0.100) keep working.
//
// Addresses and ports in the map keys are in network byte order, exactly as
// they appear on the wire, so the program never swaps bytes. The Rust loader
// (ebpf/src/maps.rs) builds keys with the same layout.
//
// SYN cookies. A TCP service's value says whether the program answers its SYNs
// itself (`off`, `auto`, `always`, as the listener's --syn-cookies), with the
// cookie SYN-ACK the stack would send (stack/src/cookie.rs): same SipHash-1-3
// cookie, MSS option alone, IPv4 or IPv6 fields as smoltcp writes them (IPv6
// services: `services6`, the same values). It is sent back
// out of the interface it came in on (bpf_redirect to ingress_ifindex) and
// counted in `cookies`; the client's ACK goes to the socket like any segment,
// and the stack validates it and makes the connection. The two paths share the
// cookie through `cookie_keys`: per rx queue (each worker's stack has its own
// secret) the worker publishes the current 64-second period's SipHash keys,
// its parity and whether it is under pressure (a full backlog or half-open
// budget: then `auto` services get cookies here), on a change only, from its
// periodic control work. A frame is answered only if it is a SYN alone (not
// ACK, RST or FIN), to a unicast MAC, IPv4 with IHL 5 or IPv6 with no extension
// header, no data, the checksums right and
// options smoltcp accepts, and the queue's worker has published its keys;
// anything else goes on to the socket, whose stack decides as before.
//
// Cost: about 140 ns more than steering a frame (BPF_PROG_TEST_RUN, no
// options), 260 ns with MSS, window scale, SACK and timestamps (an IPv6 SYN
// with them: 340 ns, the longer hash and checksum), against 6-7 us
// of the worker's core per SYN through AF_XDP copy mode and the stack. The
// work runs where XDP runs: on a NIC, the rx queue's interrupt core (usually
// the worker's own, but with no copy, socket or ring); on veth, in the
// sender's NAPI context, so a veth peer's flood is paid for by the peer's CPU.
// On veth the answer reaches the peer only if the peer has NAPI (GRO on, or an
// XDP program): scripts/testbed turns gen0's GRO on. Measured there
// (c10m-bench compare --scenarios flood, bench/RESULTS.md): with userspace
// cookies alone the worker's core saturated and the echo connection kept 3% of
// its round trips; with this path, at 150,000 SYNs/s, every SYN was answered
// here and the echo connection kept its round-trip rate.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Upper bound on rx queues; the loader keeps the same constant (MAX_QUEUES).
#define MAX_QUEUES 256
#define MAX_SERVICES 4096
#define MAX_ADDRS 64
#define MAX_PREFIXES 64

// SYN cookies (see the header comment and stack/src/cookie.rs).
#define COOKIE_OFF 0
#define COOKIE_AUTO 1
#define COOKIE_ALWAYS 2
#define KEYS_READY 1    // the worker of this queue published its keys and answers SYNs
#define KEYS_PARITY 2   // the period's parity (bit 2 of every cookie)
#define KEYS_PRESSURE 4 // the worker is under pressure: `auto` services get cookies here
#define OUR_MSS 1460    // what the stack announces (1500-byte MTU)
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_FIN 0x01

#define ARPHRD_ETHER 1
#define ARP_REQUEST_OR_REPLY_HLEN 28
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct service_key {
	__u32 addr;  // IPv4 destination, network order
	__u16 port;  // TCP/UDP destination port, network order
	__u8 proto;  // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;    // always zero
};

// LPM trie key: prefixlen counts bits of (proto, pad, addr); a prefix of
// length L on the address is stored with prefixlen 32 + L and pad zero.
struct prefix_key {
	__u32 prefixlen;
	__u8 proto;   // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad[3];  // always zero
	__u32 addr;   // IPv4 destination, network order
};

// The value of a service: whether and how its SYNs are answered with a cookie here.
struct service_value {
	__u16 window;  // the SYN-ACK's window, host order (min(rx_buf, 65535))
	__u8 cookies;  // COOKIE_OFF, COOKIE_AUTO or COOKIE_ALWAYS
	__u8 pad;      // always zero
};

// One rx queue's SipHash-1-3 keys for the current cookie period, published by the
// worker of that queue; read and written under the lock (userspace: BPF_F_LOCK), so
// the program never sees half of a new key.
struct cookie_keys {
	struct bpf_spin_lock lock;
	__u32 flags;   // KEYS_READY | KEYS_PARITY | KEYS_PRESSURE
	__u64 k0;
	__u64 k1;
};

struct counters {
	__u64 steered; // handed to an XSK (bpf_redirect_map said XDP_REDIRECT)
	__u64 passed;  // not for the dataplane: XDP_PASS
	__u64 no_xsk;  // for the dataplane, but no XSK on this rx queue: XDP_PASS
	__u64 dropped; // malformed and addressed to the dataplane: XDP_DROP
	__u64 errors;  // malformed, not known to be ours: XDP_PASS
	__u64 vlan;    // 802.1Q/802.1ad tagged: XDP_PASS (the stack has no VLANs)
	__u64 cookies; // SYN answered here with a cookie SYN-ACK: XDP_REDIRECT to itself
	// To a tallied prefix, by TCP flags (UDP: other): XDP_DROP.
	__u64 tallied_syn_ack;
	__u64 tallied_rst;
	__u64 tallied_other;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct service_key);
	__type(value, struct service_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct cookie_keys);
} cookie_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ADDRS);
	__type(key, __u32);
	__type(value, __u32);
} addrs SEC(".maps");

// An IPv6 address, wire order.
struct addr6 {
	__u8 b[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ADDRS);
	__type(key, struct addr6);
	__type(value, __u32);
} addrs6 SEC(".maps");

// An IPv6 service: its TCP SYN-cookie settings (IPv6 TCP to an address in `addrs6`
// goes to the stack whatever its port) or a UDP port steered.
struct service6_key {
	struct addr6 addr; // IPv6 destination, wire order
	__u16 port;        // destination port, network order
	__u8 proto;        // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;          // always zero
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct service6_key);
	__type(value, struct service_value);
} services6 SEC(".maps");

// Whole destination prefixes steered for one protocol (e.g. a client's source
// range, whose replies come back to many addresses and ports). The value says
// what happens to their frames: PREFIX_STEER to the AF_XDP socket, PREFIX_TALLY
// counted by TCP flags and dropped (a flood generator's spoofed sources: what
// came back is counted without a copy to userspace).
#define PREFIX_STEER 1
#define PREFIX_TALLY 2
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct prefix_key);
	__type(value, __u32);
} prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} counters SEC(".maps");

// The fixed part of an Ethernet/IPv4 ARP packet (RFC 826), up to the
// target protocol address, which is all the program reads.
struct arp_eth_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 oper;
	__u8 sha[ETH_ALEN];
	__be32 spa;
	__u8 tha[ETH_ALEN];
	__be32 tpa;
} __attribute__((packed));

static __always_inline int is_addr(__u32 addr)
{
	return bpf_map_lookup_elem(&addrs, &addr) != NULL;
}

static __always_inline int to_xsk(struct xdp_md *ctx, struct counters *c)
{
	int action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

	if (action == XDP_REDIRECT)
		c->steered++;
	else
		c->no_xsk++;
	return action;
}

static __always_inline int pass(__u64 *counter)
{
	(*counter)++;
	return XDP_PASS;
}

static __always_inline int drop(struct counters *c)
{
	c->dropped++;
	return XDP_DROP;
}

// A frame to a tallied prefix: counted by its TCP flags, dropped.
static __always_inline int tally(struct counters *c, __u8 proto, void *l4, void *end)
{
	__u8 *flags = l4 + 13;

	if (proto != IPPROTO_TCP || (void *)(flags + 1) > end)
		c->tallied_other++;
	else if (*flags & TCP_RST)
		c->tallied_rst++;
	else if ((*flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
		c->tallied_syn_ack++;
	else
		c->tallied_other++;
	return XDP_DROP;
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                 \
	do {                                                                     \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);        \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                           \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                           \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);        \
	} while (0)

// SipHash-1-3 of `words` 64-bit words and one byte (8 * words + 1 bytes), as the Rust
// `siphasher` crate computes write_u64(m[0]) ... write_u8(last); finish(): the words
// are taken little-endian (their numeric value on x86 and in BPF), the last block
// holds the byte and the total length in its top byte. `words` is a constant at each
// call: the loop unrolls.
static __always_inline __u64 siphash13(__u64 k0, __u64 k1, const __u64 *m, int words,
				       __u8 last)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL;
	__u64 v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL;
	__u64 v3 = k1 ^ 0x7465646279746573ULL;
	__u64 b = ((__u64)(words * 8 + 1) << 56) | last;

#pragma unroll
	for (int i = 0; i < 5; i++) {
		if (i >= words)
			break;
		v3 ^= m[i];
		SIPROUND;
		v0 ^= m[i];
	}
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

// The stack's `mss_index`: the largest of 536, 1220, 1440, 1460 not above the
// client's MSS (536 when it sent none, or 0) and ours.
static __always_inline __u32 mss_index(__u32 mss)
{
	if (mss >= 1460)
		return 3;
	if (mss >= 1440)
		return 2;
	if (mss >= 1220)
		return 1;
	return 0;
}

// The walk over a SYN's TCP options (copied out of the frame), one option per
// bpf_loop step: the verifier checks the step once, not once per option.
struct options_walk {
	__u8 bytes[40];
	__u32 len;  // option bytes in `bytes`
	__u32 off;  // where the next option starts
	int mss;    // the MSS option's value (0: none yet), or -1: malformed
};

static long options_step(__u32 i, void *arg)
{
	struct options_walk *w = arg;
	__u32 off = w->off;

	if (off >= w->len || off >= sizeof(w->bytes))
		return 1;
	__u8 kind = w->bytes[off];
	if (kind == 0) // end of list
		return 1;
	if (kind == 1) { // no-operation
		w->off = off + 1;
		return 0;
	}
	if (off + 1 >= w->len || off + 1 >= sizeof(w->bytes))
		goto malformed;
	__u32 olen = w->bytes[off + 1];
	// smoltcp's `TcpOption::parse`: these lengths it refuses, the stack drops the SYN.
	if (olen < 2 || off + olen > w->len || (kind == 2 && olen != 4) ||
	    (kind == 3 && olen != 3) || (kind == 4 && olen != 2) || (kind == 8 && olen != 10) ||
	    (kind == 5 && (olen < 10 || ((olen - 2) & 7))))
		goto malformed;
	if (kind == 2) {
		if (off + 3 >= sizeof(w->bytes))
			goto malformed;
		w->mss = w->bytes[off + 2] << 8 | w->bytes[off + 3];
	}
	w->off = off + olen;
	return 0;
malformed:
	w->mss = -1;
	return 1;
}

// The client's MSS option (0: none) among the `len` option bytes of a TCP header at
// offset `l4`, or -1 when smoltcp would refuse the options (the stack then drops the
// SYN, so the program must not answer it).
static __always_inline int client_mss(struct xdp_md *ctx, __u32 l4, __u32 len)
{
	struct options_walk w = {};

	if (len == 0)
		return 0;
	if (len > sizeof(w.bytes) || bpf_xdp_load_bytes(ctx, l4 + 20, w.bytes, len))
		return -1;
	w.len = len;
	// At most 40 steps: each consumes at least one byte.
	bpf_loop(sizeof(w.bytes), options_step, &w, 0);
	return w.mss;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

// Ones'-complement sum of the 16-bit words of the `len` bytes (even, at most 60) at
// offset `l4`, a TCP header; -1 if cut short.
static __always_inline long tcp_sum(void *data, void *end, __u32 l4, __u32 len)
{
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 30; i++) {
		if (i * 2 >= len)
			break;
		__u16 *w = data + l4 + i * 2;
		if ((void *)(w + 1) > end)
			return -1;
		sum += *w;
	}
	return sum;
}

static __always_inline __u32 ip_sum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return sum;
}

// The addresses of a segment, whichever family: IPv4 ones in the first 4 bytes.
// Aligned: the verifier wants the stack read in aligned words.
struct addrs {
	struct addr6 src;
	struct addr6 dst;
} __attribute__((aligned(8)));

// The pseudo-header's sum for a TCP segment of `len` bytes between `a`'s addresses:
// RFC 9293 section 3.1 for IPv4, RFC 8200 section 8.1 for IPv6 (the same words for
// length and protocol, as zero words add nothing).
static __always_inline __u32 pseudo_sum(const struct addrs *a, int v6, __u32 len)
{
	const __u16 *s = (const __u16 *)a->src.b, *d = (const __u16 *)a->dst.b;
	__u32 sum = bpf_htons(IPPROTO_TCP) + bpf_htons(len);

#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (i >= (v6 ? 8 : 2))
			break;
		sum += s[i] + d[i];
	}
	return sum;
}

// The 64-bit big-endian number at `b`: half of an IPv6 address as the stack's
// `u128::to_bits` holds it.
static __always_inline __u64 be64_at(const __u8 *b)
{
	__u64 v = 0;

#pragma unroll
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

// The cookie, exactly as `CookieKeys::cookie` (stack/src/cookie.rs) computes it: a
// SipHash-1-3 of the addresses (IPv4: one word, remote << 32 | local; IPv6: each
// address a little-endian u128, low half first), then remote port, local port and
// ISN in one word, then the MSS index.
static __always_inline __u32 make_cookie(__u64 k0, __u64 k1, __u32 kflags, const struct addrs *a,
					 int v6, __u16 rport, __u16 lport, __u32 isn, __u32 idx)
{
	__u64 m[5];
	int words;

	if (v6) {
		m[0] = be64_at(a->src.b + 8);
		m[1] = be64_at(a->src.b);
		m[2] = be64_at(a->dst.b + 8);
		m[3] = be64_at(a->dst.b);
		words = 5;
	} else {
		m[0] = be64_at(a->src.b) >> 32 << 32 | be64_at(a->dst.b) >> 32;
		words = 2;
	}
	m[words - 1] = (__u64)rport << 48 | (__u64)lport << 32 | isn;
	__u64 mac = siphash13(k0, k1, m, words, idx);
	return ((__u32)mac & ~7U) | ((kflags & KEYS_PARITY) ? 4 : 0) | idx;
}

// A SYN to a service whose cookie mode says so, answered right here with the
// cookie SYN-ACK the stack's `send_cookie` would send (back out of the same
// interface, XDP_REDIRECT); -1 to let it go on to the socket as any other frame.
// The frame is IPv4 with IHL 5, not a fragment (`v6` 0), or IPv6 with TCP as its
// next header (`v6` 1; a constant at each call, so each family's code is its own).
static __always_inline int syn_cookie(struct xdp_md *ctx, struct counters *c,
				      const struct service_value *svc, int v6)
{
	const __u32 l4 = v6 ? 14 + 40 : 14 + 20;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct tcphdr *tcp = data + l4;

	if ((void *)(tcp + 1) > end)
		return -1;
	// SYN alone among SYN, ACK, RST and FIN, as the stack's `ingress_syn` sees it;
	// frames to a group address are the stack's (it answers from its own MAC).
	__u8 flags = ((__u8 *)tcp)[13];
	if ((flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) != TCP_SYN || eth->h_dest[0] & 1)
		return -1;
	__u32 queue = ctx->rx_queue_index;
	struct cookie_keys *keys = bpf_map_lookup_elem(&cookie_keys, &queue);
	if (!keys)
		return -1;
	bpf_spin_lock(&keys->lock);
	__u32 kflags = keys->flags;
	__u64 k0 = keys->k0;
	__u64 k1 = keys->k1;
	bpf_spin_unlock(&keys->lock);
	if (!(kflags & KEYS_READY) ||
	    !(svc->cookies == COOKIE_ALWAYS ||
	      (svc->cookies == COOKIE_AUTO && (kflags & KEYS_PRESSURE))))
		return -1;

	// What the stack would drop (and so not answer): bad checksums, malformed
	// options. A SYN carrying data goes to the stack too.
	__u32 doff = tcp->doff * 4;
	struct addrs a = {};
	if (v6) {
		struct ipv6hdr *ip6 = data + 14;
		if (bpf_ntohs(ip6->payload_len) != doff)
			return -1;
		__builtin_memcpy(&a.src, &ip6->saddr, 16);
		__builtin_memcpy(&a.dst, &ip6->daddr, 16);
	} else {
		struct iphdr *ip = data + 14;
		if (bpf_ntohs(ip->tot_len) != 20 + doff || fold(ip_sum(ip)) != 0xffff)
			return -1;
		__builtin_memcpy(a.src.b, &ip->saddr, 4);
		__builtin_memcpy(a.dst.b, &ip->daddr, 4);
	}
	if (doff < 20 || (void *)tcp + doff > end || tcp->source == 0 || tcp->dest == 0)
		return -1;
	long sum = tcp_sum(data, end, l4, doff);
	if (sum < 0 || fold(sum + pseudo_sum(&a, v6, doff)) != 0xffff)
		return -1;
	int mss = client_mss(ctx, l4, doff - 20);
	if (mss < 0)
		return -1;
	// Over IPv6 a segment carries 20 bytes less in the same MTU: the stack caps the
	// client's MSS at its own (`Syn::our_mss`) before it picks the index.
	__u32 our_mss = v6 ? OUR_MSS - 20 : OUR_MSS;
	if ((__u32)mss > our_mss)
		mss = our_mss;

	__u32 isn = bpf_ntohl(tcp->seq);
	__u16 rport = bpf_ntohs(tcp->source), lport = bpf_ntohs(tcp->dest);
	__u32 idx = mss_index(mss);
	__u32 cookie = make_cookie(k0, k1, kflags, &a, v6, rport, lport, isn, idx);

	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	__be16 sport = tcp->source, dport = tcp->dest;
	__u16 window = svc->window;

	const int len = l4 + 24;
	int delta = len - (int)(end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return -1; // the frame is unchanged: the stack answers it
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + len > end)
		return drop(c); // cannot happen: the tail was just set
	eth = data;
	tcp = data + l4;

	__builtin_memcpy(eth->h_dest, smac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dmac, ETH_ALEN);
	if (v6) {
		// IPv6 as smoltcp's `Ipv6Repr::emit` writes it: traffic class and flow
		// label 0, hop limit 64, no extension header.
		struct ipv6hdr *ip6 = data + 14;
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(24);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, &a.dst, 16);
		__builtin_memcpy(&ip6->daddr, &a.src, 16);
	} else {
		// IPv4 as smoltcp's `Ipv4Repr::emit` writes it: no options, DF, TTL 64.
		struct iphdr *ip = data + 14;
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(20 + 24);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000);
		ip->ttl = 64;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		__builtin_memcpy(&ip->saddr, a.dst.b, 4);
		__builtin_memcpy(&ip->daddr, a.src.b, 4);
		ip->check = ~fold(ip_sum(ip));
	}
	// TCP: SYN|ACK, the cookie, the client's ISN + 1, the MSS option alone.
	tcp->source = dport;
	tcp->dest = sport;
	tcp->seq = bpf_htonl(cookie);
	tcp->ack_seq = bpf_htonl(isn + 1);
	((__u8 *)tcp)[12] = 6 << 4;
	((__u8 *)tcp)[13] = TCP_SYN | TCP_ACK;
	tcp->window = bpf_htons(window);
	tcp->check = 0;
	tcp->urg_ptr = 0;
	*(__be32 *)(tcp + 1) = bpf_htonl(2 << 24 | 4 << 16 | our_mss);
	sum = tcp_sum(data, end, l4, 24);
	if (sum < 0)
		return drop(c);
	struct addrs back = {.src = a.dst, .dst = a.src};
	tcp->check = ~fold(sum + pseudo_sum(&back, v6, 24));
	c->cookies++;
	// Out of the interface it came in on. Not XDP_TX: on veth, frames sent with
	// XDP_TX wait in the peer's queue until something else wakes it, unless the
	// peer has an XDP program of its own (veth_xdp_flush), while a redirect to
	// the same device is flushed at the end of the poll. On a NIC the two differ
	// little: the driver's ndo_xdp_xmit rather than its XDP_TX ring.
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

#define ICMPV6_NEIGHBOUR_SOLICITATION 135

// The fixed part of a neighbour solicitation (RFC 4861 4.3), up to its target.
struct ns_head {
	__u8 type;
	__u8 code;
	__be16 sum;
	__u32 reserved;
	struct addr6 target;
};

// An IPv6 extension header (RFC 8200 section 4, IANA's list) or the fragment header:
// the stack's `is_extension` (stack/src/parse.rs) and 44. Frames to our address behind
// one go to the stack, which parses none of them but drops and counts them by name,
// where the kernel (which does not own the address) would drop them unseen.
static __always_inline int is_extension6(__u8 next)
{
	switch (next) {
	case 0: case 43: case 44: case 50: case 51: case 60: case 135: case 139: case 140:
	case 253: case 254:
		return 1;
	}
	return 0;
}

// IPv6 (RFC 8200). TCP and ICMPv6 to one of our addresses go to the stack, which
// answers echo and neighbour solicitations (smoltcp). Solicitations come to the
// target's solicited-node group (ff02::1:ffXX:XXXX, RFC 4291 2.7.1), which the
// kernel's own addresses may share: only those whose target is ours are taken.
static __always_inline int steer_ipv6(struct xdp_md *ctx, struct counters *c, void *l3,
				      void *end)
{
	struct ipv6hdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return pass(&c->errors);
	struct addr6 dst;
	__builtin_memcpy(&dst, &ip->daddr, sizeof(dst));
	if (bpf_map_lookup_elem(&addrs6, &dst)) {
		if (ip->version != 6)
			return drop(c);
		__u8 next = ip->nexthdr;
		if (next == IPPROTO_TCP || next == IPPROTO_UDP) {
			__be16 *ports = (void *)(ip + 1);
			if ((void *)(ports + 2) > end)
				return next == IPPROTO_TCP ? to_xsk(ctx, c) : drop(c);
			struct service6_key key = {.port = ports[1], .proto = next, .pad = 0};
			__builtin_memcpy(&key.addr, &dst, sizeof(dst));
			struct service_value *svc = bpf_map_lookup_elem(&services6, &key);
			if (svc && svc->cookies != COOKIE_OFF && next == IPPROTO_TCP) {
				int action = syn_cookie(ctx, c, svc, 1);
				if (action >= 0)
					return action;
			}
			if (svc || next == IPPROTO_TCP)
				return to_xsk(ctx, c);
			return pass(&c->passed);
		}
		if (next == IPPROTO_ICMPV6 || is_extension6(next))
			return to_xsk(ctx, c);
		return pass(&c->passed);
	}
	if (ip->nexthdr != IPPROTO_ICMPV6 || dst.b[0] != 0xff || dst.b[1] != 0x02)
		return pass(&c->passed);
	struct ns_head *ns = (void *)(ip + 1);
	if ((void *)(ns + 1) > end)
		return pass(&c->passed);
	if (ns->type != ICMPV6_NEIGHBOUR_SOLICITATION)
		return pass(&c->passed);
	struct addr6 target;
	__builtin_memcpy(&target, &ns->target, sizeof(target));
	if (bpf_map_lookup_elem(&addrs6, &target))
		return to_xsk(ctx, c);
	return pass(&c->passed);
}

SEC("xdp")
int steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct counters *c = bpf_map_lookup_elem(&counters, &zero);

	if (!c) // cannot happen for a one-entry array; keeps the verifier content
		return XDP_PASS;

	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	if (l3 > end)
		return pass(&c->errors);
	__be16 proto = eth->h_proto;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return pass(&c->vlan);

	if (proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = l3;
		if ((void *)(arp + 1) > end)
			return pass(&c->errors);
		if (arp->htype != bpf_htons(ARPHRD_ETHER) || arp->ptype != bpf_htons(ETH_P_IP) ||
		    arp->hlen != ETH_ALEN || arp->plen != 4 || !is_addr(arp->tpa))
			return pass(&c->passed);
		return to_xsk(ctx, c);
	}

	if (proto == bpf_htons(ETH_P_IPV6))
		return steer_ipv6(ctx, c, l3, end);
	if (proto != bpf_htons(ETH_P_IP))
		return pass(&c->passed);

	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return pass(&c->errors);
	__u32 daddr = ip->daddr;
	__u32 ihl = ip->ihl;

	if (ihl < 5 || ip->version != 4)
		return is_addr(daddr) ? drop(c) : pass(&c->errors);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return pass(&c->passed);

	// IHL-aware: options, if any, sit between the fixed header and L4.
	void *l4 = l3 + ihl * 4;

	if (ip->protocol == IPPROTO_ICMP) {
		if (!is_addr(daddr))
			return pass(&c->passed);
		if (l4 + 8 > end) // type, code, checksum, rest-of-header
			return drop(c);
		return to_xsk(ctx, c);
	}

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return pass(&c->passed);

	// TCP and UDP both start with source port, destination port.
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return is_addr(daddr) ? drop(c) : pass(&c->errors);

	struct service_key key = {
		.addr = daddr,
		.port = ports[1],
		.proto = ip->protocol,
		.pad = 0,
	};
	struct service_value *svc = bpf_map_lookup_elem(&services, &key);
	if (svc) {
		if (svc->cookies != COOKIE_OFF && ip->protocol == IPPROTO_TCP && ihl == 5) {
			int action = syn_cookie(ctx, c, svc, 0);
			if (action >= 0)
				return action;
		}
		return to_xsk(ctx, c);
	}
	struct prefix_key pkey = {
		.prefixlen = 64,
		.proto = ip->protocol,
		.pad = {0, 0, 0},
		.addr = daddr,
	};
	__u32 *how = bpf_map_lookup_elem(&prefixes, &pkey);
	if (how)
		return *how == PREFIX_TALLY ? tally(c, ip->protocol, l4, end) : to_xsk(ctx, c);
	return pass(&c->passed);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
