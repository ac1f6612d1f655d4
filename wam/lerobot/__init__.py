"""LeRobot interoperability, both ways. lerobot's own policies (ACT, Diffusion Policy) behind our `Policy` protocol
(policy.py: `wam eval --policy lerobot:PATH`, `wam bench peers`); and `wam` policies that lerobot saved (the
lerobot_policy_wam plugin in packages/) read as wam checkpoints (wam_checkpoint.py, normalize.py). lerobot itself
is imported only by policy.py, where it is used; it runs in the venv scripts/lerobot-venv.sh builds."""
