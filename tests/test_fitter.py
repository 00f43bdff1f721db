"""The shared optimisation loop: step floor for early stopping, weight averaging, checkpoint choice,
class balancing by logit adjustment."""

import torch
from torch import nn

from vidtune.progress import NullProgress
from vidtune.train.config import TrainConfig
from vidtune.train.fitter import Fitter, param_groups, schedule_epochs
from vidtune.train.task import Task


class _Toy:
    """A linear classifier on fixed random tensors; validation is pure noise, so it never improves
    for long and early stopping wants to fire."""

    def __init__(self, n=24, batch=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():  # the same initial weights whatever ran before (the global RNG)
            torch.manual_seed(seed)
            self.module = nn.Linear(4, 2)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.randint(2, (n,), generator=g)
        self.xv = torch.randn(6, 4, generator=g)
        self.yv = torch.randint(2, (6,), generator=g)
        self.task = Task(False, ["a", "b"], None, 0.0)
        self.task.balance_for(self.y, "none", torch.device("cpu"))
        self.has_val, self.scaler, self.batch, self.fitter = True, None, batch, None

    def train_epoch(self, epoch):
        for s in range(0, len(self.y), self.batch):
            self.fitter.backward(self.task.train_loss(self.module(self.x[s : s + self.batch]), self.y[s : s + self.batch]))
        return 0.0, 0.0

    @torch.no_grad()
    def evaluate(self):
        logits = self.module(self.xv)
        return {**self.task.metrics(logits, self.yv), "loss": float(self.task.loss(logits, self.yv))}

    def extra_state(self):
        return None

    def load_extra_state(self, state):
        pass


def _run(cfg, toy=None):
    toy = toy or _Toy()
    steps = -(-len(toy.y) // toy.batch)
    fitter = toy.fitter = Fitter(cfg, param_groups(toy.module, cfg.lr, cfg.weight_decay), steps, NullProgress())
    history, best, best_epoch = fitter.run(toy, toy.task, torch.Generator().manual_seed(0))
    return fitter, history, best, best_epoch, toy


def test_early_stopping_never_fires_before_the_step_floor():
    base = TrainConfig(epochs=200, patience=1, lr=1e-3).resolved("cpu")
    fitter, history, *_ = _run(base)
    assert len(history) < 200 and fitter.steps == 3 * len(history)  # stopped early, 3 steps an epoch
    floor = TrainConfig(epochs=200, patience=1, lr=1e-3, min_steps=150).resolved("cpu")
    fitter, history, *_ = _run(floor)
    assert fitter.steps >= 150 and len(history) >= 50


def test_min_steps_lengthens_a_schedule_of_few_steps():
    cfg = TrainConfig(epochs=10, min_steps=300).resolved("cpu")
    assert schedule_epochs(cfg, 3) == 100 and schedule_epochs(cfg, 100) == 10
    fitter, history, *_ = _run(TrainConfig(epochs=10, min_steps=60, patience=1000, lr=1e-3).resolved("cpu"))
    assert len(history) == 20 and fitter.steps == 60
    assert fitter.sched.last_epoch == 60  # the cosine schedule spans the lengthened run


def test_ema_keeps_an_average_of_the_weights_and_select_last_keeps_it():
    cfg = TrainConfig(epochs=6, patience=1000, lr=1e-2, ema=0.9, select="last").resolved("cpu")
    fitter, history, best, best_epoch, toy = _run(cfg)
    assert best_epoch == 6
    live = toy.module.state_dict()
    assert set(best) == set(live)
    torch.testing.assert_close(best["weight"], fitter.ema["weight"])
    assert not torch.allclose(best["weight"], live["weight"])  # an average, not the last step's weights


def test_select_loss_picks_the_lowest_smoothed_validation_loss():
    cfg = TrainConfig(epochs=12, patience=1000, lr=5e-2, select="loss").resolved("cpu")
    _, history, _, best_epoch, _ = _run(cfg)
    smooth, s = [], None
    for row in history:
        s = row["val_loss"] if s is None else 0.5 * row["val_loss"] + 0.5 * s
        smooth.append(s)
    assert best_epoch == 1 + min(range(len(smooth)), key=smooth.__getitem__)


def test_logit_adjustment_adds_the_log_prior_in_training_only():
    task = Task(False, ["a", "b"], None, 0.0)
    y = torch.tensor([0] * 9 + [1])
    task.balance_for(y, "logit_adjust", torch.device("cpu"))
    logits = torch.zeros(2, 2)
    target = torch.tensor([0, 1])
    prior = torch.tensor([0.9, 0.1]).log()
    torch.testing.assert_close(task.train_loss(logits, target), task.loss(logits + prior, target))
    assert task.train_loss(logits, target) != task.loss(logits, target)


def test_time_reversal_plays_paired_clips_backwards_with_the_partner_label():
    from vidtune.errors import ConfigError

    labels = ["backward", "forward", "still"]
    cfg = TrainConfig(reverse_pairs="forward:backward")
    task = Task(False, labels, None, 0.0)
    task.set_reversal(cfg.reverse_map(labels))
    x = torch.arange(64 * 4, dtype=torch.float32).reshape(64, 4, 1)  # (B, T, D): frame index order per clip
    y = torch.tensor([0, 1, 2, 1] * 16)
    xr, yr = task.time_reverse(x, y, torch.Generator().manual_seed(0))
    flipped = (xr[:, 0, 0] != x[:, 0, 0])
    assert 10 < int(flipped.sum()) < 40 and not flipped[y == 2].any()  # about half of the paired clips
    torch.testing.assert_close(xr[flipped], x[flipped].flip(1))
    assert (yr[flipped] == 1 - y[flipped]).all() and (yr[~flipped] == y[~flipped]).all()
    import pytest

    with pytest.raises(ConfigError, match="labels the data does not have"):
        TrainConfig(reverse_pairs="up:down").reverse_map(labels)
    with pytest.raises(ConfigError):
        TrainConfig(reverse_pairs="up")


def test_default_step_floor_and_augmentation_follow_the_strategy():
    from vidtune.train.config import MIN_STEPS

    linear = TrainConfig().resolved("cpu")
    assert linear.strategy == "linear" and linear.min_steps == MIN_STEPS and linear.augment == "robust"
    assert TrainConfig(epochs=5).resolved("cpu").min_steps == 0  # epochs asked for are epochs run
    assert TrainConfig(min_steps=7, epochs=5).resolved("cpu").min_steps == 7
    tuned = TrainConfig(strategy="partial").resolved("cpu")
    assert tuned.min_steps == 0 and tuned.augment == "none" and tuned.epochs == 10
