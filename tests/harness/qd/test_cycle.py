import pytest

from harness.errors import ConfigError
from harness.qd.archive import AddStatus
from harness.qd.cycle import CycleQD, QDSettings
from harness.store.recipes import from_dict, recipe_id

TASKS = ["a", "b", "c"]
EXPERTS = {"ea": {"a": 0.9, "b": 0.1, "c": 0.2}, "eb": {"a": 0.1, "b": 0.8, "c": 0.1},
           "ec": {"a": 0.2, "b": 0.1, "c": 0.7}}


def seeded(**kw):
    qd = CycleQD(QDSettings(tasks=TASKS, experts=list(EXPERTS), generations=kw.pop("generations", 12), **kw),
                 recipe_id)
    jobs = [qd.ask() for _ in EXPERTS]
    assert qd.ask() is None  # children wait until every expert is scored
    for j in jobs:
        assert j.kind == "seed"
        qd.tell(j, EXPERTS[j.model_id])
    return qd


def fake_scores(job):
    h = int(job.model_id[2:6], 16) / 0xFFFF
    return {"a": 0.3 + 0.5 * h, "b": 0.5 * (1 - h), "c": 0.25}


def test_experts_seed_every_archive_with_paper_bounds():
    qd = seeded()
    assert all(len(a) == 3 for a in qd.archives.values())
    assert qd.archives["a"].bounds["b"] == pytest.approx((0.85 * 0.1, 1.15 * 0.8))


def test_active_task_rotates_with_flip_interval():
    qd = seeded(flip_interval=2)
    actives = []
    while (job := qd.ask()) is not None:
        actives.append(job.active_task)
        qd.tell(job, fake_scores(job))
    assert actives == ["a", "a", "b", "b", "c", "c"] * 2
    assert qd.done


def test_child_recipe_carries_operator_parameters():
    qd = seeded()
    job = qd.ask()
    r = job.recipe
    assert r["parents"] == job.parents and len(set(job.parents)) == 2
    assert set(job.parents) <= {e.model_id for e in qd.archives[job.active_task].elites()}
    # the default: the official additive SVD mutation along the active task's best expert, w_max 0.1
    assert r["mutation"]["kind"] == "svd_official" and r["mutation"]["w_max"] == 0.1 and r["merge"]["normalize"]
    assert r["svd_expert"] == max(EXPERTS, key=lambda e: EXPERTS[e][job.active_task])
    assert job.model_id == recipe_id(from_dict(r))
    # a mutation's unset parameters are its own defaults; set ones are recorded as given
    r = seeded(mutation="svd").ask().recipe
    assert r["mutation"]["kind"] == "svd" and r["mutation"]["w_max"] == 0.3 and r["svd_expert"] is None
    r = seeded(mutation="gaussian_official", mutation_sigma=1e-3).ask().recipe
    assert r["mutation"] == {"kind": "gaussian_official", "seed": r["mutation"]["seed"], "w_max": 0.0, "sigma": 1e-3}


def test_cyclic_offers_to_all_archives_independent_only_to_its_own():
    for mode, expected in (("cyclic", 3), ("independent", 1)):
        qd = seeded(mode=mode)
        job = qd.ask()
        statuses = qd.tell(job, {"a": 0.99, "b": 0.99, "c": 0.99})
        assert len(statuses) == expected
        assert all(s == AddStatus.NEW for s in statuses.values())


def test_rejected_job_is_recorded_not_inserted():
    qd = seeded()
    job = qd.ask()
    before = {t: len(a) for t, a in qd.archives.items()}
    assert qd.tell(job, None, "rejected: NaN") == {}
    assert {t: len(a) for t, a in qd.archives.items()} == before
    assert qd.history[-1]["error"] == "rejected: NaN"


def test_same_seed_same_jobs_and_state_round_trip():
    a, b = seeded(), seeded()
    for _ in range(5):
        ja, jb = a.ask(), b.ask()
        assert ja.to_dict() == jb.to_dict()
        a.tell(ja, fake_scores(ja))
        b.tell(jb, fake_scores(jb))
    c = CycleQD(a.s, recipe_id)
    c.load_state(a.state())
    for _ in range(4):
        ja, jc = a.ask(), c.ask()
        assert ja.to_dict() == jc.to_dict()
        a.tell(ja, fake_scores(ja))
        c.tell(jc, fake_scores(jc))
    assert a.state() == c.state()


def test_aggregate_is_softmax_of_best_elites():
    qd = seeded()
    recipe, info = qd.aggregate_recipe()
    w = recipe.merge.weights
    assert recipe.parents == ("ea", "eb", "ec") and not recipe.merge.normalize
    assert sum(w) == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]  # 0.9 > 0.8 > 0.7


def test_settings_validation():
    with pytest.raises(ConfigError, match="qd.sampler"):
        QDSettings(tasks=TASKS, experts=[], generations=1, sampler="best")
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        QDSettings(tasks=["a"], experts=[], generations=1)
