"""Meta-World v3 tasks and the natural-language instruction for each.

Every instruction was written by hand from what the task asks the robot to do; the task name is not an
instruction. `instruction(name)` raises with the list of valid names for an unknown task.
"""

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick up the cube and move it from the left bin into the right bin",
    "box-close-v3": "pick up the lid and put it on the box to close it",
    "button-press-topdown-v3": "press the button down from above",
    "button-press-topdown-wall-v3": "reach over the wall and press the button down from above",
    "button-press-v3": "push the button in from the front",
    "button-press-wall-v3": "reach around the wall and push the button in from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "rotate the dial a quarter turn",
    "disassemble-v3": "pick the nut up off the peg",
    "door-close-v3": "push the open door closed",
    "door-lock-v3": "turn the lock on the door to lock it",
    "door-open-v3": "pull the door open by its handle",
    "door-unlock-v3": "turn the lock on the door to unlock it",
    "hand-insert-v3": "move your hand into the hole in the table",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open by its handle",
    "faucet-open-v3": "turn the faucet handle to open the tap",
    "faucet-close-v3": "turn the faucet handle to close the tap",
    "hammer-v3": "pick up the hammer and drive the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate forward into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "pick up the peg and insert it into the hole from the side",
    "peg-unplug-side-v3": "pull the peg out of the hole sideways",
    "soccer-v3": "push the ball into the goal",
    "stick-push-v3": "grasp the stick and use it to push the bottle to the goal",
    "stick-pull-v3": "grasp the stick and use it to pull the bottle to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck backwards to the goal",
    "reach-v3": "move your hand to the red goal marker",
    "reach-wall-v3": "reach over the wall to the red goal marker",
    "shelf-place-v3": "pick up the block and place it on the shelf",
    "sweep-into-v3": "sweep the cube into the hole",
    "sweep-v3": "sweep the cube off the edge of the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

TASKS: tuple[str, ...] = tuple(INSTRUCTIONS)

_ML10_TRAIN = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "button-press-topdown-v3",
               "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3")
_ML45_TEST = ("bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3")
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "MT10": ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
             "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"),
    "MT50": TASKS,
    "ML10-train": _ML10_TRAIN,
    "ML10-test": ("drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"),
    "ML45-train": tuple(t for t in TASKS if t not in _ML45_TEST),
    "ML45-test": _ML45_TEST,
}
"""Meta-World's own task sets (metaworld.env_dict's MT10_V3, MT50_V3, ML10_V3 and ML45_V3; checked by the tests)."""


def check_task(name: str) -> str:
    if name not in INSTRUCTIONS:
        valid = ", ".join(TASKS)
        raise ValueError(f"unknown Meta-World task {name!r}; valid tasks are: {valid}; or a benchmark: "
                         f"{', '.join(BENCHMARKS)}")
    return name


def instruction(name: str) -> str:
    return INSTRUCTIONS[check_task(name)]


def parse_tasks(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'a,b' or a sequence -> a tuple of validated task names (order kept, duplicates removed). An entry may be
    one of Meta-World's benchmark names (MT10, MT50, ML10-train, ML10-test, ML45-train, ML45-test): its tasks."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if not names:
        raise ValueError("no task given; pass one or more Meta-World task names, e.g. reach-v3,drawer-close-v3, "
                         f"or a benchmark: {', '.join(BENCHMARKS)}")
    tasks = []
    for n in names:
        if n in BENCHMARKS:
            tasks.extend(BENCHMARKS[n])
        elif n.upper() in ("ML10", "ML45"):
            raise ValueError(f"{n!r} has a train and a test set: pass {n.upper()}-train or {n.upper()}-test")
        else:
            tasks.append(check_task(n))
    return tuple(dict.fromkeys(tasks))
