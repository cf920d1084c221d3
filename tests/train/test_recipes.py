"""Recipes, schedules and the batch split: pure functions, checked against their published sources."""
from __future__ import annotations

import pytest

from job import recipes
from job.checkpoint import ConfigMismatch, check_resumable
from job.distributed import micro_batching


def test_fast_preset_follows_ffcv_rn50_configs():
    cfg = recipes.build_config({"preset": "fast", "epochs": 16})
    assert cfg.peak_lr == pytest.approx(1.7 * 1024 / 4096)          # lr 1.7 at 8 x 512 images
    assert (cfg.label_smoothing, cfg.momentum, cfg.weight_decay, cfg.decay_bn_and_bias) == (0.1, 0.9, 1e-4, False)
    assert (cfg.res_start_ramp, cfg.res_end_ramp) == (11, 13)        # rn50_16_epochs.yaml
    assert [recipes.resolution(cfg, e) for e in (0, 11, 12, 13, 15)] == [160, 160, 192, 192, 192]
    assert (cfg.eval_resolution, cfg.eval_resize, cfg.eval_flip_tta) == (224, 256, True)
    spe = 100
    # FFCV "cyclic": 1e-4*lr at step 0, lr at epoch 2, then linear to 0 at the last epoch
    assert recipes.lr_factor(cfg, 0, spe) == pytest.approx(1e-4)
    assert recipes.lr_factor(cfg, 2 * spe, spe) == pytest.approx(1.0)
    assert recipes.lr_factor(cfg, 9 * spe, spe) == pytest.approx(0.5)
    assert recipes.lr_factor(cfg, 16 * spe - 1, spe) == pytest.approx(1 / (14 * spe), rel=1e-6)
    assert recipes.build_config({"preset": "fast", "epochs": 40}).res_start_ramp == 29


def test_classic_and_target_presets():
    classic = recipes.build_config({"preset": "classic"})
    assert (classic.epochs, classic.nesterov, classic.warmup_epochs, classic.mixup_alpha, classic.cutmix_alpha) == \
        (90, True, 5, 0.2, 1.0)
    spe = 10
    assert recipes.lr_factor(classic, 5 * spe, spe) == pytest.approx(1.0)
    assert recipes.lr_factor(classic, int(47.5 * spe), spe) == pytest.approx(0.5)   # cosine midpoint
    target = recipes.build_config({"preset": "target"})
    assert target.target_top1 == 0.60
    assert [round(recipes.lr_factor(target, e * spe, spe), 6) for e in (10, 30, 60, 85)] == [1.0, 0.1, 0.01, 0.001]


def test_bad_overrides_are_named():
    with pytest.raises(ValueError, match="unknown training override.*'lr_max'"):
        recipes.build_config({"preset": "fast", "lr_max": 1})
    with pytest.raises(ValueError, match="unknown training preset 'quick'"):
        recipes.build_config({"preset": "quick"})
    with pytest.raises(ValueError, match="warmup_epochs 2"):
        recipes.build_config({"preset": "fast", "epochs": 2})


def test_micro_batching_keeps_the_global_batch():
    assert micro_batching(1024, 8, 128) == (1, 128)
    assert micro_batching(1024, 1, 128) == (8, 128)      # same global batch on a single-GPU relaunch
    assert micro_batching(1024, 4, 96) == (4, 64)
    with pytest.raises(ValueError, match="not divisible by the 3 training processes"):
        micro_batching(1024, 3, 128)


def test_operational_changes_resume_and_trajectory_changes_are_refused():
    base = recipes.build_config({"preset": "fast", "epochs": 16})
    state = {"config": recipes.resume_fields(base), "config_hash": recipes.config_hash(base), "global_step": 7}
    check_resumable(state, recipes.build_config({"preset": "fast", "epochs": 16, "workers": 2, "log_every": 1,
                                                 "max_micro_batch": 32, "checkpoint_every_min": 1}))
    with pytest.raises(ConfigMismatch, match=r"global_batch: 1024 -> 512.*peak_lr"):
        check_resumable(state, recipes.build_config({"preset": "fast", "epochs": 16, "global_batch": 512}))
