"""Builder helpers that need no root."""
from __future__ import annotations

import pytest

from kubevpc.errors import BuildError
from topologies.build import in_each_namespace


def test_work_in_namespaces_reports_every_failure_with_its_host(tmp_path):
    done = []
    jobs = [(str(tmp_path / f"missing-{i}"), f"pod/default/web-{i}", lambda: done.append(1)) for i in range(5)]
    with pytest.raises(BuildError) as err:
        in_each_namespace(jobs)
    text = str(err.value)
    assert "pod/default/web-0: [Errno 2]" in text and "pod/default/web-2" in text
    assert "pod/default/web-3" not in text and "(and 2 more)" in text
    assert done == [], "no work runs outside the namespace it was meant for"

