"""Reading W&B offline runs back, as W&B would upload them (shared by the tracking tests)."""

import json
import subprocess
import sys
from pathlib import Path


def leet(run_dir: Path, *options: str) -> str:
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *options, str(run_dir)]
    # From the folder holding `wandb/`, where the command keeps its own log.
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60,
                          cwd=run_dir.parent.parent).stdout


def read_run(run_dir: Path) -> dict:
    """A run as W&B would upload it, read from its offline record log.

    wandb 0.31 keeps its reader of the `.wandb` log in the Go core (the Python
    `wandb.sdk.internal.datastore` is gone), so rather than re-implementing the LevelDB-style
    framing by hand we ask `wandb leet inspect`, which prints each protobuf record as JSON (the
    format is wandb's own, pinned with wandb).
    """
    final = json.loads(leet(run_dir, "--summary"))
    records = [json.loads(line) for line in leet(run_dir).splitlines() if line.strip()]
    run_record = next(record["run"] for record in records if record["type"] == "run")
    history = [record["history"]["item"] for record in records if record["type"] == "history"]
    return {
        "id": final["run_id"],
        "name": final["name"],
        "group": run_record.get("run_group"),
        "job_type": run_record.get("job_type"),
        "tags": final["tags"],
        "config": {key: value for key, value in final["config"].items() if key[0] != "_"},
        "summary": final["summary"],
        "exit_code": final["exit_code"],
        "epochs": [row for row in history if "epoch" in row],
        "files": run_dir / "files",
    }
