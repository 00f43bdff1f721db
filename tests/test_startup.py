"""Many small jobs in one process: ``vidtune search INDEX Q1 Q2 ...`` / ``--queries FILE``, and what a
short command imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidtune.cli.main import main
from vidtune.data.sample import write_sample_dataset
from vidtune.index.embed import EmbedConfig
from vidtune.index.search import build_index

TINY = EmbedConfig(backbone="test_efficientnet", pretrained=False, window=1.0, stride=1.0, fps=2.0)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    write_sample_dataset(root / "db", classes=3, per_class=1, seconds=2.0, fps=8, size=(96, 72), seed=5)
    videos = sorted((root / "db").rglob("*.mp4"))
    build_index(root / "ix", [root / "db"], TINY, device="cpu", use_cache=False)
    return root / "ix", videos


def test_search_answers_many_queries_in_one_process(index, tmp_path, capsys):
    ix, videos = index
    one = {}
    for v in videos[:2]:
        assert main(["search", str(ix), str(v), "-k", "2", "--json", "--no-cache"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert list(res) == ["query", "results"]  # one query: the shape it always had
        one[str(v)] = res
    listing = tmp_path / "queries.txt"
    listing.write_text(f"# two real queries and a missing one\n{videos[1]}\n\nmissing.mp4\n")
    code = main(["search", str(ix), str(videos[0]), "--queries", str(listing), "-k", "2", "--json", "--no-cache"])
    res = json.loads(capsys.readouterr().out)
    assert code == 1 and list(res) == ["queries"] and len(res["queries"]) == 3
    assert res["queries"][0] == one[str(videos[0])] and res["queries"][1] == one[str(videos[1])]
    assert res["queries"][2] == {"query": str(tmp_path / "missing.mp4"),
                                 "error": f"query not found: {tmp_path / 'missing.mp4'}"}
    assert res["queries"][0]["results"][0]["path"] == str(videos[0])  # a video finds itself first


def test_search_query_errors(index, tmp_path, capsys):
    ix, videos = index
    assert main(["search", str(ix), "--json"]) == 2
    assert "a QUERY argument is needed" in json.loads(capsys.readouterr().out)["error"]
    assert main(["search", str(ix), "--queries", str(tmp_path / "none.txt"), "--json"]) == 2
    assert "cannot read it" in json.loads(capsys.readouterr().out)["error"]
    assert main(["search", str(ix), str(videos[0]), str(videos[1]), "-k", "0", "--json"]) == 2
    assert "-k must be at least 1" in json.loads(capsys.readouterr().out)["error"]


def test_info_imports_neither_torch_nor_timm(tmp_path):
    write_sample_dataset(tmp_path / "d", classes=2, per_class=1, seconds=1.0, fps=8, size=(64, 48), seed=0)
    video = sorted((tmp_path / "d").rglob("*.mp4"))[0]
    code = ("import sys; from vidtune.cli.main import main; rc = main(['info', '--json', sys.argv[1]]); "
            "print(rc, 'torch' in sys.modules, 'timm' in sys.modules, file=sys.stderr)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "0 False False", done.stderr
    assert json.loads(done.stdout)["results"][0]["duration"] == pytest.approx(1.0, abs=0.2)
