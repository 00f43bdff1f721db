"""Robustness report: mPC/rPC arithmetic, the report on a real (tiny) run, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from vidtune.cli.main import main
from vidtune.data.sample import write_sample_dataset
from vidtune.runs.robustness import summarize

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "3", "--epochs", "2", "--workers", "1"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_mpc_and_rpc_on_a_hand_made_example():
    # clean 80%; blur 80/60/40 -> 60; noise 50/30/10 -> 30; mPC = (60 + 30) / 2 = 45; rPC = 45 / 80
    top1 = {"blur": {1: 0.8, 2: 0.6, 3: 0.4}, "noise": {1: 0.5, 2: 0.3, 3: 0.1}}
    s = summarize(0.8, top1)
    assert s["mPC"] == pytest.approx(0.45)
    assert s["rPC"] == pytest.approx(0.5625)
    assert s["per_corruption"]["blur"] == pytest.approx({"mPC": 0.6, "rPC": 0.75})
    assert s["per_corruption"]["noise"] == pytest.approx({"mPC": 0.3, "rPC": 0.375})
    # each corruption weighs the same whatever number of severities it was measured at
    s = summarize(0.5, {"a": {1: 1.0}, "b": {1: 0.0, 2: 0.0, 3: 0.0}})
    assert s["mPC"] == pytest.approx(0.5) and s["rPC"] == pytest.approx(1.0)
    assert summarize(0.0, {"a": {1: 0.0}})["rPC"] is None  # undefined, not a division error
    with pytest.raises(ValueError):
        summarize(0.5, {"a": {}})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    write_sample_dataset(root / "train", per_class=4, seconds=1.0, fps=8, size=(96, 80), seed=0)
    write_sample_dataset(root / "test", per_class=2, seconds=1.0, fps=8, size=(96, 80), seed=1)
    assert main(["train", str(root / "train"), "--out", str(root / "run"), *TINY, "--json", "--quiet"]) == 0
    return root


def test_report_arithmetic_through_the_pipeline(tiny_run, monkeypatch):
    """Fake logits per pass: the report must turn them into exactly the expected cells, mPC and rPC."""
    import vidtune.runs.inference as inference
    from vidtune.runs.robustness import robustness_report

    calls = []

    def fake_run_clips(model, config, items, *, frame_op=None, **kw):
        labels = config.labels
        truth = [labels.index(it.label) for it in items]
        calls.append(None if frame_op is None else frame_op.cache_id)
        # clean: all right. noise s1: first half right; s3: none right. blur: one clip fails to decode
        n_right = len(items) if frame_op is None else {
            ("gaussian_noise", 1): len(items) // 2, ("gaussian_noise", 3): 0,
            ("defocus_blur", 1): len(items), ("defocus_blur", 3): len(items)}[(frame_op.name, frame_op.severity)]
        out = {}
        for i, t in enumerate(truth):
            logit = torch.zeros(len(labels))
            logit[t if i < n_right else (t + 1) % len(labels)] = 5.0
            out[i] = logit
        skipped = []
        if frame_op is not None and frame_op.name == "defocus_blur" and frame_op.severity == 3:
            del out[0]
            skipped = [{"path": str(items[0].path), "reason": "boom"}]
        return out, skipped

    monkeypatch.setattr(inference, "run_clips", fake_run_clips)
    r = robustness_report(tiny_run / "run", tiny_run / "test", corruptions=["gaussian_noise", "defocus_blur"],
                          severities=[1, 3], device="cpu", seed=5)
    n = r["n"]
    assert n == 8 and r["clean_top1"] == 1.0
    assert r["results"]["gaussian_noise"]["top1"] == {"1": 0.5, "3": 0.0}
    assert r["results"]["defocus_blur"]["top1"] == {"1": 1.0, "3": pytest.approx(7 / 8)}  # a broken clip is wrong
    assert r["results"]["gaussian_noise"]["mPC"] == pytest.approx(0.25)
    assert r["mPC"] == pytest.approx((0.25 + 15 / 16) / 2)
    assert r["rPC"] == pytest.approx(r["mPC"])
    assert r["errors"] == [{"corruption": "defocus_blur", "severity": 3, "path": str(r["errors"][0]["path"]),
                            "reason": "boom"}]
    assert calls[0] is None and len(calls) == 5
    assert all("seed5" in c for c in calls[1:])


def test_cli_json_table_and_heat_map(capsys, tiny_run, tmp_path):
    png = tmp_path / "heat.png"
    code, out, err = run(capsys, "robustness", tiny_run / "run", tiny_run / "test", "--corruptions",
                         "gaussian_noise,frame_drop", "--severities", "1,5", "--workers", "1", "--plot", png,
                         "--json", "--quiet")
    assert code == 0, err
    rep = json.loads(out)
    assert {"clean_top1", "mPC", "rPC", "results", "severities", "corruptions", "n", "skipped"} <= set(rep)
    assert rep["corruptions"] == ["gaussian_noise", "frame_drop"] and rep["severities"] == [1, 5]
    cells = [rep["results"][c]["top1"][s] for c in rep["corruptions"] for s in ("1", "5")]
    assert all(0.0 <= x <= 1.0 for x in cells)
    assert rep["mPC"] == pytest.approx(sum(cells) / 4)
    if rep["clean_top1"]:
        assert rep["rPC"] == pytest.approx(rep["mPC"] / rep["clean_top1"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # clean top-1 is what `vidtune eval` reports for the same clips
    code, out, _ = run(capsys, "eval", tiny_run / "run", tiny_run / "test", "--workers", "1", "--json")
    assert code == 0 and json.loads(out)["top1"] == pytest.approx(rep["clean_top1"])
    # the table, and the default heat map in the run folder
    code, out, err = run(capsys, "robustness", tiny_run / "run", tiny_run / "test", "--corruptions", "contrast",
                         "--severities", "2", "--workers", "1")
    assert code == 0, err
    assert "contrast" in out and "mPC" in out and "rPC" in out
    assert (tiny_run / "run" / "robustness.png").is_file()


def test_corruptions_change_the_models_outputs(tiny_run):
    from vidtune.data.corruptions import get_corruption
    from vidtune.data.manifest import load_dataset
    from vidtune.runs.inference import run_clips
    from vidtune.runs.store import load_run

    model, config = load_run(tiny_run / "run")
    items = load_dataset(tiny_run / "test")[:3]
    kw = dict(device=torch.device("cpu"), workers=0, output="frames", use_cache=False)
    clean, _ = run_clips(model, config, items, **kw)
    noisy, _ = run_clips(model, config, items, frame_op=get_corruption("gaussian_noise", 5), **kw)
    again, _ = run_clips(model, config, items, frame_op=get_corruption("gaussian_noise", 5), **kw)
    for i in clean:
        assert not torch.allclose(clean[i], noisy[i])
        torch.testing.assert_close(noisy[i], again[i])  # seeded: the same corrupted clips every time


@pytest.mark.parametrize("argv_tail,message", [
    (["--corruptions", "fog"], "unknown corruption 'fog'"),
    (["--severities", "0,9"], "between 1 and 5"),
    (["--corruptions", "gausian_noise"], "Did you mean gaussian_noise"),
])
def test_bad_options_exit_2(capsys, tiny_run, argv_tail, message):
    code, out, err = run(capsys, "robustness", tiny_run / "run", tiny_run / "test", *argv_tail, "--json")
    assert code == 2
    assert message in err and message in json.loads(out)["error"]
    code, _, err = run(capsys, "robustness", tiny_run / "nope", tiny_run / "test")
    assert code == 2 and "Traceback" not in err
