"""Pure functions from the plan, or from the objects it holds, to what a daemon is given: no file
is read or written, no process started. The daemons (kubevpc.daemons) write these documents to
the run directory and serve them.

    slb          the SLB listener settings of a Service's annotations; the health checker's configuration
    nodehealth   kube-proxy's health check ports on a node
    dns          the cluster DNS's zone document, and a pod's resolv.conf
    ingress      the ingress controllers' state document
    nginx        the nginx.conf of a state document, and the routing table it implements
"""
