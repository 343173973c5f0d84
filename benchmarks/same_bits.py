"""Whether this tree computes bit for bit what another commit computes: run by hand across a change
that should change no number (issue #34, one Network), never by the tests.

    python benchmarks/same_bits.py --against HEAD~1 [--steps 200] [--seeds 0 1 2]

For each tree (this one, and REV checked out in a temporary git worktree) a fresh process:

- trains the default and the cnn preset on the real Fashion-MNIST for ``--steps`` steps per seed,
  then hashes every weight and the optimiser's state (SHA-256 of the raw bytes);
- loads each checkpoint in tests/data and hashes its logits and probabilities for the test images
  at batch 1, 64 and 10,000 (``Checkpoint.inference()``, what predict, serve and export answer).

It prints one line per figure with both hashes and whether they agree. Exit status 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from against import worktree

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import hashlib, json, sys
from pathlib import Path
import numpy as np
from fashion_mlp import checkpoint, data
from fashion_mlp.config import PRESETS
from fashion_mlp.train import Callback, new_state, train

steps, seeds, checkpoints = int(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")], sys.argv[3:]
out = {}

def digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()[:16]

class Stop(Exception):
    pass

class StopAt(Callback):
    def on_step(self, state, loss):
        if state.step == steps:
            raise Stop

dataset = data.load(val_size=0, allow_download=False)
for preset in ("default", "cnn"):
    for seed in seeds:
        config = PRESETS[preset].replace(seed=seed)
        state = new_state(config, dataset)
        try:
            train(config, dataset, [StopAt()], state=state)
        except Stop:
            pass
        out[f"{preset} seed {seed}: weights after {steps} steps"] = digest(state.model.state_dict())
        out[f"{preset} seed {seed}: optimiser after {steps} steps"] = digest(state.optimizer.state_dict())
pixels = data.pixels(dataset.test.x).astype(np.float32)
for path in checkpoints:
    inference = checkpoint.load(path).inference()
    for batch in (1, 64, 10_000):
        x = pixels[:batch]
        out[f"{Path(path).name} logits, batch {batch}"] = digest({"": inference.logits(x)})
        out[f"{Path(path).name} probabilities, batch {batch}"] = digest({"": inference.predict_proba(x)})
print(json.dumps(out))
"""


def run(tree: Path, steps: int, seeds: list[int], checkpoints: list[Path]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    args = [sys.executable, "-c", WORKER, str(steps), ",".join(map(str, seeds)), *map(str, checkpoints)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False, cwd=tree)
    if result.returncode:
        sys.exit(f"{tree}: the worker failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", required=True, help="the commit to compare with, e.g. HEAD~1")
    parser.add_argument("--steps", type=int, default=200, help="training steps per preset and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds to train")
    args = parser.parse_args()
    checkpoints = sorted((ROOT / "tests" / "data").glob("*.npz"))
    with worktree(args.against) as other:
        theirs = run(other, args.steps, args.seeds, checkpoints)
    ours = run(ROOT, args.steps, args.seeds, checkpoints)
    revision = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    print(f"{'figure':<58} {revision:<17} {'this tree':<17} same")
    differ = 0
    for key in ours:
        same = theirs.get(key) == ours[key]
        differ += not same
        print(f"{key:<58} {theirs.get(key, '-'):<17} {ours[key]:<17} {'yes' if same else 'NO'}")
    print(f"{len(ours) - differ} of {len(ours)} the same")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
