"""Progress on a stderr that is not a terminal: plain timestamped lines at a steady pace, in seconds of video."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time

from vidtune.cli.console import LineTask, RichProgress
from vidtune.progress import each_video

LINE = re.compile(r"^\[(\d\d):(\d\d):(\d\d)\] (.+?): (.+)$")


def test_line_task_prints_at_a_steady_pace_with_rate_and_eta():
    buf = io.StringIO()
    task = LineTask("reading", 40.0, "s", interval=0.3, stream=buf)
    for _ in range(8):  # 1 s of video per 0.12 s: a 10% step every ~0.5 s, one line every 0.3 s
        time.sleep(0.12)
        task.advance(1)
    task.close()
    lines = buf.getvalue().splitlines()
    assert 2 <= len(lines) <= 6, lines
    assert all(LINE.match(x) for x in lines), lines
    assert "of video" in lines[0] and "%" in lines[0] and "ETA" in lines[0] and "real time" in lines[0]
    assert "8.0s/40.0s of video (20%), done in" in lines[-1]


def test_line_task_keeps_a_sign_of_life_while_one_long_item_reports_nothing():
    buf = io.StringIO()
    task = LineTask("embedding", 2, "videos", interval=0.2, stream=buf)
    time.sleep(0.75)  # nothing advances: the ticker still writes
    task.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 3 and "0/2 videos (0%)" in lines[0] and "elapsed" in lines[0]


def test_a_short_task_prints_nothing_and_quiet_prints_nothing(capsys, monkeypatch):
    buf = io.StringIO()
    task = LineTask("quick", 3, "videos", interval=10, stream=buf)
    task.advance(3)
    task.close()
    assert buf.getvalue() == ""
    monkeypatch.setenv("VIDTUNE_PROGRESS_INTERVAL", "0.05")
    with RichProgress(False).task("quiet", 2) as t:
        time.sleep(0.2)
        t.advance(2)
    assert capsys.readouterr().err == ""


def test_each_video_counts_seconds_of_video_reported_inside_a_video():
    seen = []

    class Task:
        def advance(self, n=1):
            seen.append(("advance", n))

        def update(self, **f):
            seen.append(("completed", f["completed"]))

    class Prog:
        def task(self, description, total, unit="videos"):
            import contextlib

            seen.append(("task", total, unit))
            return contextlib.nullcontext(Task())

    def work(path, on_progress):
        for s in (5, 50, 99):  # the last report overshoots the video's 30 s: capped
            on_progress(s)
        return path

    done, skipped = each_video(["a", "b"], work, "reading", Prog(), durations=[30.0, 70.0])
    assert done == ["a", "b"] and skipped == []
    assert seen[0] == ("task", 100.0, "s")
    assert [v for k, v, *_ in seen[1:]] == [5.0, 30.0, 30.0, 30.0, 35.0, 80.0, 100.0, 100.0]


def test_a_non_tty_run_writes_progress_lines_while_it_runs(tmp_path):
    """`vidtune embed` of a 40 s video with stderr on a pipe: timestamped lines arrive during the run,
    counting seconds of video (one long video does not sit at 0/1)."""
    from tests.videos import write_indexed_video

    video = write_indexed_video(tmp_path / "long.mp4", 400, fps=10, gop=10)
    env = {**os.environ, "VIDTUNE_PROGRESS_INTERVAL": "0.3", "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "vidtune", "embed", str(video), "--out", str(tmp_path / "e"),
                             "--backbone", "test_efficientnet", "--no-pretrained", "--fps", "4", "--tta", "none",
                             "--no-cache", "--device", "cpu", "--runtime", "torch", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    arrivals: list[tuple[float, str]] = []

    def read():
        for line in proc.stderr:
            arrivals.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    out = proc.stdout.read()
    proc.wait(timeout=300)
    ended = time.monotonic()
    reader.join()
    assert proc.returncode == 0, arrivals
    assert '"segments"' in out
    progress = [(t, x) for t, x in arrivals if LINE.match(x) and x.split("] ", 1)[1].startswith("embedding")]
    assert len(progress) >= 3, arrivals
    assert all("/40.0s of video" in x for _, x in progress), progress
    assert any("ETA" in x for _, x in progress) and "done in" in progress[-1][1]
    moved = {x.split(": ", 1)[1].split(" of video")[0] for _, x in progress[:-1]}
    assert len(moved) >= 2, progress  # the count moves inside the one video
    # written while the job ran, not all at the end
    assert progress[-2][0] - progress[0][0] >= 0.25 and ended - progress[0][0] >= 0.3, arrivals
    stamps = [LINE.match(x).groups()[:3] for _, x in progress]
    assert stamps == sorted(stamps)
