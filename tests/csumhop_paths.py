"""The paths of tests/e2e/data/csumhop.yaml at its pods' own server (port 8080, and the NodePorts
30280 and 30282), each allowed one with its refused twin: the e2e module probes them against
`kubevpc explain`, the unit module walks them through the compiled flows."""

PATHS = [
    ("pod/client-1", "svc/default/bulk", 8080), ("pod/denied-1", "svc/default/bulk", 8080),
    ("pod/client-2", "svc/default/bulk", 8080), ("pod/denied-2", "svc/default/bulk", 8080),
    ("pod/client-1", "pod/bulk-0", 8080), ("pod/denied-1", "pod/bulk-0", 8080),
    ("pod/client-2", "pod/bulk-0", 8080), ("pod/denied-2", "pod/bulk-0", 8080),
    ("pod/client-1", "node/node-1", 30280), ("pod/client-1", "node/node-1", 30282),
    ("pod/client-1", "node/node-2", 30280), ("pod/client-1", "node/node-2", 30282),
    ("pod/client-1", "node/node-3", 30282),
    ("ecs/ecs-client", "node/node-1", 30280), ("ecs/ecs-client", "node/node-1", 30282),
    ("ecs/ecs-client", "node/node-2", 30282), ("ecs/ecs-client", "node/node-3", 30282),
    ("node/node-1", "svc/default/bulk", 8080)]
