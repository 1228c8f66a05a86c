"""The daemons of an emulated run, each a process the builder starts in a namespace with
`python -m kubevpc.daemons.<name>`: what they share is kubevpc.daemons.harness.

    server       the echo-identity server of every pod and ECS instance
    forkserver   forks the servers into their namespaces from one preloaded process
    slb          the SLB health checker
    nodehealth   kube-proxy's healthCheckNodePort server
    dns          the cluster DNS server
    ingress      the NGINX ingress controller (its NGINX process control is kubevpc.daemons.nginx)

This package imports nothing itself: a daemon loads only what it needs.
"""
