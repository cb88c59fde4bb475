// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// c10m impairment program: drops a configured fraction of the IP frames that
// leave or arrive at an interface (tc clsact egress or ingress, direct action;
// each attachment is a load of its own, with its own rate and counters), so a
// test bed can emulate a lossy path without netem. ARP and other non-IP frames
// always pass: only the path's data is impaired, not neighbour resolution.
//
//   IPv4 or IPv6 frame   -> counted in `seen`; with probability
//                           config.loss_ppm / 1,000,000 counted in `dropped`
//                           and dropped (TC_ACT_STOLEN), else passed on
//   anything else        -> passed on, not counted
//
// TC_ACT_STOLEN, not TC_ACT_SHOT: a shot frame makes dev_queue_xmit return
// NET_XMIT_DROP to the sender, and Linux TCP then treats it as local
// congestion (it keeps the segment unsent, retries it at once and enters CWR),
// and ping sends again: nothing like a frame lost on the path. A stolen frame
// is freed with NET_XMIT_SUCCESS, so the sender believes it left, as it would
// on a real lossy link. (On ingress the two are alike: the frame is gone.)
//
// Frames, not buffers: Linux TCP hands the device GSO buffers of many segments
// whatever the interface's GSO setting (it is segmented after this hook), and
// GRO merges received frames before the ingress hook; dropping one would lose a
// burst. The loader sets the interface's gso_max_segs to 1 (egress) or its GRO
// off (ingress) while the filter is on, so each buffer here is one frame; a
// buffer that still carries several is counted as its gso_segs frames.
//
// The draw is bpf_get_prandom_u32() scaled to [0, 1,000,000) by a multiply
// and shift (no division, bias below 1e-3 ppm). The configuration is one
// array entry the loader rewrites in place, so the rate changes without
// reattaching; counters are per CPU and summed by the loader.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct impair_config {
	__u32 loss_ppm;
};

struct impair_counters {
	__u64 seen;
	__u64 dropped;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct impair_config);
} impair_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct impair_counters);
} impair_counts SEC(".maps");

SEC("tc")
int impair(struct __sk_buff *skb)
{
	__u32 zero = 0;

	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	struct impair_config *config = bpf_map_lookup_elem(&impair_config, &zero);
	struct impair_counters *counts = bpf_map_lookup_elem(&impair_counts, &zero);
	if (!config || !counts)
		return TC_ACT_OK;
	__u32 frames = skb->gso_segs > 1 ? skb->gso_segs : 1;
	counts->seen += frames;
	__u64 draw = ((__u64)bpf_get_prandom_u32() * 1000000) >> 32;
	if (draw < config->loss_ppm) {
		counts->dropped += frames;
		return TC_ACT_STOLEN;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
