"""wam: World-Action Models. A video diffusion transformer that predicts future frames and the actions
that get there, trained on demonstrations and evaluated in closed loop."""

__version__ = "0.1.0"

import os as _os

# Offscreen rendering without a display; must be set before MuJoCo is first imported.
_os.environ.setdefault("MUJOCO_GL", "egl")
