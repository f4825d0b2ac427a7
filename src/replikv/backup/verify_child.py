"""Verifying a backup file in a child process at a lower CPU priority: how a node checks the
scheduled backups it writes.

Verification reads every record and recomputes the state digest from every key: about a
second of pure Python per million keys of 100 bytes. In a thread of the node it
would hold the interpreter lock against the event loop, which waits up to the switch interval
(5 ms) each time it wants the lock back, on every fsync and every wake-up: the writes of every
client would wait with it. In its own process, under `nice`, it costs the node nothing but a
share of the CPU that the kernel's scheduler keeps small while the node is busy.

    python -m replikv.backup.verify_child FILE PARENT_PID

prints one JSON line, {"ok": true, "summary": {...}} or {"ok": false, "error": "..."}, and
exits 0 or 1. It exits at once (3) if PARENT_PID is no longer its parent: a node killed while
its backup was being verified leaves no verifier running on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from replikv.backup import BackupError
from replikv.backup.verify import BackupSummary, explain, inspect_backup
from replikv.storage.snapshot import CorruptSnapshotError

VERIFY_NICE = 10  # added to the node's niceness for the verifier
ORPHANED_EXIT = 3
STDERR_SHOWN_MAX = 2000


def verify_in_child(path: Path) -> BackupSummary:
    """Verify the backup at `path` in full in a child process (see the module's text); raises
    BackupError with what is wrong, as inspect_backup would have."""
    command = [sys.executable, "-m", "replikv.backup.verify_child", str(path), str(os.getpid())]
    # Its own session: a Ctrl-C meant for the node's terminal does not turn into a verification
    # failure; the node's stop waits for the worker thread that waits for it.
    done = subprocess.run(command, capture_output=True, check=False, start_new_session=True)
    try:
        answer = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        if done.returncode == 0 and answer["ok"]:
            return BackupSummary.from_json(answer["summary"])
        if done.returncode == 1 and not answer["ok"]:
            raise BackupError(str(answer["error"]))
    except (IndexError, ValueError, KeyError, TypeError):
        pass
    stderr = done.stderr.decode("utf-8", "replace").strip()[-STDERR_SHOWN_MAX:]
    raise BackupError(f"the verification of {path} did not finish (exit {done.returncode}): "
                      f"{stderr or 'no error printed'}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m replikv.backup.verify_child FILE PARENT_PID", file=sys.stderr)
        return 2
    path, parent = Path(argv[0]), int(argv[1])

    def check_parent(_keys: int) -> None:
        if os.getppid() != parent:
            os._exit(ORPHANED_EXIT)

    check_parent(0)
    os.nice(VERIFY_NICE)
    try:
        summary = inspect_backup(path, on_keys=check_parent)
    except (BackupError, CorruptSnapshotError) as e:
        print(json.dumps({"ok": False, "error": explain(e)}))
        return 1
    except OSError as e:
        print(json.dumps({"ok": False, "error": f"{path}: {e.strerror or e}"}))
        return 1
    print(json.dumps({"ok": True, "summary": summary.as_json()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
