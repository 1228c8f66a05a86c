#!/bin/bash
# Issue 21, vxlan approach 1, measured outside kubevpc: Open vSwitch's own userspace VXLAN tunnel
# ports (tnl_push/tnl_pop in the netdev datapath) between two pod namespaces, against a raw veth
# pair and against one netdev bridge, in the same run. Root; userspace datapath; iperf3.
#
#   p0 (ns) --veth-- kvtn-int0 [vxlan, 198.18.0.1 -> 198.18.0.2] ~ kvtn-phy0 ==veth== kvtn-phy1 ~ kvtn-int1 -- p1 (ns)
#
# The tunnel endpoints are addresses of the two underlay bridges' own (LOCAL, tap) ports, where
# Open vSwitch's native tunnelling looks for them: 198.18.0.1 and 198.18.0.2 (RFC 2544's
# benchmarking range; /30, since Open vSwitch takes a source address only from the subnet of the
# destination), added with noprefixroute so the machine's routing table gains nothing; the
# route between them is in Open vSwitch's own table (ovs/route/add), the neighbours in its own
# (tnl/neigh/set). Everything made is named kvtn-* and removed at exit, even after a failure.
#
#   bash scripts/bench_vxlan_tunnel.sh [SECONDS]      # default 3 s an iperf3 run
set -euo pipefail
SECS=${1:-3}
NS=(kvtn-p0 kvtn-p1)
SRV=
cleanup() {
    set +e
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
    for b in kvtn-int0 kvtn-int1 kvtn-phy0 kvtn-phy1 kvtn-one; do ovs-vsctl --if-exists del-br "$b"; done
    for l in kvtn-u0 kvtn-v0 kvtn-v1 kvtn-r0; do ip link del "$l" 2>/dev/null; done
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null; done
    ovs-appctl ovs/route/del 198.18.0.2/32 >/dev/null 2>&1
    ovs-appctl ovs/route/del 198.18.0.1/32 >/dev/null 2>&1
}
trap cleanup EXIT
cleanup

iperf() {       # iperf() NS-CLIENT SERVER-IP: Gbit/s received
    local out
    out=$(ip netns exec "$1" iperf3 -J -c "$2" -t "$SECS" 2>/dev/null || true)
    python3 -c 'import json,sys
try: d=json.loads(sys.stdin.read()); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("0.00 (failed)")' <<<"$out"
}
pods() {        # pods OFFLOAD(on|off): two namespaces, iperf3 server in p1
    for n in "${NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
    ip link add kvtn-v0 type veth peer name eth0 netns kvtn-p0
    ip link add kvtn-v1 type veth peer name eth0 netns kvtn-p1
    ip -n kvtn-p0 addr add 10.99.0.1/24 dev eth0; ip -n kvtn-p1 addr add 10.99.0.2/24 dev eth0
    for n in "${NS[@]}"; do
        ip -n "$n" link set eth0 mtu "$2" up
        ip netns exec "$n" ethtool -K eth0 tx "$1" >/dev/null 2>&1
    done
    ip link set kvtn-v0 up; ip link set kvtn-v1 up
    server
}
server() {      # an iperf3 server in p1 for one test, its pid in SRV (killed by pid, never by name)
    ip netns exec kvtn-p1 iperf3 -s -1 >/dev/null 2>&1 &
    SRV=$!
    sleep 0.3
}
unpods() {
    kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true
    for l in kvtn-v0 kvtn-v1; do ip link del "$l" 2>/dev/null || true; done
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
br() { ovs-vsctl add-br "$1" -- set bridge "$1" datapath_type=netdev; }

# the reference: a raw veth pair between two namespaces
for n in "${NS[@]}"; do ip netns add "$n"; done
ip link add kvtn-r0 type veth peer name kvtn-r1
ip link set kvtn-r0 netns kvtn-p0; ip link set kvtn-r1 netns kvtn-p1
ip -n kvtn-p0 addr add 10.99.0.1/24 dev kvtn-r0; ip -n kvtn-p1 addr add 10.99.0.2/24 dev kvtn-r1
ip -n kvtn-p0 link set kvtn-r0 up; ip -n kvtn-p1 link set kvtn-r1 up
server
echo "raw veth pair:                               $(iperf kvtn-p0 10.99.0.2) Gbit/s"
kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true
for n in "${NS[@]}"; do ip netns del "$n"; done

# one netdev bridge, full checksums (what vxlan mode's pods send today)
for off in off on; do
    pods "$off" 1500
    br kvtn-one
    ovs-vsctl add-port kvtn-one kvtn-v0 -- add-port kvtn-one kvtn-v1
    echo "one netdev bridge, pods' tx offload $off:      $(iperf kvtn-p0 10.99.0.2) Gbit/s"
    ovs-vsctl del-br kvtn-one; unpods
done

# Open vSwitch userspace VXLAN tunnel ports
for off in off on; do
    pods "$off" 1450
    br kvtn-phy0; br kvtn-phy1
    ip link add kvtn-u0 type veth peer name kvtn-u1
    ovs-vsctl add-port kvtn-phy0 kvtn-u0 -- add-port kvtn-phy1 kvtn-u1
    ip link set kvtn-u0 up; ip link set kvtn-u1 up
    for i in 0 1; do
        ip addr add "198.18.0.$((i + 1))/30" dev "kvtn-phy$i" noprefixroute
        ip link set "kvtn-phy$i" up
    done
    ovs-appctl ovs/route/add 198.18.0.2/32 kvtn-phy0 >/dev/null
    ovs-appctl ovs/route/add 198.18.0.1/32 kvtn-phy1 >/dev/null
    ovs-appctl tnl/neigh/set kvtn-phy0 198.18.0.2 "$(cat /sys/class/net/kvtn-phy1/address)" >/dev/null
    ovs-appctl tnl/neigh/set kvtn-phy1 198.18.0.1 "$(cat /sys/class/net/kvtn-phy0/address)" >/dev/null
    for i in 0 1; do
        br "kvtn-int$i"
        ovs-vsctl add-port "kvtn-int$i" "kvtn-v$i" -- add-port "kvtn-int$i" "kvtn-tun$i" -- \
            set interface "kvtn-tun$i" type=vxlan options:local_ip="198.18.0.$((i + 1))" \
            options:remote_ip="198.18.0.$((2 - i))" options:key=7
    done
    echo "userspace VXLAN ports, pods' tx offload $off: $(iperf kvtn-p0 10.99.0.2) Gbit/s"
    # why: where Open vSwitch's route lookup sends the encapsulated packet
    ovs-appctl ofproto/trace kvtn-int0 in_port=kvtn-v0,arp,arp_spa=10.99.0.1,arp_tpa=10.99.0.2,dl_dst=ff:ff:ff:ff:ff:ff \
        | grep -E "tunneling to|routing failed" | sed 's/^ */    trace: /'
    for b in kvtn-int0 kvtn-int1 kvtn-phy0 kvtn-phy1; do ovs-vsctl del-br "$b"; done
    ip link del kvtn-u0; unpods
done
