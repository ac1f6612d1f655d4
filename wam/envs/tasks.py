"""Meta-World v3 tasks and the natural-language instruction for each.

Every instruction was written by hand from what the task asks the robot to do; the task name is not an
instruction. `instruction(name)` raises with the list of valid names for an unknown task. `REWORDED` gives three
other phrasings of each, for evaluating under reworded instructions.
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

REWORDED: dict[str, tuple[str, ...]] = {
    "assembly-v3": ("grab the nut and drop it over the peg", "lift the nut and fit it onto the peg",
                    "take the nut and slide it down over the peg"),
    "basketball-v3": ("grab the ball and drop it through the hoop", "lift the ball and put it in the basket",
                      "take the ball and score it in the hoop"),
    "bin-picking-v3": ("take the cube out of the left bin and put it in the right bin",
                       "transfer the cube from the left bin to the right one",
                       "lift the cube from the left bin and drop it into the right bin"),
    "box-close-v3": ("close the box by placing its lid on top", "grab the lid and cover the box with it",
                     "lift the lid and set it onto the box"),
    "button-press-topdown-v3": ("push the button downwards from the top", "press down on the button from overhead",
                                "push down on the top of the button"),
    "button-press-topdown-wall-v3": ("go over the wall and push the button downwards from the top",
                                     "press down on the button from overhead, reaching across the wall",
                                     "reach across the wall and push down on the top of the button"),
    "button-press-v3": ("press the button inwards from the front", "press the front-facing button in",
                        "push the button straight in from its front"),
    "button-press-wall-v3": ("go around the wall and press the button inwards from the front",
                             "get past the wall and push in the button from the front",
                             "press the front of the button in, reaching around the wall"),
    "coffee-button-v3": ("push the coffee machine's button", "hit the button of the coffee maker",
                         "press the coffee maker's button"),
    "coffee-pull-v3": ("take the mug out from beneath the coffee machine",
                       "drag the cup away from under the coffee maker",
                       "slide the mug out from under the coffee maker"),
    "coffee-push-v3": ("slide the mug beneath the coffee machine", "move the cup under the coffee maker",
                       "push the cup into place beneath the coffee maker"),
    "dial-turn-v3": ("turn the dial by a quarter of a rotation", "twist the knob a quarter turn",
                     "spin the dial ninety degrees"),
    "disassemble-v3": ("lift the nut off the peg", "take the nut off the peg", "remove the nut from the peg"),
    "door-close-v3": ("shut the open door", "close the door that is open", "swing the open door shut"),
    "door-lock-v3": ("lock the door by turning its lock", "rotate the door's lock to the locked position",
                     "twist the lock on the door so it is locked"),
    "door-open-v3": ("open the door by pulling its handle", "grab the door handle and pull the door open",
                     "use the handle to swing the door open"),
    "door-unlock-v3": ("unlock the door by turning its lock", "rotate the door's lock to the unlocked position",
                       "twist the lock on the door so it is unlocked"),
    "hand-insert-v3": ("put your hand in the hole in the table", "insert your hand into the table's hole",
                       "lower your hand into the opening in the table"),
    "drawer-close-v3": ("shut the drawer", "slide the drawer in until it is closed",
                        "close the drawer by pushing it in"),
    "drawer-open-v3": ("open the drawer by pulling its handle", "grab the drawer's handle and pull it out",
                       "slide the drawer out using its handle"),
    "faucet-open-v3": ("open the tap by turning the faucet handle", "rotate the faucet's handle to turn the water on",
                       "twist the tap handle to open it"),
    "faucet-close-v3": ("close the tap by turning the faucet handle",
                        "rotate the faucet's handle to turn the water off",
                        "twist the tap handle to shut it"),
    "hammer-v3": ("grab the hammer and hit the nail into the wall", "take the hammer and hammer the nail into the wall",
                  "lift the hammer and knock the nail into the wall"),
    "handle-press-side-v3": ("push the handle downwards from the side", "from the side, push down on the handle",
                             "press down on the handle, approaching from the side"),
    "handle-press-v3": ("push the handle downwards", "push down on the handle", "lower the handle by pressing on it"),
    "handle-pull-side-v3": ("lift the handle upwards from the side", "from the side, pull up on the handle",
                            "raise the handle, approaching from the side"),
    "handle-pull-v3": ("lift the handle upwards", "pull up on the handle", "raise the handle by pulling it"),
    "lever-pull-v3": ("lift the lever upwards", "raise the lever", "pull up on the lever"),
    "pick-place-wall-v3": ("grab the puck and put it down on the target behind the wall",
                           "lift the puck over the wall and set it at the goal",
                           "take the puck to the goal on the far side of the wall"),
    "pick-out-of-hole-v3": ("lift the peg out of the hole", "pull the peg up from the hole",
                            "take the peg out of its hole"),
    "pick-place-v3": ("grab the puck and put it down at the target", "lift the puck and set it on the goal",
                      "move the puck through the air to the goal"),
    "plate-slide-v3": ("push the plate forwards into the cabinet",
                       "slide the plate ahead until it is inside the cabinet",
                       "move the plate forward along the table into the cabinet"),
    "plate-slide-side-v3": ("push the plate sideways into the cabinet",
                            "move the plate to the side until it is inside the cabinet",
                            "slide the plate into the cabinet from the side"),
    "plate-slide-back-v3": ("pull the plate back out of the cabinet", "slide the plate backwards out of the cabinet",
                            "draw the plate back out of the cabinet"),
    "plate-slide-back-side-v3": ("pull the plate sideways out of the cabinet",
                                 "move the plate to the side until it is out of the cabinet",
                                 "slide the plate out of the cabinet to the side"),
    "peg-insert-side-v3": ("grab the peg and push it sideways into the hole",
                           "lift the peg and slide it into the hole from the side",
                           "take the peg and fit it into the side hole"),
    "peg-unplug-side-v3": ("unplug the peg by pulling it out sideways", "slide the peg sideways out of its hole",
                           "remove the peg from the hole by pulling it to the side"),
    "soccer-v3": ("roll the ball into the goal", "move the ball into the goal", "shove the ball into the net"),
    "stick-push-v3": ("grab the stick and push the bottle to the goal with it",
                      "hold the stick and shove the bottle to the target using it",
                      "take the stick and use it as a tool to push the bottle to the goal"),
    "stick-pull-v3": ("grab the stick and pull the bottle to the goal with it",
                      "hold the stick and drag the bottle to the target using it",
                      "take the stick and use it as a tool to pull the bottle to the goal"),
    "push-v3": ("slide the puck to the target", "shove the puck over to the goal",
                "move the puck to the goal by pushing it"),
    "push-wall-v3": ("slide the puck past the wall to the target", "shove the puck around the wall over to the goal",
                     "move the puck around the wall to the goal by pushing it"),
    "push-back-v3": ("drag the puck back to the target", "slide the puck backwards to the goal",
                     "pull the puck back to the target"),
    "reach-v3": ("reach for the red goal marker", "put your hand on the red target",
                 "bring your gripper to the red goal point"),
    "reach-wall-v3": ("move your hand over the wall to the red goal marker", "reach across the wall for the red target",
                      "bring your gripper over the wall to the red goal point"),
    "shelf-place-v3": ("grab the block and put it on the shelf", "lift the block and set it down on the shelf",
                       "take the block and place it onto the shelf"),
    "sweep-into-v3": ("push the cube into the hole", "slide the cube across the table into the hole",
                      "brush the cube into the hole"),
    "sweep-v3": ("push the cube off the table's edge", "slide the cube over the edge of the table",
                 "brush the cube off the side of the table"),
    "window-open-v3": ("open the window by sliding it", "push the window sideways to open it",
                       "slide the window pane until it is open"),
    "window-close-v3": ("close the window by sliding it", "shut the window by sliding it",
                        "slide the window pane until it is shut"),
}
"""Three more phrasings of every instruction, written by hand: the same task in other words (the `instruction`
shift, envs/shift.py, picks one per episode). A colour the instruction names stays (the red goal marker, which
the colour shift leaves red); an object may go by another name (the mug a cup, the dial a knob, the faucet a tap)."""

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


def swapped_instructions(tasks: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Each task's instruction -> the next task's (cyclically): a shuffled instruction, for a deliberately weakened
    policy (`wam eval --swap-instructions`, wam/judge)."""
    texts = [instruction(t) for t in tasks]
    if len(set(texts)) < 2:
        raise ValueError(f"swapping instructions needs two tasks or more with different instructions, got {list(tasks)}")
    return {a: texts[(i + 1) % len(texts)] for i, a in enumerate(texts)}
