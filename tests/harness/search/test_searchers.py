import numpy as np
import pytest

from harness.search import NSGA2, GaussianPolicyGradient, crowding_distance, non_dominated_sort


def test_fronts_by_hand():
    f = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.4, 0.4], [0, 0], [1, 0]])
    # rows 0 and 5 tie (neither dominates the other): both in the first front
    assert non_dominated_sort(f) == [[0, 1, 2, 5], [3], [4]]


def test_crowding_keeps_the_ends_and_ranks_the_lonely_higher():
    f = np.array([[0.0, 1.0], [0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [1.0, 0.0]])
    d = crowding_distance(f)
    assert np.isinf(d[0]) and np.isinf(d[4])
    assert d[3] > d[1]  # row 3 sits in the big gap


def zdt_like(x):
    """Two conflicting objectives (maximised) over [0, 1]^2: the front is x0 in [0, 1] with x1 = 0."""
    g = 1 + 9 * x[1]
    f1 = x[0]
    return np.array([-f1, -g * (1 - np.sqrt(f1 / g))])


def run_nsga(seed, evals=200):
    s = NSGA2(x0=[0.5, 0.5], bounds=(0.0, 1.0), pop_size=10, max_evals=evals, seed=seed, sigma0=0.3)
    while not s.stop():
        xs = s.ask()
        s.tell(xs, [zdt_like(x) for x in xs])
    return s


def test_nsga2_moves_towards_the_front_and_spreads_along_it():
    s = run_nsga(0)
    assert s.evals == 200
    first = [s.all_x[i] for i in non_dominated_sort(np.asarray(s.all_f))[0]]
    assert np.median([x[1] for x in first]) < 0.1  # the start point has x1 = 0.5
    assert max(x[0] for x in first) - min(x[0] for x in first) > 0.5  # spread, not one point
    assert np.allclose(run_nsga(0).pop_x, s.pop_x)  # seeded
    assert not np.allclose(run_nsga(1).pop_x, s.pop_x)


def test_nsga2_best_and_errors():
    s = NSGA2(x0=[0.0], bounds=(-1, 1), pop_size=2, max_evals=2)
    s.tell(s.ask(), [[0.1, 0.9], [0.6, 0.6]])
    x, f = s.best()
    assert list(f) == [0.6, 0.6]
    with pytest.raises(ValueError, match="even"):
        NSGA2(x0=[0.0], bounds=(0, 1), pop_size=3)
    with pytest.raises(ValueError, match="one row"):
        s.tell([[0.0]], [0.5])


def test_policy_gradient_climbs_a_concave_score():
    target = np.array([0.7, -0.3, 0.2])

    def run(seed):
        pg = GaussianPolicyGradient(x0=[0.0, 0.0, 0.0], bounds=(-1, 1), batch=8, max_evals=400, seed=seed)
        while not pg.stop():
            xs = pg.ask()
            pg.tell(xs, [-float(np.sum((x - target) ** 2)) for x in xs])
        return pg

    pg = run(0)
    assert np.linalg.norm(pg.best() - target) < 0.15 < np.linalg.norm(target)
    assert np.allclose(run(0).best(), pg.best()) and not np.allclose(run(1).best(), pg.best())
    with pytest.raises(ValueError, match="one value per vector"):
        pg.ask()
        pg.tell([[0, 0, 0]], [1.0, 2.0])
