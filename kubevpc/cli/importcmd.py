"""`kubevpc import terraform PLAN.json [-o OUT.yaml]`: a scenario from the JSON of `terraform show
-json` (kubevpc.importers.terraform). The scenario goes to standard output or OUT; what was not
imported and what was invented go to standard error, one line each, never wrapped."""
from __future__ import annotations

import sys

from ..errors import KubevpcError, ScenarioError
from ..importers.terraform import import_terraform
from ..rundir import atomic_write
from .common import EXIT_OK, EXIT_USAGE


def add_import(sub) -> None:
    p = sub.add_parser("import", help="write a scenario from a cloud description (a Terraform plan or state)",
                       description="Write a scenario's cloud: and cluster: sections from a description of real cloud "
                       "resources. Exit codes: 0 written; 2 the input is not what was expected, or gives no valid "
                       "scenario; 3 the output cannot be written.")
    kinds = p.add_subparsers(dest="source", required=True, metavar="SOURCE", help="what the description is")
    t = kinds.add_parser("terraform", help="the JSON of `terraform show -json` of an Alibaba Cloud configuration",
                         description="Read the JSON that `terraform show -json PLANFILE` (a plan) or `terraform show "
                         "-json` (a state) prints for an Alibaba Cloud (alicloud provider) configuration, and write "
                         "the scenario it describes: VPCs, vSwitches, route tables and entries, security groups and "
                         "rules, ECS instances, EIPs, NAT gateways with SNAT and DNAT entries, peering connections, "
                         "and an ACK cluster with its node pools (Terway: eni mode; Flannel: vpc-route mode). Each "
                         "resource it cannot map is listed on standard error with the reason, and so is each value "
                         "it had to invent; the scenario written always validates. docs/scenario.md, Importing "
                         "Terraform, says what maps to what.")
    t.add_argument("file", metavar="PLAN.json", help="the JSON of terraform show -json (at most "
                   "KUBEVPC_MAX_PLAN_BYTES bytes, 64 MiB by default)")
    t.add_argument("-o", "--output", metavar="OUT.yaml", help="write the scenario to this file (default: standard output)")
    t.add_argument("--name", help="the scenario's name (default: the cluster's, else terraform)")


def cmd_import(args) -> int:
    try:
        imported = import_terraform(args.file, args.name)
    except ScenarioError as exc:
        sys.stderr.write(f"cannot import {args.file} ({len(exc.problems)} problem(s)); nothing was written:\n")
        for p in exc.problems:
            sys.stderr.write(f"  {p}\n")
        return EXIT_USAGE
    for address, reason in imported.skipped:
        sys.stderr.write(f"not imported: {address}: {reason}\n")
    for address, what in imported.invented:
        sys.stderr.write(f"invented: {address}: {what}\n")
    if args.output:
        try:
            atomic_write(args.output, imported.text, 0o644, umask=True)
        except OSError as exc:
            raise KubevpcError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        sys.stdout.write(imported.text)
    cloud, cluster = imported.data["cloud"], imported.data.get("cluster")
    sys.stderr.write(f"{args.output or 'the scenario'}: {len(cloud['vpcs'])} VPC, {len(cloud.get('instances', []))} "
                     f"ECS instances ({len(cluster['nodes']) if cluster else 0} nodes), "
                     f"mode {cluster.get('mode', 'vxlan') if cluster else 'no cluster'}; "
                     f"{len(imported.skipped)} not imported, {len(imported.invented)} invented; valid "
                     f"(`kubevpc validate` agrees)\n")
    return EXIT_OK


COMMANDS = {"import": (add_import, cmd_import)}
