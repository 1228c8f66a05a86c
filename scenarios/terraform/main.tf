# An ACK cluster with Terway in a VPC of its own, as one would write it for Alibaba Cloud, for
# `kubevpc import terraform`: plan.json beside it is what `terraform show -json` gives for its plan
# (`terraform plan -out=tfplan && terraform show -json tfplan > plan.json`, Terraform 1.5.7, the
# aliyun/alicloud provider 1.220), and imported.yaml what `kubevpc import terraform plan.json` writes.
#
# Two zones, each with a vSwitch for the nodes and one for Terway's pods; a security group for the
# nodes and pods, one for a web server and one for a VPN gateway; an Internet NAT gateway with its EIP
# and an SNAT entry for the nodes' vSwitch; an intranet SLB; the on-premises network routed to the VPN
# gateway; and a managed cluster (ACK Pro) with a node pool of three.

terraform {
  required_providers {
    alicloud = {
      source  = "aliyun/alicloud"
      version = "~> 1.220"
    }
  }
}

provider "alicloud" {
  region = "cn-hangzhou"
}

# ---------------------------------------------------------------------------------------- network
resource "alicloud_vpc" "main" {
  vpc_name   = "ack-vpc"
  cidr_block = "192.168.0.0/16"
}

resource "alicloud_vswitch" "nodes_i" {
  vswitch_name = "vsw-nodes-i"
  vpc_id       = alicloud_vpc.main.id
  cidr_block   = "192.168.1.0/24"
  zone_id      = "cn-hangzhou-i"
}

resource "alicloud_vswitch" "nodes_j" {
  vswitch_name = "vsw-nodes-j"
  vpc_id       = alicloud_vpc.main.id
  cidr_block   = "192.168.2.0/24"
  zone_id      = "cn-hangzhou-j"
}

resource "alicloud_vswitch" "pods_i" {
  vswitch_name = "vsw-pods-i"
  vpc_id       = alicloud_vpc.main.id
  cidr_block   = "192.168.16.0/20"
  zone_id      = "cn-hangzhou-i"
}

resource "alicloud_vswitch" "pods_j" {
  vswitch_name = "vsw-pods-j"
  vpc_id       = alicloud_vpc.main.id
  cidr_block   = "192.168.32.0/20"
  zone_id      = "cn-hangzhou-j"
}

# ------------------------------------------------------------------------------- security groups
resource "alicloud_security_group" "nodes" {
  name        = "ack-nodes"
  description = "ACK nodes and Terway pods"
  vpc_id      = alicloud_vpc.main.id
}

resource "alicloud_security_group_rule" "nodes_icmp" {
  type              = "ingress"
  ip_protocol       = "icmp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "-1/-1"
  priority          = 1
  security_group_id = alicloud_security_group.nodes.id
  cidr_ip           = "0.0.0.0/0"
}

resource "alicloud_security_group_rule" "nodes_nodeports" {
  type              = "ingress"
  ip_protocol       = "tcp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "30000/32767"
  priority          = 1
  security_group_id = alicloud_security_group.nodes.id
  cidr_ip           = "192.168.0.0/16"
  description       = "NodePorts from the VPC (the SLB)"
}

resource "alicloud_security_group" "web" {
  name        = "web"
  description = "the web server"
  vpc_id      = alicloud_vpc.main.id
}

resource "alicloud_security_group_rule" "web_http" {
  type              = "ingress"
  ip_protocol       = "tcp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "80/80"
  priority          = 1
  security_group_id = alicloud_security_group.web.id
  cidr_ip           = "192.168.0.0/16"
  description       = "HTTP from the VPC"
}

resource "alicloud_security_group_rule" "web_ssh" {
  type                     = "ingress"
  ip_protocol              = "tcp"
  nic_type                 = "intranet"
  policy                   = "accept"
  port_range               = "22/22"
  priority                 = 1
  security_group_id        = alicloud_security_group.web.id
  source_security_group_id = alicloud_security_group.vpn.id
  description              = "SSH from the VPN gateway"
}

resource "alicloud_security_group_rule" "web_no_smtp_out" {
  type              = "egress"
  ip_protocol       = "tcp"
  nic_type          = "intranet"
  policy            = "drop"
  port_range        = "25/25"
  priority          = 1
  security_group_id = alicloud_security_group.web.id
  cidr_ip           = "0.0.0.0/0"
  description       = "no mail out"
}

resource "alicloud_security_group" "vpn" {
  name        = "vpn"
  description = "the VPN gateway to the on-premises network"
  vpc_id      = alicloud_vpc.main.id
}

resource "alicloud_security_group_rule" "vpn_ike" {
  type              = "ingress"
  ip_protocol       = "udp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "500/500"
  priority          = 1
  security_group_id = alicloud_security_group.vpn.id
  cidr_ip           = "0.0.0.0/0"
  description       = "IKE"
}

resource "alicloud_security_group_rule" "vpn_nat_t" {
  type              = "ingress"
  ip_protocol       = "udp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "4500/4500"
  priority          = 1
  security_group_id = alicloud_security_group.vpn.id
  cidr_ip           = "0.0.0.0/0"
  description       = "IPsec NAT traversal"
}

resource "alicloud_security_group_rule" "vpn_onprem" {
  type              = "ingress"
  ip_protocol       = "all"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = "-1/-1"
  priority          = 1
  security_group_id = alicloud_security_group.vpn.id
  cidr_ip           = "10.10.0.0/16"
  description       = "the on-premises network, through the tunnel"
}

# ---------------------------------------------------------------------------------- ECS instances
resource "alicloud_instance" "web" {
  instance_name        = "web"
  instance_type        = "ecs.g7.large"
  image_id             = "aliyun_3_x64_20G_alibase_20240528.vhd"
  vswitch_id           = alicloud_vswitch.nodes_i.id
  private_ip           = "192.168.1.10"
  security_groups      = [alicloud_security_group.web.id]
  system_disk_category = "cloud_essd"
}

resource "alicloud_instance" "vpn" {
  instance_name        = "vpn-gateway"
  instance_type        = "ecs.c7.large"
  image_id             = "aliyun_3_x64_20G_alibase_20240528.vhd"
  vswitch_id           = alicloud_vswitch.nodes_j.id
  security_groups      = [alicloud_security_group.vpn.id]
  system_disk_category = "cloud_essd"
}

# the on-premises network, through the VPN gateway
resource "alicloud_route_entry" "onprem" {
  route_table_id        = alicloud_vpc.main.route_table_id
  destination_cidrblock = "10.10.0.0/16"
  nexthop_type          = "Instance"
  nexthop_id            = alicloud_instance.vpn.id
  name                  = "on-premises"
}

# ------------------------------------------------------------------------------ NAT gateway, EIP
resource "alicloud_nat_gateway" "main" {
  vpc_id           = alicloud_vpc.main.id
  nat_gateway_name = "ngw"
  payment_type     = "PayAsYouGo"
  nat_type         = "Enhanced"
  vswitch_id       = alicloud_vswitch.nodes_i.id
}

resource "alicloud_eip_address" "nat" {
  address_name         = "eip-ngw"
  isp                  = "BGP"
  internet_charge_type = "PayByTraffic"
  payment_type         = "PayAsYouGo"
  bandwidth            = "10"
}

resource "alicloud_eip_association" "nat" {
  allocation_id = alicloud_eip_address.nat.id
  instance_id   = alicloud_nat_gateway.main.id
  instance_type = "Nat"
}

resource "alicloud_snat_entry" "nodes_i" {
  snat_table_id     = alicloud_nat_gateway.main.snat_table_ids
  source_vswitch_id = alicloud_vswitch.nodes_i.id
  snat_ip           = alicloud_eip_address.nat.ip_address
  snat_entry_name   = "nodes-i"
  depends_on        = [alicloud_eip_association.nat]
}

# ------------------------------------------------------------------------------------------- SLB
resource "alicloud_slb_load_balancer" "ingress" {
  load_balancer_name = "ingress"
  address_type       = "intranet"
  load_balancer_spec = "slb.s2.small"
  vswitch_id         = alicloud_vswitch.nodes_i.id
}

# --------------------------------------------------------------------------------------- cluster
resource "alicloud_cs_managed_kubernetes" "ack" {
  name                 = "ack-prod"
  cluster_spec         = "ack.pro.small"
  version              = "1.30.1-aliyun.1"
  worker_vswitch_ids   = [alicloud_vswitch.nodes_i.id, alicloud_vswitch.nodes_j.id]
  pod_vswitch_ids      = [alicloud_vswitch.pods_i.id, alicloud_vswitch.pods_j.id]
  service_cidr         = "172.21.0.0/20"
  new_nat_gateway      = false
  slb_internet_enabled = false
  proxy_mode           = "ipvs"
  security_group_id    = alicloud_security_group.nodes.id

  addons {
    name = "terway-eniip"
  }
  addons {
    name = "csi-plugin"
  }
  addons {
    name = "csi-provisioner"
  }
  addons {
    name     = "nginx-ingress-controller"
    disabled = true
  }
}

resource "alicloud_cs_kubernetes_node_pool" "default" {
  cluster_id           = alicloud_cs_managed_kubernetes.ack.id
  node_pool_name       = "default-pool"
  vswitch_ids          = [alicloud_vswitch.nodes_i.id, alicloud_vswitch.nodes_j.id]
  instance_types       = ["ecs.g7.xlarge"]
  system_disk_category = "cloud_essd"
  system_disk_size     = 120
  desired_size         = 3
  security_group_ids   = [alicloud_security_group.nodes.id]

  labels {
    key   = "pool"
    value = "default"
  }
}

# an access key for the nodes' operators: nothing of the network
resource "alicloud_ecs_key_pair" "ops" {
  key_pair_name = "ops"
  public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKubevpcExampleKeyNotARealOne ops@example.com"
}
