"""A Ray cluster on this machine for the tests and benchmarks: by default a head and a second node, each a
real raylet with one CPU (Ray's own cluster test utilities), inside a network namespace that holds only
loopback.

Ray, left to itself, registers its nodes at the machine's eth0 address and probes a public DNS server;
in a namespace of its own every address is 127.0.0.1 and nothing leaves the machine. The tests' commands
join the namespace with `nsenter` (`RayCluster.command`); they reach PostgreSQL by its Unix socket, which
a network namespace does not cut off.

`python tests/raycluster.py TEMP_DIR CPUS...`, run by `RayCluster` under `unshare -n`, starts one node per
CPU count, prints one JSON line (the cluster's address and node ids), then obeys stdin: `kill` SIGKILLs
every process of the second node (its raylet and its workers), `add` starts a new second node in its place
(so that one cluster serves the tests after a kill), EOF shuts the cluster down.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENT_PORT = 10001  # Ray Client's usual port: free in a namespace of the cluster's own


class RayCluster:
    """The cluster, from the test's side: start it, run commands in its namespace, kill its second node."""

    def __init__(self, env: dict[str, str], cpus: tuple[int, ...] = (1, 1)) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="gdexp-ray-")  # short: Ray's socket paths must fit 107 bytes
        # Given to every process of the cluster and every command run in it: Ray's token authentication with a
        # token of this cluster's own (left to itself Ray writes ~/.ray/auth_token), and Ray's default folder
        # (/tmp/ray, where it notes the current cluster) inside the temp folder
        self.own = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": self.temp_dir,
                    # Ray Client's proxy waits 30 s for the server it starts per client: on a busy 2-core machine
                    # running the whole suite that was too little once ("Initialization failure from server")
                    "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "120"}
        env = {**env, **self.own}
        self.proc = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, __file__,
             self.temp_dir, *map(str, cpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            raise RuntimeError(f"the Ray test cluster did not start (exit code {code})")
        info = json.loads(line)
        self.address: str = info["address"]  # the head's GCS, host:port
        self.client: str = info["client"]  # its Ray Client server, ray://host:port
        self.head, *others = info["nodes"]
        self.node: str | None = others[0] if others else None

    def command(self, *args: str) -> list[str]:
        """`args` run inside the cluster's network namespace, with its token and folder."""
        own = [f"{k}={v}" for k, v in self.own.items()]
        return ["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", "--", "env", *own, *args]

    def kill_node(self) -> None:
        """SIGKILL the second node: its raylet and every worker process it started."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("kill\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "killed"
        self.node = None

    def replace_node(self) -> None:
        """Start a new second node (as many CPUs as the killed one had) in place of the one `kill_node` killed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("add\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # the cluster went down instead (its own log says why)
            raise RuntimeError(f"the Ray test cluster could not start a new node (exit code {self.proc.wait()})")
        self.node = json.loads(line)["node"]

    def client_server_logs(self) -> str:
        """The end of each of the head's Ray Client server logs (its proxy's and each session's): what a failed
        Ray Client session start left, for a test's failure message."""
        logs = sorted(Path(self.temp_dir, "ray", "session_latest", "logs").glob("ray_client_server*.err"))
        return "\n".join(f"== {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs)

    def leftovers(self) -> list[int]:
        """Processes still running that belong to this cluster (its temp folder is in their command line)."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if self.temp_dir.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
        return found

    def close(self) -> None:
        """Shut the cluster down and remove its temp folder (its sessions' logs and sockets)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _serve(temp_dir: str, cpus: list[int]) -> None:
    from ray.cluster_utils import Cluster

    from tests.conftest import descendants  # the checkout is on PYTHONPATH (conftest.child_env)

    temp_dir = os.path.join(temp_dir, "ray")  # Ray's default under RAY_TMPDIR
    args: dict[str, Any] = {"num_cpus": cpus[0], "include_dashboard": False, "temp_dir": temp_dir,
                            "ray_client_server_port": CLIENT_PORT}
    cluster = Cluster(initialize_head=True, head_node_args=args)
    nodes = [cluster.head_node, *(cluster.add_node(num_cpus=n, temp_dir=temp_dir) for n in cpus[1:])]
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "client": f"ray://127.0.0.1:{CLIENT_PORT}",
                      "nodes": [n.node_id for n in nodes]}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "kill":
                node = nodes[1]
                raylet = node.all_processes["raylet"][0].process.pid
                for pid in descendants(raylet) | {raylet}:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                cluster.remove_node(node, allow_graceful=False)
                print("killed", flush=True)
            elif line.strip() == "add":
                nodes[1] = cluster.add_node(num_cpus=cpus[1], temp_dir=temp_dir)
                cluster.wait_for_nodes()
                print(json.dumps({"node": nodes[1].node_id}), flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    _serve(sys.argv[1], [int(n) for n in sys.argv[2:]])
