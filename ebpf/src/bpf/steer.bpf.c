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
//       TCP/UDP, (proto, daddr) in a prefix of `prefixes` -> XSK
//       malformed (IHL < 5, L4 header cut short)
//         to an address in `addrs`                     -> XDP_DROP
//         to any other address                         -> XDP_PASS, counted as error
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

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Upper bound on rx queues; the loader keeps the same constant (MAX_QUEUES).
#define MAX_QUEUES 256
#define MAX_SERVICES 4096
#define MAX_ADDRS 64
#define MAX_PREFIXES 64

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

struct counters {
	__u64 steered; // handed to an XSK (bpf_redirect_map said XDP_REDIRECT)
	__u64 passed;  // not for the dataplane: XDP_PASS
	__u64 no_xsk;  // for the dataplane, but no XSK on this rx queue: XDP_PASS
	__u64 dropped; // malformed and addressed to the dataplane: XDP_DROP
	__u64 errors;  // malformed, not known to be ours: XDP_PASS
	__u64 vlan;    // 802.1Q/802.1ad tagged: XDP_PASS (the stack has no VLANs)
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
	__type(value, __u32);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ADDRS);
	__type(key, __u32);
	__type(value, __u32);
} addrs SEC(".maps");

// Whole destination prefixes steered for one protocol (e.g. a client's source
// range, whose replies come back to many addresses and ports).
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
	if (bpf_map_lookup_elem(&services, &key))
		return to_xsk(ctx, c);
	struct prefix_key pkey = {
		.prefixlen = 64,
		.proto = ip->protocol,
		.pad = {0, 0, 0},
		.addr = daddr,
	};
	if (bpf_map_lookup_elem(&prefixes, &pkey))
		return to_xsk(ctx, c);
	return pass(&c->passed);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
