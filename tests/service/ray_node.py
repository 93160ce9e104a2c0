"""`ray` of a second node on this machine: `python -m tests.service.ray_node start ...`.

A Ray head started for tests listens on 127.0.0.1 only (service/raycluster.py: Ray is told
the instance is single-node, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). `ray start --address`
then refuses to join it ("multi-node clusters are not supported"), and told otherwise it
replaces 127.0.0.1 in the head's address by the machine's reachable IP, where nothing
listens. This lets the one CLI process through its check and keeps the address as given;
the node's own processes keep the loopback setting they inherit, so they too listen on
127.0.0.1 only (tests/service/test_two_nodes.py checks every socket)."""

from __future__ import annotations

import sys

from ray._private import ray_constants, services

ray_constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host

from ray.scripts.scripts import main  # noqa: E402  (after the two settings above)

if __name__ == "__main__":
    sys.argv[0] = "ray"
    sys.exit(main())
