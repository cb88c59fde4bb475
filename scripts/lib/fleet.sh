# shellcheck shell=bash
# The multi-host bed (`scripts/testbed up --hosts N`), sourced by scripts/testbed.
#
#   c10m-gen                c10m-router (BIRD, AS 65000)          c10m-hostK (K = 1..N)
#   gen0 198.18.0.1/24 <-> r-gen 198.18.0.254/24
#   lo: local 198.19.0.0/16     r-hK 198.18.K.1/24      <->       dut0 198.18.K.2/24 (kernel,
#                               ECMP route 198.18.100.10/32        BIRD AS 6500K announcing
#                               over every host announcing it      198.18.100.10/32 while the
#                                                                  host's /health is 200)
#
# The service address 198.18.100.10 is the dataplane's in every host (`--addr
# 198.18.100.10/16 --gateway 198.18.K.1`); each host's BIRD announces it with next hop
# 198.18.K.2 while scripts/lib/bird-health sees `GET /health` answer 200 on
# 127.0.0.1:9100 in that host. BGP timers: keepalive 1 s, hold 3 s, connect retry 1 s.
#
# The router hashes flows over the next hops with fib_multipath_hash_policy=1 (L4:
# addresses, protocol and ports). Two modes (`--mode`):
#   resilient (default)  BIRD exports its ECMP route to kernel table 100; scripts/lib/
#                        route-sync copies its next hops into a resilient next-hop group
#                        (id 1000, 512 buckets) that the main table's route uses: when a
#                        host leaves, only its buckets move, so no other host's flow does.
#   hash-threshold       BIRD exports the ECMP route to the main table: Linux's default
#                        multipath, where a change of next hops can move other flows.
# Processes the bed starts (a BIRD per namespace, bird-health per host, route-sync) are
# recorded in $FLEET_RUN and `down` stops exactly those, by pid.

FLEET_RUN=/run/c10m-bed
FLEET_SERVICE=198.18.100.10
FLEET_ROUTER_NS=c10m-router
FLEET_GEN_ADDR=198.18.0.1
FLEET_ROUTER_GEN_ADDR=198.18.0.254
FLEET_TABLE=100
FLEET_GROUP=1000
FLEET_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

fleet_host_ns() { echo "c10m-host$1"; }

# start_bird NS NAME CONFIG: BIRD in NS with its own control socket and pid file.
fleet_start_bird() {
  local ns=$1 name=$2
  ip netns exec "$ns" bird -c "$FLEET_RUN/$name.conf" -s "$FLEET_RUN/$name.ctl" \
    -P "$FLEET_RUN/$name.pid" 9>&-
}

fleet_router_conf() {
  local hosts=$1 mode=$2 table=254 k
  [[ $mode == resilient ]] && table=$FLEET_TABLE
  cat <<CONF
# The bed's router: one BGP session per host, ECMP into kernel table $table.
router id $FLEET_ROUTER_GEN_ADDR;
protocol device { scan time 1; }
protocol kernel {
  kernel table $table;
  merge paths on limit 8;
  ipv4 { import none; export where source = RTS_BGP; };
}
template bgp host {
  local as 65000;
  hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 2;
  ipv4 { import where net = $FLEET_SERVICE/32; export none; };
}
CONF
  for ((k = 1; k <= hosts; k++)); do
    echo "protocol bgp host$k from host { neighbor 198.18.$k.2 as $((65000 + k)); source address 198.18.$k.1; }"
  done
}

fleet_host_conf() {
  local k=$1
  cat <<CONF
# Host $k: announces the service address while bird-health enables "service".
router id 198.18.$k.2;
protocol device { scan time 1; }
protocol static service {
  disabled;
  ipv4;
  route $FLEET_SERVICE/32 blackhole;
}
protocol bgp uplink {
  local 198.18.$k.2 as $((65000 + k));
  neighbor 198.18.$k.1 as 65000;
  hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 2;
  ipv4 { import none; export where proto = "service"; next hop self; };
}
CONF
}

fleet_up() {
  local hosts=$1 mode=$2
  require_root "up"
  require_tools ip ethtool sysctl bird birdc curl
  (( hosts >= 2 && hosts <= 4 )) || die "--hosts takes 2 to 4, not '$hosts'"
  [[ $mode == resilient || $mode == hash-threshold ]] || die "--mode is resilient or hash-threshold, not '$mode'"
  fleet_down quiet
  ns_exists c10m-dut && ip netns del c10m-dut
  mkdir -p "$FLEET_RUN"
  echo "$hosts $mode" >"$FLEET_RUN/bed"

  local r=$FLEET_ROUTER_NS k ns
  for ns in "$GEN_NS" "$r"; do ns_exists "$ns" || ip netns add "$ns"; done
  ip -n "$GEN_NS" link del "$GEN_IF" 2>/dev/null || true
  ip link add "$GEN_IF" netns "$GEN_NS" address "$GEN_MAC" type veth peer name r-gen netns "$r"
  for ((k = 1; k <= hosts; k++)); do
    ns=$(fleet_host_ns "$k")
    ip netns add "$ns"
    ip link add r-h"$k" netns "$r" type veth peer name "$DUT_IF" netns "$ns" \
      address "02:00:c6:12:0$k:02"
  done

  in_ns "$GEN_NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  in_ns "$r" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv4.ip_forward=1 \
    net.ipv4.fib_multipath_hash_policy=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
  in_ns "$GEN_NS" sysctl -qw "net.ipv4.conf.$GEN_IF.arp_announce=2" \
    "net.ipv4.ip_local_port_range=1024 65535"
  ip -n "$GEN_NS" addr add "$FLEET_GEN_ADDR/24" dev "$GEN_IF"
  ip -n "$r" addr add "$FLEET_ROUTER_GEN_ADDR/24" dev r-gen
  for ns in "$GEN_NS" "$r"; do ip -n "$ns" link set lo up; done
  ip -n "$GEN_NS" link set "$GEN_IF" up
  ip -n "$r" link set r-gen up
  ip -n "$GEN_NS" route replace local "$CLIENTS" dev lo
  ip -n "$GEN_NS" route replace "$FLEET_SERVICE/32" via "$FLEET_ROUTER_GEN_ADDR"
  ip -n "$r" route replace "$CLIENTS" via "$FLEET_GEN_ADDR"
  in_ns "$GEN_NS" ethtool -K "$GEN_IF" tx off tso off gso off gro on >/dev/null
  in_ns "$r" ethtool -K r-gen tx off tso off gso off gro off >/dev/null
  for ((k = 1; k <= hosts; k++)); do
    ns=$(fleet_host_ns "$k")
    in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    in_ns "$r" sysctl -qw "net.ipv4.conf.r-h$k.rp_filter=0"
    ip -n "$r" addr add "198.18.$k.1/24" dev r-h"$k"
    ip -n "$ns" addr add "198.18.$k.2/24" dev "$DUT_IF"
    ip -n "$ns" link set lo up
    ip -n "$r" link set r-h"$k" up
    ip -n "$ns" link set "$DUT_IF" up
    ip -n "$ns" route replace "$CLIENTS" via "198.18.$k.1"
    # GRO on the router's side: XDP_TX frames (SYN-cookie SYN-ACKs) need its NAPI.
    in_ns "$r" ethtool -K r-h"$k" tx off tso off gso off gro on >/dev/null
    in_ns "$ns" ethtool -K "$DUT_IF" gro off tx off tso off gso off >/dev/null
    fleet_host_conf "$k" >"$FLEET_RUN/host$k.conf"
    fleet_start_bird "$ns" "host$k"
    ip netns exec "$ns" setsid "$FLEET_LIB/bird-health" "$FLEET_RUN/host$k.ctl" \
      "http://127.0.0.1:9100/health" </dev/null >>"$FLEET_RUN/health$k.log" 2>&1 9>&- &
    echo $! >"$FLEET_RUN/health$k.pid"
  done
  fleet_router_conf "$hosts" "$mode" >"$FLEET_RUN/router.conf"
  fleet_start_bird "$r" router
  if [[ $mode == resilient ]]; then
    ip netns exec "$r" setsid "$FLEET_LIB/route-sync" "$FLEET_SERVICE" "$FLEET_TABLE" \
      "$FLEET_GROUP" </dev/null >>"$FLEET_RUN/route-sync.log" 2>&1 9>&- &
    echo $! >"$FLEET_RUN/route-sync.pid"
  fi
  # The sessions come up within a few seconds (connect retry 1 s).
  local t
  for ((t = 0; t < 100; t++)); do
    (( $(birdc -s "$FLEET_RUN/router.ctl" show protocols 2>/dev/null | grep -c Established) == hosts )) && break
    sleep 0.1
  done
  fleet_status
}

# Stops what the bed started (by the pids it recorded) and deletes its namespaces.
fleet_down() {
  local quiet=${1:-} f pid ns pids=() t
  for f in "$FLEET_RUN"/*.pid; do
    [[ -e $f ]] || continue
    pid=$(cat "$f")
    [[ $pid =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$f"
  done
  for ((t = 0; t < 30 && ${#pids[@]}; t++)); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  for ns in "$FLEET_ROUTER_NS" c10m-host1 c10m-host2 c10m-host3 c10m-host4; do
    ns_exists "$ns" || continue
    [[ -n $quiet ]] || {
      local pids
      pids=$(ip netns pids "$ns" | tr '\n' ' ')
      [[ -z $pids ]] || echo "testbed: $ns still has processes ($pids); it lasts until they exit" >&2
    }
    ip netns del "$ns"
  done
  rm -rf "$FLEET_RUN"
}

fleet_status() {
  [[ -e $FLEET_RUN/bed ]] || return 3
  local hosts mode k
  read -r hosts mode <"$FLEET_RUN/bed"
  echo "testbed: up, $hosts hosts behind c10m-router ($mode multipath, L4 hash)"
  echo "  service $FLEET_SERVICE:   c10m-gen $FLEET_GEN_ADDR -> c10m-router -> c10m-host1..$hosts dut0"
  for ((k = 1; k <= hosts; k++)); do
    local st
    st=$(ip netns exec "$(fleet_host_ns "$k")" curl -s -m 1 -o /dev/null -w '%{http_code}' \
      http://127.0.0.1:9100/health 2>/dev/null || true)
    echo "  c10m-host$k: dut0 198.18.$k.2, BGP $(birdc -s "$FLEET_RUN/router.ctl" show protocols "host$k" 2>/dev/null | awk -v p="host$k" '$1 == p {print $6}'), /health ${st:-none}"
  done
  echo "  router's route for $FLEET_SERVICE:"
  ip -n "$FLEET_ROUTER_NS" route show "$FLEET_SERVICE" | sed 's/^/    /'
  if [[ $mode == resilient ]]; then
    ip -n "$FLEET_ROUTER_NS" nexthop show id "$FLEET_GROUP" 2>/dev/null | sed 's/^/    /' || true
  fi
}
