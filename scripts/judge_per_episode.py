"""Does the judge get individual episodes right? For `wam bench judge` output folders, pair every imagined episode with
the real one of the same policy, task and seed (the real results' per-episode records) and print how often they agree:
overall, the share of real successes imagined as successes, of real failures imagined as failures, and their mean
(balanced accuracy: 0.5 is chance), per task too.

    python scripts/judge_per_episode.py BENCH_OUT [BENCH_OUT ...]      # e.g. runs/bench/judge runs/bench/judge-still
"""

import json
import sys
from pathlib import Path

import numpy as np


def pairs(bench: Path) -> dict[str, list[tuple[bool, bool]]]:
    by_task: dict[str, list[tuple[bool, bool]]] = {}
    for folder in sorted((bench / "imagined").iterdir()):
        if not (folder / "judge.json").is_file() or not (bench / "real" / folder.name / "results.json").is_file():
            continue
        imagined = json.loads((folder / "judge.json").read_text())["policies"][0]["tasks"]
        real = {(e["task"], e["seed"]): e["success"]
                for e in json.loads((bench / "real" / folder.name / "results.json").read_text())["episodes"]}
        for task, result in imagined.items():
            by_task.setdefault(task, []).extend((real[(task, e["seed"])], e["success"]) for e in result["episodes_detail"])
    return by_task


def scores(p: list[tuple[bool, bool]]) -> str:
    real, imagined = np.array(p).T
    tpr, tnr = imagined[real].mean(), (~imagined[~real]).mean()
    return (f"{len(p)} episodes, agree {np.mean(real == imagined):.2f}, real successes imagined {tpr:.2f}, "
            f"real failures imagined {tnr:.2f}, balanced {(tpr + tnr) / 2:.2f}")


def main() -> None:
    for bench in map(Path, sys.argv[1:]):
        by_task = pairs(bench)
        print(f"{bench}: {scores([x for v in by_task.values() for x in v])}")
        for task, p in by_task.items():
            print(f"    {task}: {scores(p)}")


if __name__ == "__main__":
    main()
