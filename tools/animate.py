"""Two committed policies side by side under one attacker: an animated GIF for the README.

Each checkpoint is evaluated by its own script with --capture-video on the same evaluation episode (one episode,
--attacker, --eval-seed), so the frames are what the scripts' evaluation does, with the step, reward and cost so far
drawn on each; the two films are put side by side, labelled, scaled and written as a GIF (atomically).

    python tools/animate.py --left results/SafetyCarCircle-v0/safer/seed1/model.pt \
        --right results/SafetyCarCircle-v0/cvpo/seed1/model.pt --output results/SafetyCarCircle-v0/safer_vs_cvpo_mc.gif
"""

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw, ImageFont

from sweep import SCRIPTS  # tools/ is this script's folder, so on its path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    left: str
    """model.pt shown on the left"""
    right: str
    """model.pt shown on the right"""
    output: str
    """the GIF to write"""
    attacker: str = "mc"
    """attacker of both episodes (none: natural)"""
    eval_seed: int = 1
    """evaluation seed of the episode (the same initial state on both sides)"""
    left_label: Optional[str] = None
    """caption of the left film (default: its script's name in capitals)"""
    right_label: Optional[str] = None
    """caption of the right film"""
    scale: float = 0.6
    """frame size relative to the scripts' 480 x 360 renders"""
    every: int = 3
    """keep every N-th frame; each shows for 0.1 s, so a Circle task's GIF plays N times faster than real time"""


def fail(message):
    raise SystemExit(f"animate.py: error: {message}")


def film(checkpoint, args, folder):
    """Frames (H, W, 3) of one evaluation episode of `checkpoint` under args.attacker, made by its own script."""
    if not os.path.isfile(checkpoint):
        fail(f"checkpoint {checkpoint!r} does not exist")
    try:
        algo = torch.load(checkpoint, map_location="cpu", weights_only=True)["algo"]
    except Exception as exc:  # any unreadable file is the same bad input to the user
        fail(f"checkpoint {checkpoint!r} is not a checkpoint of these scripts ({type(exc).__name__})")
    if algo not in SCRIPTS:
        fail(f"checkpoint {checkpoint!r} was written by {algo!r}, not one of {', '.join(SCRIPTS)}")
    out = os.path.join(folder, "eval.json")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, f"{algo}.py"), "--eval-checkpoint", checkpoint,
                           "--eval-episodes", "1", "--eval-attackers", args.attacker, "--eval-seed",
                           str(args.eval_seed), "--capture-video", "--video-episodes", "1", "--eval-output", out],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{algo}.py could not film {checkpoint!r}: {proc.stderr.strip().splitlines()[-1]}")
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(os.path.join(folder, "videos", args.attacker, "episode0.mp4"))
    width, height = next(reader)["size"]
    return algo, [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]


def main(args):
    if not 0 < args.scale <= 1 or args.every < 1:
        fail(f"--scale must be in (0, 1] and --every >= 1, got {args.scale} and {args.every}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        fail(f"--output {args.output!r}: its folder does not exist")
    sides = []
    for checkpoint, label in ((args.left, args.left_label), (args.right, args.right_label)):
        with tempfile.TemporaryDirectory() as tmp:
            algo, frames = film(checkpoint, args, tmp)
        sides.append((label or algo.upper().replace("_", "-"), frames))
    length = max(len(frames) for _, frames in sides)
    font = ImageFont.load_default(size=26)
    gif = []
    for t in range(0, length, args.every):
        panels = []
        for label, frames in sides:
            panel = Image.fromarray(frames[min(t, len(frames) - 1)])
            ImageDraw.Draw(panel).text((10, panel.height - 30), f"{label}, attacker {args.attacker}", font=font,
                                       fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
            panels.append(panel.resize((round(panel.width * args.scale), round(panel.height * args.scale))))
        frame = Image.new("RGB", (sum(p.width for p in panels) + 4, panels[0].height), (255, 255, 255))
        frame.paste(panels[0], (0, 0))
        frame.paste(panels[1], (panels[0].width + 4, 0))
        gif.append(frame.quantize(colors=32))
    tmp = f"{args.output}.tmp{os.getpid()}"
    gif[0].save(tmp, format="GIF", save_all=True, append_images=gif[1:], duration=100, loop=0, optimize=True)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {len(gif)} frames, {os.path.getsize(args.output) / 1e6:.2f} MB")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__.splitlines()[0]))
