"""Seeing a scenario's network: each reads the plan, none changes the network.

- trace.py: a connection's first packet through every bridge of a running scenario, beside the
  evaluator (`kubevpc trace`, Lab.trace); ovstrace.py: what ovs-appctl and ovs-ofctl print, parsed.
- capture.py: packets at a target, as pcapng with interface names (`kubevpc capture`).
- flowlog.py: rule counters by cookie, and the flow log records of the vSwitches' learned flows
  (written by controller/app.py; read by `kubevpc flowlog`, `status`, Lab.flow_log).
- graph.py: the plan as mermaid, dot, drawio or json (`kubevpc graph`); nothing needs to run.
"""
