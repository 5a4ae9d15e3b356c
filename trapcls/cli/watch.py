"""`trapcls watch` classifies what lands in an inbox until stopped; `trapcls status` reports on it while it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trapcls.cli.options import (
    Backend,
    BackendName,
    BatchSize,
    BlankThreshold,
    Gap,
    Json,
    RunBundle,
    Threads,
    VideoFps,
    VideoMaxFrames,
    VideoTimeout,
    Workers,
    config,
    run_bundle,
    show,
)
from trapcls.watch.config import WatchConfig

W = WatchConfig  # the defaults: a field's default is its class attribute


def watch(
    ctx: typer.Context,
    inbox: Annotated[Path, typer.Argument(help="Folder where camera folders (SD-card copies) arrive.")],
    bundle: RunBundle = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Where each camera folder's predictions.csv and the journal (.trapcls/) go; default: INBOX.")] = W.out,
    folder_depth: Annotated[int, typer.Option(
        help="Folder levels under INBOX that make a camera folder (one CSV each); 0 = one CSV for everything.")]
    = W.folder_depth,
    settle: Annotated[float, typer.Option(
        help="Seconds a file's size and mtime must stay unchanged before it counts as copied.")] = W.settle,
    clip_settle: Annotated[float, typer.Option(
        help="Video clips: seconds a clip must also stay unchanged (here, or by its mtime) when no close event says "
             "its copy ended: an MP4 cannot be read until then, and a copy may pause.")] = W.clip_settle,
    rescan_interval: Annotated[float, typer.Option(
        help="Seconds between full rescans that catch files whose events were lost.")] = W.rescan_interval,
    polling: Annotated[bool, typer.Option(
        help="Poll instead of inotify: for network shares (NFS/CIFS), FUSE and exFAT mounts.")] = W.polling,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls with --polling.")] = W.poll_interval,
    file_events: Annotated[bool, typer.Option(
        help="Use file events (inotify, or polling with --polling); --no-file-events relies on the rescans alone.")]
    = W.file_events,
    events: Annotated[bool, typer.Option(
        "--events", help="Also keep an events.csv next to each predictions.csv: the frames grouped into events "
                         "(see `trapcls events`), the camera folder being the deployment.")] = W.events,
    gap: Gap = W.gap,
    backend: Backend = BackendName(W.backend),
    batch_size: BatchSize = W.batch_size,
    threads: Threads = W.threads,
    workers: Workers = W.workers,
    video_fps: VideoFps = W.video_fps,
    video_max_frames: VideoMaxFrames = W.video_max_frames,
    video_timeout: VideoTimeout = W.video_timeout,
    max_attempts: Annotated[int, typer.Option(
        help="Tries per file before it becomes an error row (a changed file starts again).")] = W.max_attempts,
    flush_interval: Annotated[float, typer.Option(
        help="While a card is being processed, rewrite its CSV at most this often (seconds); always at the end.")]
    = W.flush_interval,
    all_csv: Annotated[Optional[Path], typer.Option(
        help="Also append every result to this one CSV, a log (paths relative to INBOX; a file classified "
             "again after it changed gets a second row, while its camera CSV keeps one).")] = W.all_csv,
    blank_threshold: BlankThreshold = W.blank_threshold,
    idle_exit: Annotated[Optional[float], typer.Option(
        help="Exit after this many seconds with nothing to do (for one-off runs); default: run until stopped.")]
    = W.idle_exit,
    min_free: Annotated[float, typer.Option(
        help="MiB that must stay free on --out's disk (and --all-csv's) to take work, so the journal can always "
             "commit; below it the daemon pauses until there is room (0: no reserve).")] = W.min_free,
) -> None:
    """Classify every image and video clip that lands in INBOX exactly once and keep each camera folder's
    predictions.csv current.

    Runs until SIGTERM/Ctrl-C (which finish the current batch, write the CSVs and exit 0). A SQLite
    journal in OUT/.trapcls/ records every file, so a crash or power cut loses nothing: restart and
    it carries on. Under systemd it reports readiness and watchdog pings (see systemd/).
    """
    from trapcls.watch import Watcher

    Watcher(config(ctx, WatchConfig, bundle=run_bundle(bundle))).run()


def status(
    folder: Annotated[Path, typer.Argument(help="The watch's --out folder (default there: the inbox).")],
    json_out: Json = False,
) -> None:
    """Whether the watch runs or is paused (a full or lost disk), backlog, done, errors, last activity, throughput
    and failing files (safe while it runs)."""
    import json

    from trapcls.watch.status import status_lines, watch_status

    report = watch_status(folder)
    show([json.dumps(report, indent=2)] if json_out else status_lines(report))
