"""Fixed numbers of the Plan: OpenFlow port numbers, so flows can be compiled from the plan alone,
the ports a translation may choose, and the VPC DNS's addresses (kubevpc.planning.model re-exports
them)."""
from __future__ import annotations

# Fixed OpenFlow port numbers, so flows can be compiled from the plan alone.
OFPORT_VROUTER_ON_VSWITCH = 1
OFPORT_FIRST_ATTACHMENT = 10
OFPORT_NODE_HOST = 1
OFPORT_NODE_UPLINK0 = 2
OFPORT_NODE_UPLINK_PATCH0 = 50   # the patch port beside each uplink
OFPORT_NODE_TUNNEL0 = 100
OFPORT_NODE_HOP_OUT = 110     # the checksum hop (vxlan, KUBEVPC_VXLAN_CSUM_HOP): the end Open vSwitch sends into ...
OFPORT_NODE_HOP_IN = 111      # ... and the end the packet comes back in by, its checksum complete
OFPORT_VSWITCH_UPLINK_PATCH0 = 20000   # + the uplink's port on the vSwitch: its patch port there
OFPORT_NODE_POD0 = 1000
OFPORT_VROUTER_EDGE = 100        # the vRouter's link to its VPC's edge
OFPORT_VROUTER_PEER0 = 200       # + the peering's index in cloud.peerings: its patch port on both vRouters
OFPORT_EDGE_VPC = 1              # the edge's link to the vRouter ...
OFPORT_EDGE_INTERNET = 2         # ... and its patch to the internet router
OFPORT_INTERNET_HOST0 = 10       # internet router: hosts from here; edges from 1
OFPORT_VROUTER_RESOLVER = 99    # the vRouter's port to its VPC's DNS resolver, below the edge's
NAT_PORTS = (1024, 65535)        # source ports a NAT gateway or EIP translation may choose
# The VPC's own DNS servers, the same two addresses in every VPC, reachable from any address in it
# without NAT or EIP (Alibaba Cloud, "DHCP options sets": "The IP addresses of the Alibaba Cloud DNS
# servers, which are 100.100.2.136 and 100.100.2.138, are used by default"; 100.64.0.0/10 is reserved
# for Alibaba Cloud's services). kubevpc puts them in a namespace on the vRouter, on a /24 of their
# own whose first address is the vRouter's.
VPC_DNS = ("100.100.2.136", "100.100.2.138")
VPC_DNS_NET = "100.100.2.0/24"
VPC_DNS_GATEWAY = "100.100.2.1"
