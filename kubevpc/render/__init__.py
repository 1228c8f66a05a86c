"""Pure functions from the plan, or from the objects it holds, to what a daemon is given: no file
is read or written, no process started (the daemons' own modules, kubevpc.daemons.slb, kubevpc.daemons.dns and
kubevpc.daemons.ingress, write and serve them).

    slb     the SLB listener settings of a Service's annotations; the health checker's configuration
    dns     the cluster DNS's zone document, and a pod's resolv.conf
    nginx   the ingress controller's state document, its routing table and its nginx.conf
"""
