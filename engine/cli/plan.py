"""The door of ``stylegrad stylize``: its argparse namespace becomes a :class:`StylizePlan` here,
once, and nothing after this module sees the namespace.

A plan is what to compute (the :class:`~stylegrad.config.StyleConfig`, the inputs and the
outputs), how to run it (:class:`JobOptions`: ``None`` for ``-o``, a job folder otherwise) and
how to report it (:class:`Reporting`). ``stylegrad neural-style`` builds its plan from
neural-style's flags with :func:`single_image_plan`; ``stylegrad stylize`` with
:func:`plan_from_args`. Only checks that need nothing but the command line run here (the
job options that do not go together, the output paths); reading images is the run's business
(``stylegrad.cli.stylize``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from stylegrad.cli.options import config_from_args, given_options
from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}

JOB_FLAGS = ("resume", "fresh", "force", "devices", "workers", "threads", "ray", "ray_bytes")


@dataclass(frozen=True)
class JobOptions:
    """How a job folder (``--out-dir``) runs: the options of ``stylegrad.cli.job.add_job_arguments``."""

    out_dir: Path
    resume: bool = False
    fresh: bool = False
    force: bool = False
    devices: object = None          # None, "all" or a list of devices (``parse_device_list``)
    workers: Optional[int] = None
    threads: Optional[int] = None
    ray: Optional[str] = None
    ray_bytes: bool = False


@dataclass(frozen=True)
class Reporting:
    """How the command talks: ``--json`` lines on stdout, ``--quiet``, and where the text goes."""

    json: bool = False
    quiet: bool = False
    print_every_given: bool = False          # plain progress lines every --print-every only when given
    hints: Optional[Callable[[str], str]] = None   # rewrites error lines (neural-style: its flag names)
    command: Optional[Tuple[str, ...]] = None      # the command line, recorded by a job for `job status`

    @property
    def bar(self) -> bool:
        """A tqdm bar: stderr is a terminal and nothing asked for silence or JSON."""
        return not self.quiet and not self.json and sys.stderr.isatty()

    @property
    def plain_lines(self) -> bool:
        """Plain progress lines: not --quiet, not --json, and stderr is not a terminal (logs)."""
        return not self.quiet and not self.json and not sys.stderr.isatty()

    def error_message(self, message: str) -> str:
        return self.hints(message) if self.hints is not None else message


@dataclass(frozen=True)
class StylizePlan:
    config: StyleConfig                   # with the style masks, one per style (None: no mask)
    contents: Tuple[Path, ...]            # folders expanded, in order
    outputs: Tuple[Path, ...]             # one per content
    styles: Tuple[str, ...]
    pair_styles: bool = False             # content i takes style i
    overwrite: bool = False               # --save-every snapshots may replace existing files
    overwrite_remedy: str = "pass --overwrite to replace it"
    job: Optional[JobOptions] = None      # None: ``-o``, one image in this process
    report: Reporting = Reporting()


def expand_contents(items) -> List[Path]:
    """Content arguments as files: a folder stands for its images, sorted by name."""
    paths: List[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise ConfigError(f"folder {p} holds no images")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


def _with_style_masks(pairs, styles, config: StyleConfig) -> StyleConfig:
    """``--style-mask`` (style index, FILE) pairs as the config's ``style_masks``, one per --style."""
    if not pairs:
        return config
    masks = [None] * len(styles)
    for i, path in pairs:
        masks[i] = path
    return config.replace(style_masks=tuple(masks))


def check_job_options(job: Optional[JobOptions], config: StyleConfig) -> None:
    """Job options that do not go together: a usage error before any work."""
    if job is None:
        return
    if job.resume and job.fresh:
        raise ConfigError("--resume continues the folder's job, --fresh starts it over: give one")
    if job.ray_bytes and not job.ray:
        raise ConfigError("--ray-bytes needs --ray")
    if job.ray and job.devices:
        raise ConfigError("--ray places its actors itself: give --device cuda (one actor per GPU) or cpu, not --devices")
    if job.ray_bytes and (config.save_every or config.init not in ("content", "noise")):
        raise ConfigError("--ray-bytes ships inputs and outputs only: --save-every and --init PATH need a shared filesystem")


def plan_from_args(args) -> StylizePlan:
    """``stylegrad stylize``'s namespace -> its plan (the only reader of that namespace)."""
    styles = tuple(str(s) for s in args.style)
    config = _with_style_masks(getattr(args, "style_mask_list", None) or [], styles, config_from_args(args))
    used = [f for f in JOB_FLAGS if getattr(args, f, None) not in (None, False)]
    if used and not args.out_dir:
        raise ConfigError(f"--{used[0].replace('_', '-')} works with --out-dir DIR (a job folder)")
    job = None
    if args.out_dir:
        job = JobOptions(Path(args.out_dir), resume=bool(args.resume), fresh=bool(args.fresh), force=bool(args.force),
                         devices=args.devices, workers=args.workers, threads=args.threads, ray=args.ray,
                         ray_bytes=bool(args.ray_bytes))
    check_job_options(job, config)
    contents = expand_contents(args.content)
    if args.output:
        if len(contents) != 1:
            raise ConfigError(f"-o takes one content image, got {len(contents)}: use --out-dir DIR")
        outputs = [Path(args.output)]
    else:
        d = Path(args.out_dir)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"--out-dir {d} exists and is not a folder")
        ext = args.ext.lstrip(".").lower()
        outputs = [d / f"{c.stem}.{ext}" for c in contents]
        if len(set(outputs)) != len(outputs):
            raise ConfigError("two content images share a name; their outputs would collide in --out-dir")
    report = Reporting(json=bool(args.json), quiet=bool(args.quiet),
                       print_every_given="print_every" in given_options(args),
                       command=("stylegrad",) + tuple(args.argv) if getattr(args, "argv", None) else None)
    return StylizePlan(config, tuple(contents), tuple(outputs), styles, pair_styles=bool(args.pair_styles),
                       overwrite=bool(getattr(args, "overwrite", False)), job=job, report=report)


def single_image_plan(config: StyleConfig, content, styles, output, *, print_every_given: bool = False,
                      hints: Optional[Callable[[str], str]] = None,
                      overwrite_remedy: str = "pass --overwrite to replace it") -> StylizePlan:
    """A ``-o`` plan built from a config (``stylegrad neural-style``)."""
    return StylizePlan(config, (Path(content),), (Path(output),), tuple(str(s) for s in styles),
                       overwrite_remedy=overwrite_remedy,
                       report=Reporting(print_every_given=print_every_given, hints=hints))
