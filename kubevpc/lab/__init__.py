"""The Python API: bring a scenario up, probe it, take it down.

    with Lab("scenarios/default.yaml", mode="eni") as lab:
        r = lab.connect("pod/default/web-0", "ecs/ecs-db", 5432)
        assert r.ok and r.answer["client"].startswith(lab.address("pod/default/web-0"))

Endpoints are `pod/<namespace>/<name>`, `ecs/<name>` or `node/<name>`. The Lab is in
kubevpc/lab/lab.py; what a change made while it runs does to the scenario's manifests, in
kubevpc/lab/changes.py.
"""
from .lab import Lab, Probe, new_run_name

__all__ = ["Lab", "Probe", "new_run_name"]
