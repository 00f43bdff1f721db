"""The runs layer: typed run config, old run folders, layering, field errors shown as flags."""

import ast
import json
import shutil
from pathlib import Path

import pytest

from vidtune.errors import CheckpointError, ConfigError
from vidtune.runs.config import ModelSpec, RunConfig

OLD_RUN = Path(__file__).parent / "data" / "run_v0_1"  # written by vidtune 0.1.0 before the runs layer existed
# `vidtune predict --json` of that run at the time it was written
OLD_SCORES = {"ball_000.mp4": {"checkerboard": 0.628203, "ball": 0.371797},
              "checkerboard_000.mp4": {"checkerboard": 0.625161, "ball": 0.374839}}


def test_a_run_folder_written_before_the_runs_layer_loads_and_predicts_the_same(tmp_path):
    from vidtune.runs.inference import predict
    from vidtune.runs.store import load_run

    model, config = load_run(OLD_RUN)
    assert isinstance(config, RunConfig) and config.labels == ["ball", "checkerboard"]
    assert config.task == "single_label" and not config.multilabel and config.frames == 3
    assert config.model.temporal == "attention" and config.model.grid == 3 and config.views == 3
    assert config.clip_seconds == 1.0
    videos = sorted(OLD_RUN.glob("*.mp4"))
    out = predict(OLD_RUN, videos, use_cache=False, workers=0)
    for r in out["results"]:
        want = OLD_SCORES[Path(r["path"]).name]
        got = {p["label"]: p["score"] for p in r["predictions"]}
        assert got == pytest.approx(want, abs=1e-4)


def test_older_configs_without_task_grid_or_sampling(tmp_path):
    raw = json.loads((OLD_RUN / "config.json").read_text())
    raw["task"] = "single"  # what runs before multi-label support did not write or wrote this way
    for key in ("sampling", "train"):
        raw.pop(key)
    raw["model"].pop("grid")
    raw["model"]["temporal"] = "mean"
    cfg = RunConfig.from_dict(raw)
    assert cfg.task == "single_label" and cfg.model.grid == 1 and cfg.views is None and cfg.clip_seconds is None
    assert cfg.label_thresholds() == [0.5, 0.5] and cfg.background_class is None


def test_run_config_round_trips_and_writes_the_documented_shape(tmp_path):
    cfg = RunConfig.read(OLD_RUN)
    cfg.save(tmp_path / "config.json")
    raw = json.loads((tmp_path / "config.json").read_text())
    old = json.loads((OLD_RUN / "config.json").read_text())
    assert raw == old  # the same file, field for field
    assert RunConfig.from_dict(raw) == cfg


@pytest.mark.parametrize("change, fragment", [
    ({"thresholds": [0.5]}, "thresholds"),
    ({"labels": ["a", "a"]}, "labels"),
    ({"task": "regression"}, "task"),
    ({"background": "nothing"}, "background"),
])
def test_a_damaged_config_is_one_clear_error_naming_the_file(tmp_path, change, fragment):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    raw = json.loads((run / "config.json").read_text())
    raw.update(change)
    (run / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=fragment) as exc:
        RunConfig.read(run)
    assert "config.json" in str(exc.value)


def test_model_spec_validates_itself():
    with pytest.raises(ConfigError) as exc:
        ModelSpec(backbone="x", temporal="lstm", frames=4)
    assert exc.value.field == "temporal"
    with pytest.raises(ConfigError) as exc:
        ModelSpec(backbone="x", temporal="mean", frames=4, grid=9)
    assert exc.value.field == "grid"


def test_train_config_errors_name_fields_and_the_cli_names_flags(tmp_path, capsys):
    from vidtune.cli.main import main
    from vidtune.train.config import TrainConfig

    with pytest.raises(ConfigError) as exc:
        TrainConfig(grid=9)
    assert exc.value.field == "grid" and "--" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        TrainConfig(lr=float("nan"))
    assert exc.value.field == "lr"
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--grid", "9", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert "--grid must be between 1 and 7" in captured.err
    assert json.loads(captured.out)["error"].startswith("--grid must be between 1 and 7")
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--no-motion-tokens", "--epochs", "0"])
    assert code == 2 and "--epochs must be >= 1" in capsys.readouterr().err


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("package, forbidden", [
    ("engines", ("vidtune.runs", "vidtune.train", "vidtune.tag", "vidtune.index", "vidtune.export", "vidtune.serve",
                 "vidtune.cli")),  # how a network runs knows no runs, manifests or commands
    ("runs", ("vidtune.train", "vidtune.tag", "vidtune.index", "vidtune.export", "vidtune.cli")),
    ("tag", ("vidtune.train", "vidtune.index", "vidtune.cli")),
    ("index", ("vidtune.train", "vidtune.tag", "vidtune.cli")),
    ("train", ("vidtune.tag", "vidtune.index", "vidtune.cli")),
    ("train", ("vidtune.export",)),  # siblings: the int8 bound is the engines layer's
    ("tag", ("vidtune.export",)),
    ("index", ("vidtune.export",)),
    ("models", ("vidtune.engines", "vidtune.runs", "vidtune.train", "vidtune.tag", "vidtune.index", "vidtune.cli")),
    ("data", ("vidtune.engines", "vidtune.runs", "vidtune.train", "vidtune.tag", "vidtune.index", "vidtune.cli")),
    ("serve", ("vidtune.cli",)),  # the web app stands on the job layers like the CLI (the Label page retrains)
])
def test_layers_import_only_downwards(package, forbidden):
    root = Path(__file__).parents[1] / "vidtune" / package
    bad = sorted(f"{p.name}: {m}" for p in root.rglob("*.py") for m in _imports(p)
                 if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert not bad, f"vidtune/{package} imports a layer above or beside it: {bad}"


def _module_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Every module of vidtune and the vidtune modules it imports (at any depth: function-level imports
    count), plus the private names (``_x``) one module takes from another."""
    root = Path(__file__).parents[1] / "vidtune"
    files = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    edges: dict[str, set[str]] = {m: set() for m in files}
    private = []
    for mod, f in files.items():
        is_pkg = f.name == "__init__.py"
        aliases = {}
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in files:
                        edges[mod].add(a.name)
                        if a.asname:
                            aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("vidtune"):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    dest = sub if sub in files else target
                    if dest in files and dest != mod:
                        edges[mod].add(dest)
                    if sub in files:
                        aliases[a.asname or a.name] = sub
                    elif a.name.startswith("_") and not a.name.startswith("__") and dest != mod:
                        private.append(f"{mod} takes {target}.{a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != mod):
                private.append(f"{mod} takes {aliases[node.value.id]}.{node.attr}")
    for mod in edges:  # a package's __init__ re-exporting its children is not a circle
        edges[mod] = {t for t in edges[mod] if not (files[t].name == "__init__.py" and mod.startswith(t + "."))}
    return edges, private


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_circle_anywhere_and_no_private_name_taken_across_modules():
    """Function-level imports count: a circle through a lazy import is still two layers leaning on each
    other. A module's underscore names are its own; another module needing one asks for a public API."""
    edges, private = _module_graph()
    assert len(edges) > 100 and "vidtune.engines.cache" in edges["vidtune.engines.build"]
    assert "vidtune.runs.lean" in edges["vidtune.runs.inference"]  # imported inside predict(): seen too
    assert not _circles(edges), _circles(edges)
    assert not private, private


def test_the_circle_finder_finds_circles():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_every_user_facing_error_type_lives_in_errors_py():
    root = Path(__file__).parents[1] / "vidtune"
    stray = []
    for p in root.rglob("*.py"):
        if p.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith("Error") for b in node.bases):
                stray.append(f"{p.relative_to(root)}: {node.name}")
    assert not stray, stray


def test_backbones_say_whether_they_support_a_token_grid():
    from vidtune.models.backbones import ClipEncoder, create_backbone
    from vidtune.train.build import default_grid

    enc = create_backbone("test_efficientnet", pretrained=False)
    assert enc.supports_grid and default_grid("attention", enc) == 3 and enc.grid == 1
    assert ClipEncoder.supports_grid is False
    assert default_grid("mean", enc) == 1


def test_eval_reports_test_clips_the_run_trained_on(tmp_path, capsys):
    """split.json records the training clips; eval names test clips that share a file or content."""
    from vidtune.cli.main import main

    data = tmp_path / "data"
    for label, video in (("ball", "ball_000.mp4"), ("checkerboard", "checkerboard_000.mp4")):
        (data / label).mkdir(parents=True)
        for i in range(3):
            shutil.copy(OLD_RUN / video, data / label / f"{i}.mp4")
            with open(data / label / f"{i}.mp4", "ab") as fh:  # distinct contents, same pictures
                fh.write(bytes([i]))
    run = tmp_path / "run"
    args = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--epochs", "1", "--workers", "0",
            "-q", "--json"]
    assert main(["train", str(data), "--out", str(run), *args]) == 0
    capsys.readouterr()
    record = json.loads((run / "split.json").read_text())
    assert len(record["train"]) + len(record["val"]) == 6 and all(r["digest"] for r in record["train"])
    test = tmp_path / "test"
    (test / "ball").mkdir(parents=True)
    shutil.copy(data / "ball" / "0.mp4", test / "ball" / "renamed_copy.mp4")  # same content, other name
    shutil.copy(OLD_RUN / "ball_000.mp4", test / "ball" / "fresh.mp4")  # content the run never saw
    assert main(["eval", str(run), str(test), "--workers", "0", "-q", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(Path(s["path"]).name, s["how"]) for s in out["shared_with_training"]] == [("renamed_copy.mp4", "same content")]
    assert main(["eval", str(run), str(data), "--workers", "0", "-q", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["shared_with_training"]) == 6 and {s["how"] for s in out["shared_with_training"]} == {"same file"}
