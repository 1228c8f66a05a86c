"""Builder helpers that need no root."""
from __future__ import annotations

import pytest

from kubevpc.errors import BuildError
from topologies.netns import in_each_namespace


def test_work_in_namespaces_reports_every_failure_with_its_host(tmp_path):
    done = []
    jobs = [(str(tmp_path / f"missing-{i}"), f"pod/default/web-{i}", lambda: done.append(1)) for i in range(5)]
    with pytest.raises(BuildError) as err:
        in_each_namespace(jobs)
    text = str(err.value)
    assert "pod/default/web-0: [Errno 2]" in text and "pod/default/web-2" in text
    assert "pod/default/web-3" not in text and "(and 2 more)" in text
    assert done == [], "no work runs outside the namespace it was meant for"



class _Proc:
    def __init__(self) -> None:
        self.polls, self.code = 0, None

    def poll(self):
        self.polls += 1
        return self.code


def _hosts(n):
    from types import SimpleNamespace
    return [SimpleNamespace(key=f"pod/default/web-{i}", netns=f"kv1-p{i}", ready_name=f"kv1-p{i}") for i in range(n)]


def test_servers_ready_follows_the_ready_files_and_forgets_hosts_once_ready(tmp_path, monkeypatch):
    import topologies.build as build
    hosts = _hosts(3)
    procs = {h.key: _Proc() for h in hosts}
    (tmp_path / "kv1-p0-nodehealth").touch()            # another program's ready file is not a host's
    test = build.servers_ready(hosts, str(tmp_path), procs, "servers.log")
    assert test() is False
    (tmp_path / "kv1-p0").touch()
    (tmp_path / "kv1-p2").touch()
    monkeypatch.setattr(build, "SERVER_LIVENESS_INTERVAL", 0)
    assert test() is False
    assert [procs[h.key].polls for h in hosts] == [1, 2, 1], "only the server not yet ready is looked at"
    (tmp_path / "kv1-p1").touch()
    assert test() is True


def test_servers_ready_names_the_host_whose_server_exited(tmp_path, monkeypatch):
    import topologies.build as build
    hosts = _hosts(2)
    procs = {h.key: _Proc() for h in hosts}
    from types import SimpleNamespace
    clock = [100.0]
    monkeypatch.setattr(build, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    test = build.servers_ready(hosts, str(tmp_path), procs, "/run/x/servers.log")
    assert test() is False
    procs["pod/default/web-1"].code = -1
    clock[0] += build.SERVER_LIVENESS_INTERVAL / 2
    assert test() is False, "processes are looked at once per SERVER_LIVENESS_INTERVAL, not on every call"
    clock[0] += build.SERVER_LIVENESS_INTERVAL / 2
    with pytest.raises(BuildError, match=r"the server of pod/default/web-1 exited; see /run/x/servers.log"):
        test()
