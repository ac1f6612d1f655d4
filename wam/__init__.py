"""wam: World-Action Models. A video diffusion transformer that predicts future frames and the actions
that get there, trained on demonstrations and evaluated in closed loop."""

__version__ = "0.1.0"
