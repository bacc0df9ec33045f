"""A local multi-worker cluster for the distribution tests.

Worker processes on 127.0.0.1 get one TF_CONFIG each (`local_tf_configs`);
`kill_process_groups` ends whatever is still running, with the children a
worker started (the workers must be started with `start_new_session=True`).
"""

import json
import os
import signal
import socket
import subprocess
from typing import List
from typing import Sequence


def free_ports(count: int) -> List[int]:
    """`count` TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(num_workers: int) -> List[str]:
    """TF_CONFIG values (JSON) of worker 0..N-1 of one cluster on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(num_workers)]}
    return [json.dumps({"cluster": cluster,
                        "task": {"type": "worker", "index": index}})
            for index in range(num_workers)]


def kill_process_groups(processes: Sequence[subprocess.Popen]) -> None:
    """SIGKILLs the process group of every process still running."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
