"""Write the LeRobot v3.0 test fixtures in tests/fixtures/lerobot/ with lerobot's own writer, and record what
lerobot's own reader returns for them in each fixture's expected.json.

The fixtures are shaped like real robots (SO-100, ALOHA) and like an image-feature dataset, small enough to
commit. Frames are a disc on a gradient background whose position follows the joint trajectory (smooth
sinusoids, a phase per episode) and whose colour names the task, so they change over time and carry signal.
Tests of wam's own reader compare against expected.json without lerobot installed.

Run in the lerobot venv (scripts/lerobot-venv.sh), from the repo root:
    .venv-lerobot/bin/python scripts/lerobot_fixtures.py [--only so100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported, below

import lerobot
import numpy as np
import torch
import torchcodec
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "lerobot"
TASK_COLOURS = ((230, 60, 40), (40, 200, 60), (60, 90, 230))  # disc colour, by task index
SO100_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ALOHA_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")


@dataclass(frozen=True)
class Spec:
    name: str
    robot_type: str
    fps: int
    joints: tuple[str, ...]
    cameras: dict[str, tuple[int, int]]  # key -> (height, width)
    camera_dtype: str  # "video" (mp4) or "image" (PNG bytes in the parquet)
    tasks: tuple[str, ...]  # episode e gets tasks[e % len(tasks)]
    lengths: tuple[int, ...]  # frames per episode
    amplitude: tuple[float, float]  # (arm joints, gripper) amplitude of the sinusoid
    seed: int
    chunk_settings: dict[str, float] = field(default_factory=dict)  # for meta.update_chunk_settings
    metadata_buffer_size: int = 10


SPECS = {
    s.name: s
    for s in [
        Spec(
            name="so100",
            robot_type="so100_follower",
            fps=30,
            joints=tuple(f"{j}.pos" for j in SO100_JOINTS),
            cameras={"observation.images.front": (72, 96), "observation.images.wrist": (48, 64)},
            camera_dtype="video",
            tasks=("pick up the cube", "push the cube to the left"),
            lengths=(40, 33, 50, 30, 45, 36),
            amplitude=(30.0, 40.0),  # degrees; gripper 10..90 (percent open)
            seed=100,
            # Tiny limits so lerobot rotates into several data, video and episode-metadata files, and
            # chunks_size=2 puts the third file of each kind into chunk-001.
            chunk_settings={"chunks_size": 2, "data_files_size_in_mb": 0.008, "video_files_size_in_mb": 0.014},
            metadata_buffer_size=1,
        ),
        Spec(
            name="aloha",
            robot_type="aloha",
            fps=50,
            joints=tuple(f"{side}_{j}" for side in ("left", "right") for j in ALOHA_JOINTS),
            cameras={f"observation.images.{c}": (48, 64) for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")},
            camera_dtype="video",
            tasks=("transfer the cube",),
            lengths=(40, 32, 46, 36),
            amplitude=(0.6, 0.4),  # radians; gripper 0.1..0.9
            seed=14,
        ),
        Spec(
            name="images",
            robot_type="toy_arm",
            fps=10,
            joints=("x", "y", "z", "roll", "pitch", "gripper"),
            cameras={"observation.image": (64, 64)},
            camera_dtype="image",
            tasks=("reach the disc",),
            lengths=(24, 30, 20),
            amplitude=(0.1, 0.4),  # metres and radians; gripper 0.1..0.9
            seed=6,
        ),
    ]
}


# ---------------------------------------------------------------------------------------------------------
# Synthetic episodes
# ---------------------------------------------------------------------------------------------------------
def trajectory(spec: Spec, length: int, rng: np.random.Generator) -> np.ndarray:
    """(length + 1, a) unit sinusoids in [-1, 1]: about one cycle per episode; the joints' phases are spread
    evenly around the circle, and the whole set is turned by a random angle per episode."""
    cycles = rng.uniform(0.6, 1.2)
    phase = 2 * np.pi * np.arange(len(spec.joints)) / len(spec.joints) + rng.uniform(0, 2 * np.pi)
    t = np.arange(length + 1)[:, None] / length
    return np.sin(2 * np.pi * cycles * t + phase)


def to_joints(spec: Spec, unit: np.ndarray) -> np.ndarray:
    """Unit sinusoids to joint values: arm joints swing around 0, grippers between 0.25 and 2.25 amplitudes."""
    gripper = np.array(["gripper" in j for j in spec.joints])
    arm_amp, grip_amp = spec.amplitude
    offset = np.where(gripper, grip_amp * 1.25, 0.0)
    return (offset + np.where(gripper, grip_amp, arm_amp) * unit).astype(np.float32)


def render(hw: tuple[int, int], centre: tuple[float, float], colour: tuple[int, int, int], cam: int) -> np.ndarray:
    """(h, w, 3) uint8: a vertical gradient (its hue set by the camera) with a disc at centre (y, x) in [0, 1]."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.roll(np.array([150.0, 110.0, 70.0]), cam)
    img = base * (0.55 + 0.45 * yy[..., None] / (h - 1))
    disc = (yy - centre[0] * (h - 1)) ** 2 + (xx - centre[1] * (w - 1)) ** 2 <= (min(h, w) / 6) ** 2
    img[disc] = colour
    return img.round().astype(np.uint8)


def episode_frames(spec: Spec, episode: int, rng: np.random.Generator) -> list[dict]:
    """The frames of one episode as lerobot's add_frame wants them (task inside the frame dict)."""
    length = spec.lengths[episode]
    task_index = episode % len(spec.tasks)
    unit = trajectory(spec, length, rng)
    joints = to_joints(spec, unit)
    frames = []
    for t in range(length):
        frame: dict = {"observation.state": joints[t], "action": joints[t + 1], "task": spec.tasks[task_index]}
        for cam, (key, hw) in enumerate(spec.cameras.items()):
            # camera c follows joints (2c, 2c+1): the disc centre moves with the state
            uy, ux = unit[t, (2 * cam) % len(spec.joints)], unit[t, (2 * cam + 1) % len(spec.joints)]
            frame[key] = render(hw, (0.5 + 0.35 * uy, 0.5 + 0.35 * ux), TASK_COLOURS[task_index], cam)
        frames.append(frame)
    return frames


def write(spec: Spec, root: Path) -> None:
    names = list(spec.joints)
    features = {
        "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
        "action": {"dtype": "float32", "shape": (len(names),), "names": names},
    }
    for key, (h, w) in spec.cameras.items():
        features[key] = {"dtype": spec.camera_dtype, "shape": (h, w, 3), "names": ["height", "width", "channels"]}
    ds = LeRobotDataset.create(
        repo_id=f"wam/{spec.name}",
        fps=spec.fps,
        root=root,
        features=features,
        robot_type=spec.robot_type,
        use_videos=spec.camera_dtype == "video",
        metadata_buffer_size=spec.metadata_buffer_size,
    )
    if spec.chunk_settings:
        ds.meta.update_chunk_settings(**spec.chunk_settings)
    rng = np.random.default_rng(spec.seed)
    for episode in range(len(spec.lengths)):
        for frame in episode_frames(spec, episode, rng):
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()


# ---------------------------------------------------------------------------------------------------------
# What lerobot's reader returns
# ---------------------------------------------------------------------------------------------------------
ABOUT = {
    "what": "Values returned by lerobot's own LeRobotDataset reader for this fixture, to test wam's reader.",
    "reader": 'LeRobotDataset(repo_id, root=<this dir>, video_backend="torchcodec") with HF_HUB_OFFLINE=1',
    "samples": "ds[index] for a few indices; floats are the float32 values lerobot returns, printed as doubles.",
    "cameras": (
        "ds[index][camera] is float32 (3, H, W) in [0, 1] (uint8 / 255); x = round(255 * that): the decoded uint8 "
        "values, as float64, in (H, W, 3) order. "
        "channel_mean = x.mean over H and W. thumbnail_8x8 = crop x to its top-left (8*(H//8), 8*(W//8)) pixels, "
        "split into 8x8 equal blocks, take each block's float mean per channel, round half to even (np.round), "
        "as uint8; nested lists [8][8][3]. Video frames are AV1 decoded by torchcodec (FFmpeg 5.1); PyAV 18.1 "
        "(frame nearest from_timestamp + timestamp, to_ndarray(format='rgb24')) gave the same numbers exactly, "
        "another decoder may differ by a unit or two. Image features are lossless PNG."
    ),
    "delta_timestamps": (
        "ds built with the delta_timestamps below; action is (4, a); the camera is (2, 3, H, W) and is given as "
        "per-frame channel_mean. *_is_pad is True where index + delta falls outside the episode; lerobot then "
        "repeats the nearest frame of the episode."
    ),
}


def camera_summary(chw: torch.Tensor) -> dict:
    x = (chw.double().permute(1, 2, 0).numpy() * 255.0).round()  # (h, w, 3): the decoder's uint8 values
    h8, w8 = x.shape[0] // 8 * 8, x.shape[1] // 8 * 8
    blocks = x[:h8, :w8].reshape(8, h8 // 8, 8, w8 // 8, 3).mean(axis=(1, 3))
    return {
        "shape": list(chw.shape),
        "channel_mean": x.mean(axis=(0, 1)).tolist(),
        "thumbnail_8x8": np.round(blocks).clip(0, 255).astype(np.uint8).tolist(),
    }


def sample_indices(episodes: list[dict]) -> list[int]:
    """First and last frames of the first, the middle and the last episode, the middle of episode 1, frame 7."""
    picks = []
    for e in sorted({0, 1, len(episodes) // 2, len(episodes) - 1}):
        lo, hi = episodes[e]["dataset_from_index"], episodes[e]["dataset_to_index"]
        picks += [lo, hi - 1] if e != 1 else [(lo + hi) // 2]
    picks.append(episodes[0]["dataset_from_index"] + 7)
    return sorted(set(picks))


def expected(spec: Spec, root: Path) -> dict:
    repo_id = f"wam/{spec.name}"
    ds = LeRobotDataset(repo_id, root=root, video_backend="torchcodec")
    meta = ds.meta
    cams = list(meta.camera_keys)
    episodes = []
    for e in range(meta.total_episodes):
        row = meta.episodes[e]
        ep = {
            "episode_index": e,
            "length": int(row["length"]),
            "dataset_from_index": int(row["dataset_from_index"]),
            "dataset_to_index": int(row["dataset_to_index"]),
            "tasks": list(row["tasks"]),
            "data_file": str(meta.get_data_file_path(e)),
            "meta_file": f"meta/episodes/chunk-{row['meta/episodes/chunk_index']:03d}/"
            f"file-{row['meta/episodes/file_index']:03d}.parquet",
        }
        if meta.video_keys:
            ep["videos"] = {
                k: {
                    "file": str(meta.get_video_file_path(e, k)),
                    "from_timestamp": float(row[f"videos/{k}/from_timestamp"]),
                    "to_timestamp": float(row[f"videos/{k}/to_timestamp"]),
                }
                for k in meta.video_keys
            }
        episodes.append(ep)

    samples = []
    for i in sample_indices(episodes):
        item = ds[i]
        samples.append(
            {
                "index": int(item["index"]),
                "episode_index": int(item["episode_index"]),
                "frame_index": int(item["frame_index"]),
                "timestamp": float(item["timestamp"]),
                "task": item["task"],
                "task_index": int(item["task_index"]),
                "observation.state": item["observation.state"].tolist(),
                "action": item["action"].tolist(),
                "cameras": {k: camera_summary(item[k]) for k in cams},
            }
        )

    # One window whose action runs past the end of episode 0, one whose camera reaches before episode 1.
    cam = cams[0]
    delta = {"action": [k / spec.fps for k in range(4)], cam: [-1 / spec.fps, 0.0]}
    windowed = LeRobotDataset(repo_id, root=root, video_backend="torchcodec", delta_timestamps=delta)
    windows = []
    for i in (episodes[0]["dataset_to_index"] - 2, episodes[1]["dataset_from_index"]):
        item = windowed[i]
        windows.append(
            {
                "index": i,
                "action": item["action"].tolist(),
                "action_is_pad": item["action_is_pad"].tolist(),
                cam: {
                    "shape": list(item[cam].shape),
                    "channel_mean": [camera_summary(f)["channel_mean"] for f in item[cam]],
                },
                f"{cam}_is_pad": item[f"{cam}_is_pad"].tolist(),
            }
        )

    return {
        "about": ABOUT,
        "produced_by": {
            "lerobot": lerobot.__version__,
            "codebase_version": CODEBASE_VERSION,
            "torch": torch.__version__,
            "torchcodec": torchcodec.__version__,
            "script": "scripts/lerobot_fixtures.py",
        },
        "repo_id": repo_id,
        "len": len(ds),
        "num_episodes": ds.num_episodes,
        "fps": ds.fps,
        "robot_type": meta.robot_type,
        "features": {
            k: {"dtype": f["dtype"], "shape": list(f["shape"]), "names": f["names"]} for k, f in meta.features.items()
        },
        "camera_keys": cams,
        "video_keys": list(meta.video_keys),
        "image_keys": list(meta.image_keys),
        "tasks": {task: int(row.task_index) for task, row in meta.tasks.iterrows()},
        "episodes": episodes,
        "samples": samples,
        "delta_timestamps": {"delta_timestamps": delta, "windows": windows},
    }


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":  # lerobot writes stats.json keys in set order: fix it
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SPECS), nargs="*", default=sorted(SPECS))
    args = parser.parse_args()
    for name in args.only:
        spec, root = SPECS[name], OUT / name
        shutil.rmtree(root, ignore_errors=True)  # lerobot refuses to create into an existing directory
        write(spec, root)
        (root / "expected.json").write_text(json.dumps(expected(spec, root), indent=1) + "\n")
        print(f"{name}: {sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) / 1e3:.0f} kB in {root}")


if __name__ == "__main__":
    main()
