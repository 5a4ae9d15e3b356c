"""`trapcls status`: what the watch writing into a folder is doing, from its journal, its state file and the disk.

`watch_status` collects the report (a dict, as `--json` prints it), `status_lines` renders it as text.
Both read only, so they are safe while the daemon runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from trapcls.core.frames.discover import CLASSIFIED, Unclassified
from trapcls.core.system.exceptions import DataError
from trapcls.core.system.fsutil import storage_fault
from trapcls.core.system.names import display
from trapcls.watch.journal import CorruptJournal, Journal
from trapcls.watch.paths import journal_path, state_path
from trapcls.watch.state import PAUSED, RUNNING, daemon_state, describe


def watch_status(out: Path) -> dict:
    """The report on the watch writing into `out`: "daemon" (trapcls.watch.state.daemon_state), "journal" (its
    path, None when a running daemon has written nothing yet), the journal's counts (all files, and under "clips"
    the video clips among them) and failing files, and "unclassified" (videos it does not decode and other files
    per camera folder, as the rescans found them).

    No journal, or one that cannot be opened, is an error (DataError) unless a daemon runs for `out`: one whose
    disk was full from the start may not have made it yet, and on a full or failing disk the journal may not
    open even to be read (then "unreadable" says why)."""
    daemon = daemon_state(out, state_path(out))
    path = journal_path(out)
    live = daemon["state"] in (RUNNING, PAUSED)
    if live and _nothing_written(path):
        return {"daemon": daemon, "journal": None, "unclassified": {}}
    try:
        journal = Journal(path, readonly=True)
    except DataError as exc:
        if not live or isinstance(exc, CorruptJournal) or storage_fault(exc) is None:
            raise
        # SQLite needs room even to read a WAL journal: on a full disk the daemon's pause is the news.
        return {"daemon": daemon, "journal": str(path), "unreadable": str(exc), "unclassified": {}}
    try:
        stats = journal.stats()
        unclassified = journal.unclassified()
    finally:
        journal.close()
    # Names as valid UTF-8 for the terminal and for JSON (the journal keeps them one-to-one: trapcls.watch.journal)
    stats["failing"] = [{**f, "path": display(f["path"]), "error": display(f["error"])} for f in stats["failing"]]
    unclassified = {display(folder): {**counts, "examples": list(map(display, counts["examples"]))}
                    for folder, counts in unclassified.items()}
    return {"daemon": daemon, "journal": str(path), **stats, "unclassified": unclassified}


def status_lines(report: dict) -> list[str]:
    """The report of `watch_status` as text, one line per fact."""
    lines = [f"daemon: {describe(report['daemon'])}"]
    if report["journal"] is None:
        return [*lines, "journal: nothing written yet (no results, no backlog recorded)"]
    if "unreadable" in report:
        return [*lines, f"journal: {report['unreadable']}"]
    stamp = report["last_activity"]
    last = datetime.fromtimestamp(stamp).isoformat(timespec="seconds") if stamp else "never"
    clips = report.get("clips") or {}
    lines += [f"{key}: {report[key]}{_of_which(report[key], clips.get(key, 0)) if any(clips.values()) else ''}"
              for key in ("backlog", "done", "errors")]
    lines += [f"last activity: {last}",
              f"throughput (last {report['recent_window_s'] / 60:.0f} min): {report['files_per_s_recent']:.2f} files/s"]
    for f in report["failing"]:
        state = "gave up" if f["status"] == "error" else f"will retry ({f['attempts']} tries so far)"
        lines.append(f"failing: {f['path']}: {f['error']} [{state}]")
    for name, counts in report["unclassified"].items():
        u = Unclassified(**counts)
        lines.append(f"not classified: {name}: {u.describe()} ({u.example()}); {CLASSIFIED}")
    return lines


def _of_which(files: int, clips: int) -> str:
    """" (N frames and M clips)" of a count other than 0, where the journal holds clips (a frames-only watch reads
    as it always did)."""
    if not files:
        return ""
    frames = files - clips
    return f" ({frames} frame{'' if frames == 1 else 's'} and {clips} clip{'' if clips == 1 else 's'})"


def _nothing_written(path: Path) -> bool:
    """No journal yet, or the empty file SQLite makes before the first write that failed."""
    try:
        return path.stat().st_size == 0
    except (FileNotFoundError, NotADirectoryError):  # no journal, or OUT (or its .trapcls) is no folder
        return True
