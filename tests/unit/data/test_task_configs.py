"""Contract over every shipped task YAML (like lm-evaluation-harness: one YAML per task)."""

import pytest
from instructedit.config import list_registry, load_task
from instructedit.data.readers import READERS

TASKS = list_registry("tasks")


def test_the_five_tasks_ship():
    assert {"counterfact", "recent", "convsent", "zsre", "counterfact-mend"} <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_task_yaml_contract(name, shared_data):
    t = load_task(name)
    assert t.description.strip() and t.display_name.strip()
    assert all(s in t.template for s in ("{task}", "{instruction}", "{prompt}"))
    assert len(t.instructions) >= 10 and len(t.unseen_pool) >= 1 and len(t.seen_pool) >= 9
    ids = [i.id for i in t.instructions]
    assert len(set(ids)) == len(ids)
    assert len({i.text for i in t.instructions}) == len(ids)
    for s in t.sources:
        assert s.reader in READERS and s.role in ("all", "train", "val", "test")
        assert (shared_data / s.path).exists(), s.path
    if any(s.reader == "convsent" for s in t.sources):  # sentiment records: the two slots are filled per record
        assert all("[LABEL]" in i.text and "[TOPIC]" in i.text for i in t.instructions)
    assert isinstance(t.order, int)  # every shipped task has its place in task lists and tables


def test_specific_task_settings():
    # (no loss or metric list in a task YAML: the loss follows each record's data, the metrics its probes)
    assert load_task("convsent").balance_to == 1427
    assert load_task("zsre").hold_out and not load_task("counterfact").hold_out
    assert [s.role for s in load_task("counterfact-mend").sources] == ["train", "val", "test"]
