"""The loss presets and the study recipe compose through spktrain's config tree."""

import hydra
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

#: preset → (energy, forces, hessian weight, E/F loss class, Hessian loss)
PRESETS = {
    "default": (1.0, 1.0, 0.1, torch.nn.MSELoss, "mse"),
    "study": (1.0, 0.30, 0.09, torch.nn.MSELoss, "mse"),
    "horm": (1.0, 25.0, 1.0, torch.nn.L1Loss, "mae"),
    "hip": (1.0, 25.0, 10.0, torch.nn.L1Loss, "mae"),
    "variance": (1.0, 1.0, 0.1, torch.nn.MSELoss, "mse"),
}


@pytest.fixture(scope="module")
def compose_train(tmp_path_factory):
    work = tmp_path_factory.mktemp("hydra")
    with initialize_config_module("schnetpack.configs", version_base="1.2"):

        def _compose(*overrides):
            return compose("train", overrides=[*overrides, f"run.work_dir={work}"])

        yield _compose


def _weights(cfg):
    return [o.loss_weight for o in cfg.task.outputs]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_sets_weights_and_losses(compose_train, preset):
    cfg = compose_train("experiment=reactive_efh", f"loss={preset}")
    w_e, w_f, w_h, loss_cls, hessian_loss = PRESETS[preset]
    assert _weights(cfg) == pytest.approx([w_e, w_f, w_h])
    energy, forces, hessian = cfg.task.outputs
    for out in (energy, forces):
        assert isinstance(hydra.utils.instantiate(out.loss_fn), loss_cls)
    assert hydra.utils.instantiate(hessian).loss == hessian_loss
    balanced = "loss_balancing" in cfg.callbacks
    assert balanced == (preset == "variance")


def test_existing_experiments_keep_their_loss(compose_train):
    assert _weights(compose_train("experiment=reactive_efh")) == [1.0, 1.0, 0.1]
    assert _weights(compose_train("experiment=hessian_demo")) == [1.0, 1.0, 0.1]
    assert _weights(compose_train("experiment=reactive_ef")) == [1.0, 1.0, 0.0]
    assert _weights(compose_train("experiment=reactive_e")) == [1.0, 0.0, 0.0]


def test_baselines_switch_terms_off_under_any_preset(compose_train):
    assert _weights(compose_train("experiment=reactive_ef", "loss=study")) == [
        1.0,
        0.3,
        0.0,
    ]
    assert _weights(compose_train("experiment=reactive_eh", "loss=hip")) == [
        1.0,
        0.0,
        10.0,
    ]


def test_study_recipe(compose_train):
    cfg = compose_train("experiment=study_recipe")
    assert _weights(cfg) == pytest.approx([1.0, 0.30, 0.09])
    assert cfg.task.scheduler_cls == "schnetpack.train.ReduceLROnPlateau"
    assert cfg.task.scheduler_monitor == "val_loss"
    assert cfg.callbacks.early_stopping.monitor == "val_loss"
    assert cfg.callbacks.ema.decay == 0.99
    assert cfg.callbacks.epoch_cost._target_.endswith("EpochCost")
    assert cfg.trainer.max_epochs == 400
    assert cfg.data.size_buckets is None
    assert list(cfg.data.extrapolation_kinds) == []


@pytest.mark.parametrize(
    "device, devices", [("cpu", None), ("cuda", [0]), ("cuda:2", [2])]
)
def test_study_trains_on_the_gpu_it_scores_on(compose_train, tmp_path, device, devices):
    """``spkhess-study --device cuda:K`` trains on GPU K (it trained on GPU 0)."""
    import numpy as np

    from schnetpack_hessian.study.matrix import cpu_plan
    from schnetpack_hessian.study.runner import StudyContext, StudyData

    plan = cpu_plan()
    data = StudyData(tmp_path / "x.h5", [], np.zeros(0), np.zeros(0), {}, False)
    context = StudyContext(plan, data, tmp_path, device=device)
    args = context.spktrain_args(plan.arms[0], tmp_path / "s.npz")
    cfg = compose_train(*args)
    if devices is None:
        assert cfg.trainer.accelerator == "cpu"
    else:
        assert cfg.trainer.accelerator == "gpu"
        assert list(cfg.trainer.devices) == devices


@pytest.mark.parametrize("preset", ["recipe", "cpu"])
def test_budget_and_recipe_are_one_source(compose_train, preset):
    """Budget's defaults are study_recipe.yaml's values, and a plan's budget reaches
    spktrain through overrides of exactly the fields that differ."""
    from dataclasses import asdict

    from schnetpack_hessian.study.matrix import CPU_BUDGET, RECIPE_KEYS, Budget

    budget = Budget() if preset == "recipe" else CPU_BUDGET
    cfg = compose_train("experiment=study_recipe", *budget.overrides())
    values = asdict(budget)
    for name, key in RECIPE_KEYS.items():
        assert OmegaConf.select(cfg, key) == values[name], key
    assert cfg.task.outputs[1].loss_weight == pytest.approx(0.30)  # loss=study
    changed = {n for n in RECIPE_KEYS if values[n] != asdict(Budget())[n]}
    assert len(budget.overrides()) == len(changed)


def test_a_distilled_arm_trains_on_its_finished_teachers_products(
    compose_train, tmp_path
):
    """The distilled arm's command line composes to the teacher's run directory as
    the Hessian labels' source, and it is refused until the teacher has finished."""
    import numpy as np

    from schnetpack_hessian.study.matrix import cpu_plan
    from schnetpack_hessian.study.runner import StudyContext, StudyData, StudyError

    plan = cpu_plan()
    data = StudyData(tmp_path / "x.h5", [], np.zeros(0), np.zeros(0), {}, False)
    context = StudyContext(plan, data, tmp_path)
    student = plan.arms[-1]
    with pytest.raises(StudyError, match="has not finished"):
        context.spktrain_args(student, tmp_path / "s.npz")
    teacher_dir = context.run_dir(student.teacher)
    teacher = next(a for a in plan.arms if a.name == student.teacher)
    # the student's command line is its teacher's with the distillation added
    args = context.spktrain_args(teacher, tmp_path / "s.npz")
    args += ["+distill=teacher", f"globals.teacher={teacher_dir}"]
    cfg = compose_train(*args)
    assert cfg.task.teacher._target_.endswith("load_teacher")
    assert cfg.task.teacher.path == str(teacher_dir)
    assert cfg.task.outputs[-1].target_form == "hvp"
    assert cfg.globals.hessian_mode == "hvp"


def test_data_mix_reaches_the_data_module(compose_train, tmp_path):
    """``data.mix={hessian:1,ef_only:4}`` on the command line builds a data module
    that co-trains at that ratio."""
    from schnetpack_hessian.data import HessianDataModule

    cfg = compose_train(
        "experiment=reactive_efh",
        f"data.datapath={tmp_path / 'mixed.h5'}",
        f"data.split_file={tmp_path / 'split.npz'}",
        "data.mix={hessian:1,ef_only:4}",
    )
    assert dict(cfg.data.mix) == {"hessian": 1, "ef_only": 4}
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, HessianDataModule)
    assert dm.mix == {"hessian": 1.0, "ef_only": 4.0}


@pytest.mark.parametrize(
    "trainer, refused", [("ddp_trainer", True), ("ddp_hessian", False)]
)
def test_hessian_task_refuses_the_plain_ddp_trainer_before_training(
    compose_train, trainer, refused
):
    """SchNetPack's ``trainer=ddp_trainer`` (plain DDP) would train each rank on its
    own shard: HessianTask refuses it as a fit starts, naming ``trainer=ddp_hessian``,
    which it accepts.  (tests/test_spktrain.py trains under ddp_hessian on two
    processes.)"""
    from schnetpack_hessian.steps import training_task

    cfg = compose_train("experiment=reactive_efh", f"trainer={trainer}")
    task = training_task("schnet", "hvp", n_atom_basis=8, n_interactions=1)
    task.trainer = hydra.utils.instantiate(
        cfg.trainer, accelerator="cpu", logger=False, callbacks=None
    )
    assert task.trainer.num_devices == 2
    if refused:
        with pytest.raises(RuntimeError, match="find_unused_parameters=True") as info:
            task.on_fit_start()
        assert "trainer=ddp_hessian" in str(info.value)
    else:
        task.on_fit_start()
