"""The evaluator: what should connect, worked out from the scenario's meaning (the plan), written
independently of the flow compiler (controller/), so that probing the network against it, or
tracing a packet beside it, tests the compiler.

- verdict.py: Verdict and Step, the evaluator's answer and the chain of steps that led to it.
- vpc.py: security groups and route tables; northsouth.py: the internet (EIPs, NAT gateways,
  internet-facing SLBs); netpol.py: NetworkPolicy; reach.py: a connection between two hosts or to
  a Service, putting those together.
- explain.py: one connection as the chain the evaluator followed (`kubevpc explain`).
- matrix.py: the reachability matrix between chosen endpoints; checks.py: the checks of a run.
"""
