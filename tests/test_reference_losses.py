"""The NumPy reference losses (tests/helpers/reference_losses.py) checked against properties of the
papers' definitions and against second, differently written computations: nothing here uses tfkd,
so these hold the references themselves honest before tfkd's terms are compared with them."""

import math

import numpy as np
import pytest

from helpers import reference_losses as ref

N, C, M = 16, 7, 3


def logits(rng, n=N, c=C, scale=3.0):
    return rng.normal(scale=scale, size=(n, c))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def near_one_hot(n, c, hot, value=50.0):
    """Logits [value at `hot`, -value elsewhere] per row."""
    z = np.full((n, c), -value)
    z[np.arange(n), hot] = value
    return z


# --- KD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_equals_a_double_loop_over_the_kl_formula(rng, T):
    t, s = logits(rng), logits(rng)
    expected = np.zeros(N)
    for n in range(N):
        zt = [math.exp(v / T) for v in t[n]]
        zs = [math.exp(v / T) for v in s[n]]
        for c in range(C):
            p, q = zt[c] / sum(zt), zs[c] / sum(zs)
            expected[n] += p * math.log(p / q)
    np.testing.assert_allclose(ref.kd(t, s, T), T**2 * expected, rtol=1e-12, atol=1e-14)


def test_kd_is_zero_for_identical_logits_and_positive_otherwise(rng):
    t, s = logits(rng), logits(rng)
    np.testing.assert_allclose(ref.kd(t, t, 4.0), 0.0, atol=1e-12)
    assert np.all(ref.kd(t, s, 4.0) > 0)


# --- DKD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_parts_decompose_kd_with_the_teachers_target_probability(rng, T):
    t, s = logits(rng), logits(rng)
    y = rng.integers(0, C, N)
    tckd, nckd, p_t = ref.dkd_parts(t, s, y, T)
    np.testing.assert_allclose(p_t, ref.softmax(t / T)[np.arange(N), y], rtol=1e-12)
    np.testing.assert_allclose(ref.kd(t, s, T), tckd + (1.0 - p_t) * nckd, rtol=0, atol=1e-10)
    # The student's target probability instead does not give the identity (so it tests something).
    p_s = ref.softmax(s / T)[np.arange(N), y]
    assert not np.allclose(ref.kd(t, s, T), tckd + (1.0 - p_s) * nckd, atol=1e-6)


def test_dkd_parts_match_probability_space_and_masked_logit_forms(rng):
    """TCKD from summed probabilities, NCKD with the target logit pushed to -1000 (mdistiller's
    formulation): the same values as the log-space computation for moderate logits."""
    T = 4.0
    t, s = logits(rng), logits(rng)
    y = rng.integers(0, C, N)
    tckd, nckd, _ = ref.dkd_parts(t, s, y, T)
    pt, ps = ref.softmax(t / T), ref.softmax(s / T)
    gt = np.zeros((N, C), dtype=bool)
    gt[np.arange(N), y] = True
    bt = np.stack([pt[gt], pt[~gt].reshape(N, -1).sum(1)], 1)
    bs = np.stack([ps[gt], ps[~gt].reshape(N, -1).sum(1)], 1)
    np.testing.assert_allclose(tckd, T**2 * np.sum(bt * np.log(bt / bs), 1), rtol=1e-10)
    mt = ref.softmax(t / T - 1000.0 * gt)
    ms = ref.log_softmax(s / T - 1000.0 * gt)
    masked = np.sum(np.where(gt, 0.0, mt * (np.log(np.where(gt, 1.0, mt)) - ms)), 1)
    np.testing.assert_allclose(nckd, T**2 * masked, rtol=1e-10)


def test_dkd_weights_its_parts_and_warms_up_linearly_from_epoch_one(rng):
    t, s = logits(rng), logits(rng)
    y = rng.integers(0, C, N)
    tckd, nckd, _ = ref.dkd_parts(t, s, y, 4.0)
    full = ref.dkd(t, s, y, 4.0, alpha=1.0, beta=8.0)
    np.testing.assert_allclose(full, tckd + 8.0 * nckd, rtol=1e-12)
    np.testing.assert_allclose(ref.dkd(t, s, y, 4.0, 1.0, 8.0, epoch=1), full / 20, rtol=1e-12)
    np.testing.assert_allclose(ref.dkd(t, s, y, 4.0, 1.0, 8.0, epoch=10), full / 2, rtol=1e-12)
    np.testing.assert_allclose(ref.dkd(t, s, y, 4.0, 1.0, 8.0, epoch=20), full, rtol=1e-12)
    np.testing.assert_allclose(ref.dkd(t, s, y, 4.0, 1.0, 8.0, epoch=35), full, rtol=1e-12)
    np.testing.assert_allclose(ref.dkd(t, s, y, 4.0, 1.0, 8.0, epoch=2, warmup=4), full / 2, rtol=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_is_finite_for_a_near_one_hot_teacher_with_100_classes(rng, T):
    n, c = 8, 100
    y = rng.integers(0, c, n)
    s = logits(rng, n, c)
    # Teacher sure of the label, and teacher sure of another class; student near one-hot too.
    for hot in (y, (y + 1) % c):
        t = near_one_hot(n, c, hot)
        for student in (s, near_one_hot(n, c, (y + 2) % c)):
            tckd, nckd, p_t = ref.dkd_parts(t, student, y, T)
            loss = ref.dkd(t, student, y, T, 1.0, 8.0)
            for v in (tckd, nckd, p_t, loss):
                assert np.all(np.isfinite(v))
            assert np.all(tckd >= -1e-9) and np.all(nckd >= -1e-9)
            np.testing.assert_allclose(ref.kd(t, student, T), tckd + (1 - p_t) * nckd, rtol=1e-9)


def test_dkd_with_two_classes_has_no_non_target_part(rng):
    t, s = logits(rng, c=2), logits(rng, c=2)
    y = rng.integers(0, 2, N)
    tckd, nckd, _ = ref.dkd_parts(t, s, y, 4.0)
    np.testing.assert_array_equal(nckd, 0.0)
    np.testing.assert_allclose(tckd, ref.kd(t, s, 4.0), rtol=1e-9)


# --- Logit standardisation ---------------------------------------------------------------------


def test_logit_standardize_gives_zero_mean_unit_population_std(rng):
    z = ref.logit_standardize(logits(rng))
    np.testing.assert_allclose(z.mean(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(1), 1.0, rtol=1e-6)
    # The reference code's Bessel-corrected std scales the result by sqrt((C-1)/C).
    z1 = ref.logit_standardize(logits(np.random.default_rng(0)), ddof=1)
    np.testing.assert_allclose(z1 * math.sqrt(C / (C - 1)), z, rtol=1e-6)


@pytest.mark.parametrize("ddof", [0, 1])
def test_kd_ls_is_invariant_under_positive_affine_maps_per_row(rng, ddof):
    t, s = logits(rng), logits(rng)
    a_t, a_s = rng.uniform(0.2, 5.0, (N, 1)), rng.uniform(0.2, 5.0, (N, 1))
    b_t, b_s = rng.normal(scale=10, size=(N, 1)), rng.normal(scale=10, size=(N, 1))
    before = ref.kd_ls(t, s, 2.0, ddof)
    after = ref.kd_ls(a_t * t + b_t, a_s * s + b_s, 2.0, ddof)
    np.testing.assert_allclose(after, before, rtol=1e-5)
    # ...which plain KD is not.
    assert not np.allclose(ref.kd(a_t * t + b_t, a_s * s + b_s, 2.0), ref.kd(t, s, 2.0), rtol=1e-3)


# --- DIST --------------------------------------------------------------------------------------


def test_dist_is_zero_for_identical_logits(rng):
    t = logits(rng)
    inter, intra = ref.dist_parts(t, t, 4.0)
    assert abs(inter) < 1e-4 and abs(intra) < 1e-4
    assert abs(ref.dist(t, t, 4.0, 1.0, 1.0)) < 1e-4
    # Not exactly 0 because of the +1e-8 in the denominator: rho = |a|^2 / (|a|^2 + 1e-8).
    y = ref.softmax(t / 4.0)
    rows = np.sum((y - y.mean(1, keepdims=True)) ** 2, 1)
    cols = np.sum((y - y.mean(0, keepdims=True)) ** 2, 0)
    assert inter == pytest.approx(16 * np.mean(1e-8 / (rows + 1e-8)), rel=1e-6)
    assert intra == pytest.approx(16 * np.mean(1e-8 / (cols + 1e-8)), rel=1e-6)


def test_dist_parts_match_numpy_corrcoef(rng):
    T = 4.0
    t, s = logits(rng), logits(rng)
    yt, ys = ref.softmax(t / T), ref.softmax(s / T)
    inter = T**2 * (1 - np.mean([np.corrcoef(ys[n], yt[n])[0, 1] for n in range(N)]))
    intra = T**2 * (1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(C)]))
    got = ref.dist_parts(t, s, T)
    np.testing.assert_allclose(got, (inter, intra), rtol=1e-6)
    np.testing.assert_allclose(ref.dist(t, s, T, 2.0, 0.5), 2.0 * inter + 0.5 * intra, rtol=1e-6)


def test_dist_inter_splits_over_half_batches_but_intra_does_not(rng):
    """inter is a mean of per-example terms; intra correlates each class over the batch."""
    t, s = logits(rng), logits(rng)
    h = N // 2
    full = ref.dist_parts(t, s, 4.0)
    first, second = ref.dist_parts(t[:h], s[:h], 4.0), ref.dist_parts(t[h:], s[h:], 4.0)
    assert full[0] == pytest.approx((first[0] + second[0]) / 2, rel=1e-9)
    assert full[1] != pytest.approx((first[1] + second[1]) / 2, rel=1e-3)


# --- NKD ---------------------------------------------------------------------------------------


def test_nkd_matches_the_papers_renormalised_non_target_probabilities(rng):
    T, gamma = 3.0, 1.5
    t, s = logits(rng), logits(rng)
    y = rng.integers(0, C, N)
    pt1, ps1 = ref.softmax(t), ref.softmax(s)
    ptT, psT = ref.softmax(t / T), ref.softmax(s / T)
    expected = np.zeros(N)
    for n in range(N):
        g = y[n]
        expected[n] = -pt1[n, g] * math.log(ps1[n, g])
        for i in range(C):
            if i != g:
                nt = ptT[n, i] / (1 - ptT[n, g])
                ns = psT[n, i] / (1 - psT[n, g])
                expected[n] -= gamma * T**2 * nt * math.log(ns)
    np.testing.assert_allclose(ref.nkd(t, s, y, T, gamma), expected, rtol=1e-10)


def test_nkd_is_finite_for_a_near_one_hot_teacher(rng):
    n, c = 8, 100
    y = rng.integers(0, c, n)
    s = logits(rng, n, c)
    for hot in (y, (y + 1) % c):
        for student in (s, near_one_hot(n, c, (y + 2) % c)):
            assert np.all(np.isfinite(ref.nkd(near_one_hot(n, c, hot), student, y, 3.0, 3.5)))


# --- CTKD --------------------------------------------------------------------------------------


def test_ctkd_temperature_is_bounded_and_matches_the_reference_initial_value():
    assert ref.ctkd_temperature(1.0) == pytest.approx(1 + 20 / (1 + math.exp(-1)))
    assert ref.ctkd_temperature(0.0, 2.0, 6.0) == pytest.approx(4.0)
    assert ref.ctkd_temperature(-40.0) == pytest.approx(1.0)
    assert ref.ctkd_temperature(40.0) == pytest.approx(21.0)


def test_ctkd_lambda_rises_by_cosine_and_is_minus_the_reference_value():
    values = [ref.ctkd_lambda(e, 1.0, 10) for e in range(0, 15)]
    assert values[0] == 0.0 and values[10] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(values[:10], values[1:11]))
    assert values[10:] == [values[10]] * 5
    assert values[5] == pytest.approx(0.5)
    assert ref.ctkd_lambda(5, 2.0, 10) == pytest.approx(1.0)
    for e in range(1, 15):  # The reference's CosineDecay(max 0, min -1, 10 loops) at epoch e.
        i = min(e, 10)
        reference = (math.cos(i * math.pi / 10) + 1.0) * 0.5 * (0 - (-1)) + (-1)
        assert ref.ctkd_lambda(e) == pytest.approx(-reference, abs=1e-15)


# --- Multi-teacher -----------------------------------------------------------------------------


def test_multi_teacher_losses_with_identical_teachers_reduce_to_kd(rng):
    t, s = logits(rng), logits(rng)
    y = rng.integers(0, C, N)
    tm = np.repeat(t[:, None, :], M, axis=1)
    single = ref.kd(t, s, 4.0)
    np.testing.assert_allclose(ref.mt_mean(tm, s, 4.0), single, rtol=1e-12)
    np.testing.assert_allclose(ref.ebkd(tm, s, 4.0), single, rtol=1e-12)
    np.testing.assert_allclose(ref.camkd(tm, s, y, 4.0), single, rtol=1e-12)
    np.testing.assert_allclose(ref.ebkd_weights(tm), 1.0 / M, rtol=1e-12)
    np.testing.assert_allclose(ref.camkd_weights(tm, y), 1.0 / M, rtol=1e-12)


def test_mt_mean_is_the_mean_of_kls_not_the_kl_to_the_mean_teacher(rng):
    tm, s = rng.normal(scale=3.0, size=(N, M, C)), logits(rng)
    expected = np.mean([ref.kd(tm[:, k], s, 4.0) for k in range(M)], axis=0)
    np.testing.assert_allclose(ref.mt_mean(tm, s, 4.0), expected, rtol=1e-12)
    assert not np.allclose(ref.mt_mean(tm, s, 4.0), ref.kd(tm.mean(1), s, 4.0), rtol=1e-3)


def test_camkd_weights_sum_to_one_and_favour_the_teacher_with_lower_cross_entropy(rng):
    tm = rng.normal(scale=3.0, size=(N, M, C))
    y = rng.integers(0, C, N)
    w = ref.camkd_weights(tm, y)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-12)
    ce = -np.log(ref.softmax(tm)[np.arange(N), :, y])
    assert np.all(np.argmax(w, 1) == np.argmin(ce, 1))
    # Written out for each teacher: (1 - exp(CE_k) / sum_j exp(CE_j)) / (M - 1).
    expected = (1 - np.exp(ce) / np.exp(ce).sum(1, keepdims=True)) / (M - 1)
    np.testing.assert_allclose(w, expected, rtol=1e-10)
    s = logits(rng)
    kds = np.stack([ref.kd(tm[:, k], s, 4.0) for k in range(M)], 1)
    np.testing.assert_allclose(ref.camkd(tm, s, y, 4.0), np.sum(w * kds, 1), rtol=1e-12)


def test_ebkd_weights_follow_entropy_and_sum_to_one_or_to_m_minus_one(rng):
    tm = rng.normal(scale=3.0, size=(N, M, C))
    raw = ref.ebkd_weights(tm, normalize=False)
    w = ref.ebkd_weights(tm)
    np.testing.assert_allclose(raw.sum(1), M - 1, rtol=1e-12)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(w, raw / (M - 1), rtol=1e-12)
    p = ref.softmax(tm)
    h = -np.sum(p * np.log(p), -1)
    np.testing.assert_allclose(raw, 1 - h / h.sum(1, keepdims=True), rtol=1e-10)
    assert np.all(np.argmax(w, 1) == np.argmin(h, 1))
    s = logits(rng)
    kds = np.stack([ref.kd(tm[:, k], s, 4.0) for k in range(M)], 1)
    np.testing.assert_allclose(ref.ebkd(tm, s, 4.0), np.sum(w * kds, 1), rtol=1e-12)
    np.testing.assert_allclose(ref.ebkd(tm, s, 4.0, normalize=False), np.sum(raw * kds, 1), rtol=1e-12)


def test_ebkd_with_two_teachers_needs_no_normalisation(rng):
    tm = rng.normal(scale=3.0, size=(N, 2, C))
    np.testing.assert_allclose(ref.ebkd_weights(tm), ref.ebkd_weights(tm, normalize=False), rtol=1e-12)


def test_multi_teacher_weights_are_finite_for_one_hot_teachers(rng):
    y = rng.integers(0, C, N)
    tm = np.stack([near_one_hot(N, C, y, 500.0), near_one_hot(N, C, (y + 1) % C, 500.0)], 1)
    for w in (ref.ebkd_weights(tm), ref.camkd_weights(tm, y)):
        assert np.all(np.isfinite(w))
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-12)
    # Teacher 0 is right, teacher 1 is wrong: CA-MKD puts (almost) all weight on teacher 0.
    np.testing.assert_allclose(ref.camkd_weights(tm, y)[:, 0], 1.0)


def test_bad_inputs_are_refused_with_the_value_named(rng):
    t = logits(rng)
    with pytest.raises(ValueError, match="labels must lie in"):
        ref.dkd_parts(t, t, np.full(N, C), 4.0)
    with pytest.raises(ValueError, match="at least 2 teachers"):
        ref.camkd_weights(t[:, None, :], np.zeros(N, dtype=int))
    with pytest.raises(ValueError, match="at least 2 teachers"):
        ref.ebkd_weights(t[:, None, :])
