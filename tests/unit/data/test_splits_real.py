"""Split rules on the real shared corpora, through the data pipeline's pure functions (no Ray):

- train / val / test case ids are disjoint within every task;
- no val or test record has the prompt (case and spacing aside) of a train record of its task;
- the splits do not depend on data.seed or train.seed (every seed of a group is tested on the same records);
- the hold-out task never enters train or val: training reads data.tasks only, and refuses a hold-out task.

The corpora are read once per module.
"""

import pytest
from instructedit.config import ConfigError, DataConfig, list_registry, load_run_config, load_task
from instructedit.data.pipeline import SPLITS, build_task

TASKS = ["counterfact", "recent", "convsent", "zsre", "counterfact-mend"]
TRAINING = ("counterfact", "recent", "convsent")


def norm(prompt: str) -> str:
    return " ".join(prompt.lower().split())


@pytest.fixture(scope="module")
def built(shared_data):
    data = DataConfig(data_dir=str(shared_data), on_error="skip")
    return {t: build_task(load_task(t), shared_data, data) for t in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_split_case_ids_are_disjoint(built, task):
    splits = built[task].splits
    ids = {s: [r.case_id for r in splits[s]] for s in SPLITS}
    assert all(ids[s] for s in SPLITS), {s: len(v) for s, v in ids.items()}
    for s in SPLITS:
        assert len(set(ids[s])) == len(ids[s]), f"{task}/{s}: repeated case ids"
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        both = set(ids[a]) & set(ids[b])
        assert not both, f"{task}: {len(both)} case id(s) in {a} and {b}, e.g. {sorted(both)[:3]}"


@pytest.mark.parametrize("task", TASKS)
def test_no_test_or_val_prompt_is_a_train_prompt(built, task):
    splits = built[task].splits
    train = {norm(r.prompt) for r in splits["train"]}
    for split in ("test", "val"):
        leaked = [r.case_id for r in splits[split] if norm(r.prompt) in train]
        assert not leaked, f"{task}: {len(leaked)} {split} record(s) share a train prompt, e.g. {leaked[:3]}"


def test_splits_do_not_depend_on_the_seed(built, shared_data):
    other = DataConfig(data_dir=str(shared_data), on_error="skip", seed=7)
    for task in TRAINING:
        again = build_task(load_task(task), shared_data, other).splits
        for s in ("val", "test"):  # train may be balanced (seeded) down to balance_to
            assert [r.case_id for r in again[s]] == [r.case_id for r in built[task].splits[s]], (task, s)


@pytest.fixture(scope="module")
def training(shared_data):
    from instructedit.train.run import training_records

    cfg = load_run_config("instructedit-smollm2", {"data.data_dir": str(shared_data)})
    return cfg, training_records(cfg)


def test_the_hold_out_task_never_enters_train_or_val(built, training):
    cfg, (train, val) = training
    assert "zsre" in cfg.data.hold_out and set(cfg.data.tasks) == set(TRAINING)
    assert {r.task for r in train} == {r.task for r in val} == set(TRAINING)
    zsre_ids = {r.case_id for s in SPLITS for r in built["zsre"].splits[s]}
    assert not zsre_ids & {r.case_id for r in train + val}
    # exactly the pure pipeline's train and val splits of the training tasks, nothing else
    for split, recs in (("train", train), ("val", val)):
        want = sorted(r.case_id for t in TRAINING for r in built[t].splits[split])
        assert sorted(r.case_id for r in recs) == want, split


def test_training_refuses_a_hold_out_task(shared_data):
    from instructedit.train.run import training_records

    cfg = load_run_config("instructedit-smollm2", {"data.data_dir": str(shared_data), "data.hold_out": [],
                                                   "data.tasks": ["recent", "zsre"]})
    with pytest.raises(ConfigError, match="'zsre' is a hold-out task"):
        training_records(cfg)
    with pytest.raises(ConfigError, match=r"data.tasks and data.hold_out share \['zsre'\]"):
        load_run_config("instructedit-smollm2", {"data.tasks": ["recent", "zsre"]})


def test_no_shipped_run_or_study_trains_on_a_hold_out_task():
    from instructedit.studies.spec import list_studies, load_study

    hold = {t for t in list_registry("tasks") if load_task(t).hold_out}
    assert hold == {"zsre"}
    for name in list_registry("runs"):
        cfg = load_run_config(name)
        assert not set(cfg.data.tasks) & (hold | set(cfg.data.hold_out)), name
    for name in list_studies():
        spec = load_study(name)
        for p in spec.space:
            for v in p.labels() if p.categorical else [p.low]:
                cfg = spec.trial_config({p.key: v})
                assert not set(cfg.data.tasks) & (hold | set(cfg.data.hold_out)), (name, p.key, v)
