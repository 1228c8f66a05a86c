"""NetworkPolicy: the model's validation and the evaluator's truth tables, written from the
specification in the style of the upstream e2e tests (test/e2e/network/netpol): namespaces x, y
and z, pods a, b and c in each, servers on 80 and 81 over TCP and UDP, plus a named port `http`
that means 8080 on pods a, 8081 on pods b and nothing on pods c. Three nodes and two ECS
instances outside the cluster complete the picture; ipBlock sees every one of them."""
from __future__ import annotations

from dataclasses import dataclass, field

import pydantic
import pytest
import yaml

from kubevpc.evaluator.netpol import NetworkPolicy, evaluate
from kubevpc.planning import ServerPort


# -------------------------------------------------------------------------------------- world
@dataclass(frozen=True)
class Ep:
    """An endpoint as the evaluator sees it (kubevpc.planning.HostPlan has the same fields)."""

    name: str
    ip: str
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    servers: tuple[ServerPort, ...] = ()
    node: str = ""
    eni_type: str = "Default"       # eni pods: Terway's eniType; ENI (exclusive): NetworkPolicy not enforced on it

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


NAMESPACES = {"x": {"ns": "x"}, "y": {"ns": "y"}, "z": {"ns": "z", "team": "blue"}}
NODE_OF = {"x/a": "n1", "x/b": "n1", "x/c": "n2", "y/a": "n2", "y/b": "n3", "y/c": "n3",
           "z/a": "n1", "z/b": "n2", "z/c": "n3"}
HTTP = {"a": 8080, "b": 8081}


def _pods() -> list[Ep]:
    out, count = [], {"n1": 0, "n2": 0, "n3": 0}
    for key, node in NODE_OF.items():
        ns, name = key.split("/")
        count[node] += 1
        servers = [ServerPort(port=p, protocol=proto, name=f"serve-{p}-{proto.lower()}")
                   for p in (80, 81) for proto in ("TCP", "UDP")]
        if name in HTTP:
            servers.append(ServerPort(port=HTTP[name], protocol="TCP", name="http"))
        out.append(Ep(name, f"10.244.{node[1]}.{count[node] * 2}", ns, {"pod": name}, tuple(servers), node))
    return out


PODS = _pods()
NODES = [Ep(f"n{i}", f"192.168.1.1{i}", node=f"n{i}") for i in (1, 2, 3)]
ECS = [Ep("db", "192.168.2.50", servers=(ServerPort(port=8080, protocol="TCP", name="http"),)),
       Ep("out", "172.16.0.9")]
ALL = PODS + NODES + ECS
BY_KEY = {e.key: e for e in ALL}
POD_KEYS = [p.key for p in PODS]


def ep(key: str) -> Ep:
    return BY_KEY[key]


def policy(text: str | dict, namespace: str = "x") -> NetworkPolicy:
    """A NetworkPolicy from its metadata and spec, as YAML or as a dict."""
    body = yaml.safe_load(text) if isinstance(text, str) else text
    body.setdefault("metadata", {}).setdefault("namespace", namespace)
    return NetworkPolicy.model_validate({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **body})


def exempt(src: str, dst: str) -> bool:
    """The specification's own exceptions: to itself, and between a pod and its node."""
    s, d = ep(src), ep(dst)
    return src == dst or (not s.namespace and s.node and s.node == d.node) or \
        (not d.namespace and d.node and d.node == s.node)


def grid(srcs, dsts) -> set[tuple[str, str]]:
    return {(s, d) for s in srcs for d in dsts if not exempt(s, d)}


def blocked(policies, port: int = 80, protocol: str = "TCP", among=ALL) -> set[tuple[str, str]]:
    """Every (source, destination) pair whose connection the evaluator denies."""
    return {(s.key, d.key) for s in among for d in among
            if not evaluate(policies, NAMESPACES, s, d, port, protocol).allowed}


def keys(namespaces: str = "xyz", pods: str = "abc") -> list[str]:
    return [f"{n}/{p}" for n in namespaces for p in pods]


EVERYONE = [e.key for e in ALL]
OUTSIDE = [e.key for e in NODES + ECS]


# ----------------------------------------------------------------------------- default deny
def test_no_policy_allows_everything():
    assert blocked([]) == set()
    assert evaluate([], NAMESPACES, ep("x/a"), ep("y/b"), 80, "tcp").reason == \
        "egress of x/a not isolated; ingress of y/b not isolated"


def test_default_deny_ingress_isolates_only_ingress_of_its_namespace():
    deny = policy("{metadata: {name: deny}, spec: {podSelector: {}}}")
    assert deny.spec.types == {"Ingress"}
    assert blocked([deny]) == grid(EVERYONE, keys("x"))
    v = evaluate([deny], NAMESPACES, ep("x/c"), ep("x/b"), 80, "TCP")
    assert v.reason == "ingress of x/b denied: isolated by policy x/deny, no rule allows 10.244.2.2 to port 80/TCP"


def test_default_deny_egress():
    deny = policy("{metadata: {name: deny}, spec: {podSelector: {}, policyTypes: [Egress]}}")
    assert blocked([deny]) == grid(keys("x"), EVERYONE)
    assert "egress of x/a denied: isolated by policy x/deny, no rule allows 10.244.2.4:80/TCP" in \
        evaluate([deny], NAMESPACES, ep("x/a"), ep("y/a"), 80, "TCP").reason


def test_empty_egress_list_does_not_make_an_egress_policy():
    """defaults.go: Egress is added to policyTypes only when `egress` has a rule."""
    p = policy("{metadata: {name: p}, spec: {podSelector: {}, egress: []}}")
    assert p.spec.types == {"Ingress"}
    assert blocked([p]) == grid(EVERYONE, keys("x"))
    p = policy("{metadata: {name: p}, spec: {podSelector: {}, egress: [{}]}}")
    assert p.spec.types == {"Ingress", "Egress"}
    assert blocked([p]) == grid(EVERYONE, keys("x"))     # egress [{}] allows everything


def test_deny_both_directions():
    deny = policy("{metadata: {name: deny}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}")
    assert blocked([deny]) == grid(EVERYONE, keys("x")) | grid(keys("x"), EVERYONE)


def test_rules_of_an_unlisted_type_are_ignored():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        policyTypes: [Egress]
        ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
        egress: [{}]""")
    assert blocked([p]) == set()


# ----------------------------------------------------------------------------- pod selection
def test_pod_selector_selects_pods_of_the_policys_namespace_only():
    p = policy("""
      metadata: {name: allow-b}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]""")
    assert blocked([p]) == grid(set(EVERYONE) - {"x/b"}, ["x/a"])
    assert evaluate([p], NAMESPACES, ep("x/b"), ep("x/a"), 80, "TCP").reason == \
        "egress of x/b not isolated; ingress of x/a allowed by policy x/allow-b rule 0"


def test_namespace_selector_match_labels():
    p = policy("""
      metadata: {name: from-y}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]""")
    assert blocked([p]) == grid(set(EVERYONE) - set(keys("y")), ["x/a"])


@pytest.mark.parametrize("expression, allowed", [
    ({"key": "ns", "operator": "In", "values": ["y", "z"]}, "yz"),
    ({"key": "ns", "operator": "NotIn", "values": ["y"]}, "xz"),
    ({"key": "team", "operator": "NotIn", "values": ["red"]}, "xyz"),   # no such key: not in
    ({"key": "team", "operator": "Exists"}, "z"),
    ({"key": "team", "operator": "DoesNotExist"}, "xy"),
    ({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}, "y"),
])
def test_namespace_selector_match_expressions(expression, allowed):
    peer = {"namespaceSelector": {"matchExpressions": [expression]}}
    p = policy({"metadata": {"name": "p"}, "spec": {"podSelector": {}, "ingress": [{"from": [peer]}]}})
    assert blocked([p]) == grid(set(EVERYONE) - set(keys(allowed)), keys("x"))


@pytest.mark.parametrize("expression, allowed", [
    ({"key": "pod", "operator": "In", "values": ["a", "b"]}, "ab"),
    ({"key": "pod", "operator": "NotIn", "values": ["a", "b"]}, "c"),
    ({"key": "pod", "operator": "Exists"}, "abc"),
    ({"key": "pod", "operator": "DoesNotExist"}, ""),
])
def test_pod_selector_match_expressions(expression, allowed):
    p = policy({"metadata": {"name": "p"}, "spec": {"podSelector": {"matchExpressions": [expression]}}})
    assert blocked([p]) == grid(EVERYONE, keys("x", allowed))


def test_namespace_and_pod_selector_in_one_peer_is_and():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - namespaceSelector: {matchLabels: {ns: y}}
            podSelector: {matchLabels: {pod: b}}""")
    assert blocked([p]) == grid(set(EVERYONE) - {"y/b"}, ["x/a"])


def test_two_peers_are_or():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - namespaceSelector: {matchLabels: {ns: y}}
          - podSelector: {matchLabels: {pod: b}}""")
    assert blocked([p]) == grid(set(EVERYONE) - set(keys("y")) - {"x/b"}, ["x/a"])


@pytest.mark.parametrize("peers, allowed", [
    ("[{podSelector: {}}]", keys("x")),                       # every pod of the policy's namespace
    ("[{namespaceSelector: {}}]", POD_KEYS),                  # every pod of every namespace
    ("[{namespaceSelector: {}, podSelector: {matchLabels: {pod: c}}}]", keys("xyz", "c")),
    ("[]", EVERYONE),                                         # no `from`: every source, pods or not
])
def test_empty_selectors(peers, allowed):
    p = policy(f"{{metadata: {{name: p}}, spec: {{podSelector: {{matchLabels: {{pod: a}}}}, "
               f"ingress: [{{from: {peers}}}]}}}}")
    assert blocked([p]) == grid(set(EVERYONE) - set(allowed), ["x/a"])


def test_a_peer_selector_never_matches_anything_but_pods():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        policyTypes: [Egress]
        egress: [{to: [{namespaceSelector: {}}]}]""")
    assert blocked([p]) == grid(keys("x"), OUTSIDE)


def test_namespaces_get_their_name_label_even_when_not_listed():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]""")
    assert evaluate([p], {}, ep("y/a"), ep("x/a"), 80, "TCP").allowed
    assert not evaluate([p], {}, ep("z/a"), ep("x/a"), 80, "TCP").allowed


# ---------------------------------------------------------------------------------- ipBlock
def test_ip_block_with_except_matches_pods_by_address():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}}]}]""")
    on_n2 = [k for k, n in NODE_OF.items() if n == "n2"]
    assert blocked([p]) == grid(on_n2 + OUTSIDE, ["x/a"])


def test_ip_block_with_except_matches_instances_in_egress():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        egress: [{to: [{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.12/32, 192.168.1.13/32]}}]}]""")
    assert p.spec.types == {"Ingress", "Egress"}
    assert blocked([p], among=[ep("x/c"), *NODES, *ECS]) == \
        {("x/c", "n3"), ("x/c", "out")} | grid(OUTSIDE, ["x/c"])
    # x/c runs on n2: the exception for its own node beats the except


def test_ip_block_everything():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        policyTypes: [Egress]
        egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]""")
    assert blocked([p]) == set()


# ------------------------------------------------------------------------------------ ports
def test_named_port_resolves_on_each_destination_pod():
    p = policy("""
      metadata: {name: http}
      spec:
        podSelector: {}
        ingress: [{ports: [{port: http}]}]""")
    assert blocked([p], 8080) == grid(EVERYONE, ["x/b", "x/c"])
    assert blocked([p], 8081) == grid(EVERYONE, ["x/a", "x/c"])
    assert blocked([p], 80) == grid(EVERYONE, keys("x"))


def test_named_port_in_egress_resolves_on_the_destination_pod_and_never_on_an_instance():
    p = policy("""
      metadata: {name: http-out}
      spec:
        podSelector: {matchLabels: {pod: c}}
        policyTypes: [Egress]
        egress: [{ports: [{port: http}]}]""")
    assert ep("db").servers[0].name == "http"                 # a named server, yet not a pod
    assert blocked([p], 8080) == grid(["x/c"], set(EVERYONE) - set(keys("xyz", "a")))
    assert blocked([p], 8081) == grid(["x/c"], set(EVERYONE) - set(keys("xyz", "b")))


def test_named_port_matches_its_protocol_only():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]""")
    assert blocked([p], 81, "UDP") == set()
    assert blocked([p], 81, "TCP") == grid(EVERYONE, keys("x"))
    p = policy("{metadata: {name: p}, spec: {podSelector: {}, ingress: [{ports: [{port: serve-81-udp}]}]}}")
    assert blocked([p], 81, "UDP") == grid(EVERYONE, keys("x"))      # TCP by default: no such TCP port


def test_end_port_range():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {}
        ingress: [{ports: [{port: 80, endPort: 81}]}]""")
    assert blocked([p], 80) == blocked([p], 81) == set()
    assert blocked([p], 8080) == grid(EVERYONE, keys("x"))
    assert blocked([p], 80, "UDP") == grid(EVERYONE, keys("x"))


@pytest.mark.parametrize("ports, open_", [
    ("[{port: 80, protocol: UDP}]", {(80, "UDP")}),
    ("[{protocol: UDP}]", {(80, "UDP"), (81, "UDP"), (8080, "UDP")}),
    ("[{port: 81}]", {(81, "TCP")}),
    ("[{port: 80, protocol: SCTP}]", {(80, "SCTP")}),
    ("[{port: 80}, {port: 81, protocol: UDP}]", {(80, "TCP"), (81, "UDP")}),
])
def test_protocol_must_match(ports, open_):
    p = policy(f"{{metadata: {{name: p}}, spec: {{podSelector: {{}}, ingress: [{{ports: {ports}}}]}}}}")
    for port in (80, 81, 8080):
        for proto in ("TCP", "UDP", "SCTP"):
            expected = set() if (port, proto) in open_ else grid(EVERYONE, keys("x"))
            assert blocked([p], port, proto) == expected, (port, proto)


def test_peers_and_ports_of_one_rule_are_and_rules_are_or():
    p = policy("""
      metadata: {name: p}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
          ports: [{port: 80}]
        - from: [{namespaceSelector: {matchLabels: {ns: z}}}]
          ports: [{port: 81}]""")
    assert blocked([p], 80) == grid(set(EVERYONE) - set(keys("y")), ["x/a"])
    assert blocked([p], 81) == grid(set(EVERYONE) - set(keys("z")), ["x/a"])


# ------------------------------------------------------------------------- several policies
def test_policies_add_up():
    deny = policy("{metadata: {name: deny}, spec: {podSelector: {}}}")
    from_y = policy("""
      metadata: {name: from-y}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]""")
    from_zb = policy("""
      metadata: {name: from-zb}
      spec:
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}]}]""")
    assert blocked([deny, from_y, from_zb]) == \
        grid(EVERYONE, ["x/b", "x/c"]) | grid(set(EVERYONE) - set(keys("y")) - {"z/b"}, ["x/a"])
    v = evaluate([deny, from_y, from_zb], NAMESPACES, ep("x/c"), ep("x/a"), 80, "TCP")
    assert v.reason.endswith("isolated by policy x/deny, x/from-y, x/from-zb, no rule allows 10.244.2.2 to port 80/TCP")


def test_egress_of_the_source_and_ingress_of_the_destination_must_both_allow():
    x_to_y = policy("""
      metadata: {name: to-y}
      spec:
        podSelector: {}
        policyTypes: [Egress]
        egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]""")
    y_from_z = policy("""
      metadata: {name: from-z}
      spec:
        podSelector: {}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]""", namespace="y")
    assert blocked([x_to_y, y_from_z]) == \
        grid(keys("x"), set(EVERYONE) - set(keys("y"))) | grid(set(EVERYONE) - set(keys("z")), keys("y"))
    v = evaluate([x_to_y, y_from_z], NAMESPACES, ep("x/a"), ep("y/a"), 80, "TCP")
    assert not v.allowed and v.reason.startswith("ingress of y/a denied")
    v = evaluate([x_to_y, y_from_z], NAMESPACES, ep("x/a"), ep("z/a"), 80, "TCP")
    assert not v.allowed and v.reason.startswith("egress of x/a denied")


def test_exceptions_of_the_specification():
    deny = policy("{metadata: {name: deny}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}}")
    assert evaluate([deny], NAMESPACES, ep("x/a"), ep("x/a"), 80, "TCP").reason == \
        "x/a to itself: a pod cannot block access to itself"
    assert evaluate([deny], NAMESPACES, ep("n1"), ep("x/a"), 80, "TCP").reason == \
        "between x/a and its node n1: always allowed"
    assert evaluate([deny], NAMESPACES, ep("x/a"), ep("n1"), 80, "TCP").allowed
    assert not evaluate([deny], NAMESPACES, ep("n2"), ep("x/a"), 80, "TCP").allowed
    assert evaluate([deny], NAMESPACES, ep("db"), ep("out"), 80, "TCP").reason == \
        "no pod at either end: NetworkPolicy does not apply"


# ------------------------------------------------------------------------------- validation
BAD = [
    ("ingress: [{from: [{}]}]", "must specify podSelector, namespaceSelector or ipBlock"),
    ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]", "both ipBlock and another peer"),
    ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]", "both ipBlock and another peer"),
    ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]", "not a valid CIDR"),
    ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]", "strict subset"),
    ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]", "strict subset"),
    ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: ['fd00::/64']}}]}]", "strict subset"),
    ("ingress: [{from: [{ipBlock: {}}]}]", "cidr"),
    ("ingress: [{ports: [{port: 0}]}]", "between 1 and 65535"),
    ("ingress: [{ports: [{port: 65536}]}]", "between 1 and 65535"),
    ("ingress: [{ports: [{port: 81, endPort: 80}]}]", "endPort 80 must be between `port` (81) and 65535"),
    ("ingress: [{ports: [{port: 81, endPort: 65536}]}]", "endPort"),
    ("ingress: [{ports: [{port: http, endPort: 90}]}]", "non-numeric"),
    ("ingress: [{ports: [{endPort: 90}]}]", "`port` is not specified"),
    ("ingress: [{ports: [{port: '80'}]}]", "at least one letter"),
    ("ingress: [{ports: [{port: Http}]}]", "alpha-numeric"),
    ("ingress: [{ports: [{port: a--b}]}]", "consecutive hyphens"),
    ("ingress: [{ports: [{port: -ab}]}]", "begin or end with a hyphen"),
    ("ingress: [{ports: [{port: abcdefghijklmnop}]}]", "no more than 15 characters"),
    ("ingress: [{ports: [{port: 80, protocol: ICMP}]}]", "protocol"),
    ("policyTypes: [Ingress, Egress, Ingress]", "more than two"),
    ("policyTypes: [Both]", "policyTypes"),
    ("podSelector: {matchExpressions: [{key: a, operator: In}]}", "needs at least one value"),
    ("podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}", "takes no values"),
    ("podSelector: {matchLabels: {'a b': c}}", "not a valid Kubernetes label key"),
    ("ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: NotIn, values: []}]}}]}]",
     "needs at least one value"),
    ("ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: In, values: ['b c']}]}}]}]",
     "not a valid label value"),
]


@pytest.mark.parametrize("spec, message", BAD)
def test_validation_errors(spec, message):
    with pytest.raises(pydantic.ValidationError) as err:
        policy(f"{{metadata: {{name: p}}, spec: {{{spec}}}}}")
    assert message in str(err.value)


def test_valid_corner_cases():
    p = policy("""
      metadata: {name: p}
      spec:
        ingress:
        - from: [{ipBlock: {cidr: 10.0.0.1/8, except: [10.1.0.0/16]}}, {ipBlock: {cidr: 'fd00::/8'}}]
          ports: [{port: 80, endPort: 80}, {port: serve-80-tcp}, {protocol: SCTP}]""")
    assert p.spec.podSelector.matches({"any": "pod"})          # absent podSelector: every pod
    assert p.spec.ingress[0].peers[0].ipBlock.network.with_prefixlen == "10.0.0.0/8"
    with pytest.raises(pydantic.ValidationError, match="apiVersion"):
        NetworkPolicy.model_validate({"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy",
                                      "metadata": {"name": "p"}, "spec": {}})
