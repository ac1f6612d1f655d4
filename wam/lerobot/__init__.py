"""LeRobot interoperability: lerobot's own policies behind our `Policy` protocol (policy.py, for `wam eval --policy
lerobot:PATH` and `wam bench peers`). lerobot itself is imported only where it is used; it runs in the venv
scripts/lerobot-venv.sh builds."""
