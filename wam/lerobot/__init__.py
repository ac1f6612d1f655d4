"""LeRobot interoperability: lerobot-saved `wam` policies read as wam checkpoints (wam_checkpoint.py, normalize.py)."""
