"""Independent NumPy (float64) references for tfkd's distillation terms, written from the papers.

Nothing here imports TensorFlow, Keras or tfkd: these functions are the other side of the tests
that check tfkd's terms. Each one is written from its paper's definition; where the method's
reference code computes something else, the docstring says which of the two the function follows
(the project's rule: the paper, or the reference code with a note). What each reference code
computes is summarised in /work/shared/METHODS.md, section 2.

Conventions (all inputs are converted to float64):

- logits ``t`` (teacher) and ``s`` (student) are arrays of shape (N, C);
- labels ``y`` are integer class indices of shape (N,);
- per-teacher logits ``tm`` have shape (N, M, C) for M teachers;
- ``T`` is the temperature; softmaxes subtract the row maximum, and every quantity that can
  underflow (a probability of a near one-hot distribution) is carried as a log-probability.

Per-example functions return shape (N,); DIST relates examples across the batch and returns
scalars. "KL" below is KL(teacher || student) = sum_c p_t (log p_t - log p_s).
"""

import numpy as np

# The eps values are the papers' / reference codes' constants, named once here.
LS_EPS = 1e-7  # Sun et al. 2024: (z - mean) / (std + 1e-7)
DIST_EPS = 1e-8  # Huang et al. 2022: Pearson correlation denominator + 1e-8


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def log_softmax(z, axis=-1):
    """log softmax(z) along `axis`, with the maximum subtracted (finite for any finite z)."""
    z = _f64(z)
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z, axis=-1):
    """softmax(z) along `axis`, with the maximum subtracted."""
    return np.exp(log_softmax(z, axis=axis))


def _logsumexp(z, axis=-1):
    z = _f64(z)
    m = np.max(z, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(z - m), axis=axis))


def _kl_from_logs(log_p, log_q, axis=-1):
    """sum p (log p - log q) from log-probabilities; p = exp(log p) may underflow to 0 harmlessly."""
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=axis)


def _check_labels(y, n, c):
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices of shape ({n},), got {y.dtype} {y.shape}")
    if np.any((y < 0) | (y >= c)):
        raise ValueError(f"labels must lie in [0, {c}), got min {y.min()} max {y.max()}")
    return y


# ----------------------------------------------------------------------------------------------
# KD
# ----------------------------------------------------------------------------------------------


def kd(t, s, T):
    """Per-example KD: T^2 * KL(softmax(t/T) || softmax(s/T)), shape (N,).

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", Sec. 2: the soft
    targets at temperature T, with the gradient scale T^2 (the paper multiplies the soft-target
    term by T^2 so its gradients keep their magnitude as T changes). The cross-entropy form of the
    paper differs from the KL only by the teacher's entropy, a constant for the student; the KL
    (what mdistiller's KD.py computes per example before the batch mean) is used so that identical
    logits give 0.
    """
    t, s = _f64(t), _f64(s)
    return T**2 * _kl_from_logs(log_softmax(t / T), log_softmax(s / T))


# ----------------------------------------------------------------------------------------------
# DKD
# ----------------------------------------------------------------------------------------------


def _binary_logs(z, y):
    """log p[gt] and log(1 - p[gt]) = log sum_{c != gt} p_c of softmax(z), both in log space."""
    n, c = z.shape
    lse_all = _logsumexp(z)
    mask = np.zeros((n, c), dtype=bool)
    mask[np.arange(n), y] = True
    log_p_gt = z[np.arange(n), y] - lse_all
    non_target = z[~mask].reshape(n, c - 1)
    log_p_rest = _logsumexp(non_target) - lse_all
    return log_p_gt, log_p_rest, non_target


def dkd_parts(t, s, y, T):
    """(tckd, nckd, p_target_teacher), each of shape (N,), for Decoupled KD.

    Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022, Sec. 3.1:
    with p = softmax(z/T), b = [p_gt, 1 - p_gt] and p_hat = the distribution over the C-1
    non-target classes renormalised (p_hat_i = p_i / (1 - p_gt) = softmax over the non-target
    logits),

        TCKD = T^2 * KL(b^T || b^S),   NCKD = T^2 * KL(p_hat^T || p_hat^S),

    so that the paper's decomposition KD = TCKD + (1 - p_gt^T) * NCKD holds per example, with
    p_gt^T the TEACHER's target probability at temperature T (returned as the third value).
    The T^2 is applied to both parts, as in mdistiller's DKD.py, so the identity also holds for
    `kd` (which carries T^2).

    Reference-code note (mdistiller DKD.py): TCKD takes torch.log of summed probabilities and NCKD
    masks the target logit with -1000; both give the same values in exact arithmetic. Here
    everything is computed in log space (log(1 - p_gt) as a logsumexp of the non-target logits),
    so the value stays finite for a near one-hot teacher such as logits [50, -50, ...], where the
    reference's log of a summed probability reaches -inf. For C = 2 the non-target distribution
    has one class and NCKD is 0.
    """
    t, s = _f64(t) / T, _f64(s) / T
    n, c = t.shape
    if c < 2:
        raise ValueError(f"DKD needs at least 2 classes, got {c}")
    y = _check_labels(y, n, c)
    lt_gt, lt_rest, t_nt = _binary_logs(t, y)
    ls_gt, ls_rest, s_nt = _binary_logs(s, y)
    tckd = np.exp(lt_gt) * (lt_gt - ls_gt) + np.exp(lt_rest) * (lt_rest - ls_rest)
    nckd = _kl_from_logs(log_softmax(t_nt), log_softmax(s_nt))
    return T**2 * tckd, T**2 * nckd, np.exp(lt_gt)


def dkd_warmup_factor(epoch, warmup=20):
    """min(epoch / warmup, 1), with `epoch` counting from 1; None (or warmup <= 0) means 1.

    mdistiller DKD.py: ``min(kwargs["epoch"] / self.warmup, 1.0)`` with epochs counted from 1
    (the paper describes the warm-up only in its training details; the code is followed).
    """
    if epoch is None or warmup <= 0:
        return 1.0
    return min(float(epoch) / float(warmup), 1.0)


def dkd(t, s, y, T, alpha, beta, epoch=None, warmup=20):
    """Per-example DKD: (alpha * TCKD + beta * NCKD) * min(epoch / warmup, 1), shape (N,).

    Zhao et al., CVPR 2022, Sec. 3.3: DKD = alpha * TCKD + beta * NCKD (the paper's Eq. 7 in the
    CVPR version), with TCKD and NCKD from `dkd_parts`. The linear warm-up of the term over the
    first `warmup` epochs (epoch counted from 1; None = after warm-up) follows mdistiller's
    DKD.py, where it is part of the loss. The reference then takes the batch mean.
    """
    tckd, nckd, _ = dkd_parts(t, s, y, T)
    return (alpha * tckd + beta * nckd) * dkd_warmup_factor(epoch, warmup)


# ----------------------------------------------------------------------------------------------
# Logit standardisation (LS-KD)
# ----------------------------------------------------------------------------------------------


def logit_standardize(z, ddof=0):
    """(z - mean_c z) / (std_c z + 1e-7) per row, shape (N, C).

    Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024,
    Algorithm 1 (the Z-score function): mean and standard deviation over the C logits of a
    sample, with the standard deviation written as sqrt(1/C * sum_c (z_c - mean)^2), i.e. the
    population std (ddof=0). That is the default here: the paper's definition.

    Reference-code note (LS repo mdistiller/distillers/KD.py `normalize`, and torchdistill's
    LogitStdKDLoss): `torch.std` defaults to the Bessel-corrected std (ddof=1). The two differ by
    the constant factor sqrt(C / (C - 1)) on the standardised logits (0.5 % for C = 100, 12 % for
    C = 5), which is the same as dividing the temperature by that factor; pass ddof=1 to get the
    reference code's value. Either way the result is invariant under z -> a*z + b (a > 0) up to
    the 1e-7 in the denominator. (The 1/C in Algorithm 1 is from reading the paper, not re-checked
    against the PDF when this was written: the library held only its abstract.)
    """
    z = _f64(z)
    centred = z - np.mean(z, axis=-1, keepdims=True)
    return centred / (np.std(z, axis=-1, ddof=ddof, keepdims=True) + LS_EPS)


def kd_ls(t, s, T, ddof=0):
    """Per-example KD on standardised logits, still times T^2: kd(Z(t), Z(s), T), shape (N,).

    Sun et al., CVPR 2024, Algorithm 2 (KD with the Z-score pre-process): the KL between
    softmax(Z(t)/T) and softmax(Z(s)/T), where T is the "base temperature" (2 in the reference
    training script). The T^2 factor is kept, as in the reference code (LS repo KD.py multiplies
    by temperature**2); the reference also weights the term by 9 and CE by 0.1, which are
    training settings, not part of this function. `ddof` is passed to `logit_standardize`
    (0 = paper, 1 = reference code).
    """
    return kd(logit_standardize(t, ddof), logit_standardize(s, ddof), T)


# ----------------------------------------------------------------------------------------------
# DIST
# ----------------------------------------------------------------------------------------------


def _pearson_rows(a, b):
    """Pearson correlation of matching rows: centred cosine with +1e-8 in the denominator."""
    a = a - np.mean(a, axis=1, keepdims=True)
    b = b - np.mean(b, axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / (norms + DIST_EPS)


def dist_parts(t, s, T):
    """(inter, intra), two scalars over the batch, for DIST.

    Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022,
    Sec. 3 (the inter-class relation loss over each sample's class vector and the intra-class
    relation loss over each class's batch vector, with the distance d_p(u, v) = 1 - rho_p(u, v)
    and rho_p the Pearson correlation). With y = softmax(z/T):

        inter = T^2 * (1 - mean_n rho(y_s[n, :], y_t[n, :]))
        intra = T^2 * (1 - mean_c rho(y_s[:, c], y_t[:, c]))

    rho is the centred cosine with +1e-8 added to the product of norms, and the T^2 factor, as in
    the reference code (hunto/image_classification_sota lib/models/losses/dist_kd.py).
    torchdistill's DISTLoss uses torch.cosine_similarity, which clamps each norm at eps instead;
    the two differ only for zero-variance rows. intra relates examples across the batch, so DIST
    has no per-example form.
    """
    y_t = softmax(_f64(t) / T)
    y_s = softmax(_f64(s) / T)
    inter = T**2 * (1.0 - np.mean(_pearson_rows(y_s, y_t)))
    intra = T**2 * (1.0 - np.mean(_pearson_rows(y_s.T, y_t.T)))
    return float(inter), float(intra)


def dist(t, s, T, beta, gamma):
    """DIST loss, a scalar over the batch: beta * inter + gamma * intra (parts from `dist_parts`).

    Huang et al., NeurIPS 2022: L = beta * L_inter + gamma * L_intra (beta = gamma = 1 by
    default in the paper and the reference; the reference's kd_loss_weight 2 is a training
    setting, not part of this function).
    """
    inter, intra = dist_parts(t, s, T)
    return beta * inter + gamma * intra


# ----------------------------------------------------------------------------------------------
# NKD
# ----------------------------------------------------------------------------------------------


def nkd(t, s, y, T, gamma):
    """Per-example Normalized KD, shape (N,).

    Yang, Zeng, Li, Zhang, Yuan & Li, "From Knowledge Distillation to Self-Knowledge
    Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels", ICCV 2023,
    the NKD loss:

        L = - p_t[gt] * log p_s[gt]
            - gamma * T^2 * sum_{i != gt} N(p_t^T)_i * log N(p_s^T)_i

    where the first term is at temperature 1 and N(p^T) renormalises the non-target
    probabilities at temperature T, N(p^T)_i = p_i^T / (1 - p_gt^T), which equals the softmax of
    the target-removed logits divided by T. The reference code (yzd-v/cls_KD
    mmcls/models/dis_losses/nkd.py) computes the same thing: the target term with softmax at
    temperature 1, the non-target term as log_softmax over the target-removed logits / temp,
    times gamma * temp^2. Both terms are cross-entropies (the teacher's entropy is not
    subtracted), so the value is not 0 for identical logits. Computed in log space, so it is
    finite for a near one-hot teacher.
    """
    t, s = _f64(t), _f64(s)
    n, c = t.shape
    if c < 2:
        raise ValueError(f"NKD needs at least 2 classes, got {c}")
    y = _check_labels(y, n, c)
    rows = np.arange(n)
    p_t_gt = np.exp(log_softmax(t)[rows, y])
    log_p_s_gt = log_softmax(s)[rows, y]
    keep = np.ones((n, c), dtype=bool)
    keep[rows, y] = False
    t_nt = t[keep].reshape(n, c - 1) / T
    s_nt = s[keep].reshape(n, c - 1) / T
    non_target = np.sum(softmax(t_nt) * log_softmax(s_nt), axis=1)
    return -p_t_gt * log_p_s_gt - gamma * T**2 * non_target


# ----------------------------------------------------------------------------------------------
# CTKD
# ----------------------------------------------------------------------------------------------


def ctkd_temperature(theta, t_min=1.0, t_max=21.0):
    """CTKD's learnable global temperature: t_min + (t_max - t_min) * sigmoid(theta).

    Li, Li, Yang, Li, Zhu, Sun & Yang, "Curriculum Temperature for Knowledge Distillation",
    AAAI 2023 (the global temperature module, bounded by a sigmoid). The reference code
    (zhengli97/CTKD helper/loops.py with scripts/run_cifar_distill.sh) computes
    t_start + t_end * sigmoid(theta) with t_start = 1, t_end = 20, i.e. t_min = 1, t_max = 21
    here; models/temp_global.py initialises theta = 1 (T ~= 15.62, per METHODS.md).
    """
    theta = _f64(theta)
    return t_min + (t_max - t_min) / (1.0 + np.exp(-theta))


def ctkd_lambda(epoch, lambda_max=1.0, epochs=10):
    """Magnitude of CTKD's gradient-reversal weight at `epoch` (counted from 1): a float >= 0.

    Li et al., AAAI 2023, the cosine curriculum of the reversal weight:

        lambda_n = lambda_min + 1/2 (lambda_max - lambda_min) (1 + cos((1 + min(n, E)/E) pi))

    with lambda_min = 0 and E = `epochs`, i.e. lambda_max * (1 - cos(pi * min(n, E) / E)) / 2:
    0 at n = 0, rising to lambda_max at n = E and constant after. n is the epoch as the reference
    code counts it (train_student.py passes epoch = 1, 2, ... to CosineDecay.get_value), so the
    first epoch already has lambda_max * (1 - cos(pi/E)) / 2 (0.0245 for E = 10), and the value 0
    belongs to "epoch 0", before training; negative epochs are clamped to 0 as in the reference.

    Mapping to the reference code: its CosineDecay(max_value=0, min_value=-1, num_loops=10)
    returns (cos(pi * min(n, E)/E) + 1)/2 * (0 - (-1)) + (-1), which equals -ctkd_lambda(n, 1, 10):
    it goes 0 -> -1, and its gradient-reversal layer multiplies the temperature's gradient by that
    signed value (the GRL has no minus sign of its own). So the temperature's gradient is the
    loss gradient times -ctkd_lambda(epoch).
    """
    n = min(max(float(epoch), 0.0), float(epochs))
    return lambda_max * (1.0 - np.cos(np.pi * n / float(epochs))) / 2.0


# ----------------------------------------------------------------------------------------------
# Multi-teacher
# ----------------------------------------------------------------------------------------------


def _per_teacher_kd(tm, s, T):
    """kd of each teacher against the student: shape (N, M)."""
    tm = _f64(tm)
    if tm.ndim != 3:
        raise ValueError(f"per-teacher logits must have shape (N, M, C), got {tm.shape}")
    return np.stack([kd(tm[:, k, :], s, T) for k in range(tm.shape[1])], axis=1)


def mt_mean(tm, s, T):
    """Per-example mean over teachers of kd(t_k, s, T), shape (N,).

    The AVERAGE_LOSS baseline of the multi-teacher papers (CA-MKD repo helper/loops.py:
    the mean over teachers of each teacher's KD); this is the mean of the KLs, not the KL to the
    averaged teacher.
    """
    return np.mean(_per_teacher_kd(tm, s, T), axis=1)


def teacher_entropy(tm):
    """Entropy of softmax(t_k) (temperature 1) per example and teacher, shape (N, M)."""
    log_p = log_softmax(_f64(tm), axis=-1)
    return -np.sum(np.exp(log_p) * log_p, axis=-1)


def ebkd_weights(tm, normalize=True):
    """Entropy-based teacher weights, shape (N, M); lower entropy gives a larger weight.

    Kwon, Na, Lee & Kim, "Adaptive Knowledge Distillation Based on Entropy", ICASSP 2020: each
    teacher's soft labels are weighted by 1 - H_k / sum_j H_j, with H_k the entropy of teacher
    k's prediction for the sample (computed here at temperature 1, as the CA-MKD repo's EBKD
    does). Those raw weights sum to M - 1, which is 1 only for two teachers. (The weight formula
    is the one the CA-MKD repo implements as EBKD; the paper's full text was not available to
    re-check when this was written, only its abstract: "utilizes the teacher model labels with
    lower entropy at a larger rate".)

    Choice: with normalize=True (the default) the weights are divided by M - 1 so that they sum
    to 1 for any M. For M = 2 this is exactly the paper's weight; for M > 2 it keeps the loss a
    weighted MEAN of the per-teacher KDs (comparable to `mt_mean`, and equal to KD of the teacher
    when all teachers are identical), rather than growing with M. normalize=False returns the raw
    weights, summing to M - 1, as the CA-MKD repo computes them (it then divides the weighted sum
    by M, see `ebkd`).

    If every teacher has zero entropy for a sample (sum_j H_j = 0, only for exactly one-hot
    predictions) the ratio is undefined; all teachers then get the same weight (1/M normalised,
    (M-1)/M raw), the value for identical teachers.
    """
    h = teacher_entropy(tm)
    n, m = h.shape
    if m < 2:
        raise ValueError(f"EBKD needs at least 2 teachers, got {m}")
    total = np.sum(h, axis=1, keepdims=True)
    ratio = np.divide(h, total, out=np.full_like(h, 1.0 / m), where=total > 0)
    w = 1.0 - ratio
    return w / (m - 1) if normalize else w


def ebkd(tm, s, T, normalize=True):
    """Per-example EBKD: sum_k w_k * kd(t_k, s, T), with w = ebkd_weights(tm, normalize), (N,).

    Kwon et al., ICASSP 2020 (see `ebkd_weights`). With normalize=True (default) this is a
    weighted mean of the per-teacher KDs. Reference-code note: the CA-MKD repo's EBKD computes
    sum_{n,k} w_raw * KD / (N * M), i.e. per example (M - 1) / M times this function's default
    value; ebkd(tm, s, T, normalize=False) / M gives the reference's per-example value.
    """
    return np.sum(ebkd_weights(tm, normalize) * _per_teacher_kd(tm, s, T), axis=1)


def camkd_weights(tm, y):
    """CA-MKD confidence weights, shape (N, M): w_k = (1 - softmax_k(CE_k)) / (M - 1).

    Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher Knowledge Distillation", ICASSP 2022:
    CE_k is teacher k's cross-entropy against the label (temperature 1), per example as in the
    reference code (CrossEntropyLoss(reduction='none')); the softmax is over the M teachers, so a
    teacher with a lower CE gets a larger weight. The weights sum to 1 for M >= 2.
    """
    tm = _f64(tm)
    if tm.ndim != 3:
        raise ValueError(f"per-teacher logits must have shape (N, M, C), got {tm.shape}")
    n, m, c = tm.shape
    if m < 2:
        raise ValueError(f"CA-MKD needs at least 2 teachers, got {m}")
    y = _check_labels(y, n, c)
    ce = -log_softmax(tm, axis=-1)[np.arange(n), :, y]  # (N, M)
    return (1.0 - softmax(ce, axis=1)) / (m - 1)


def camkd(tm, s, y, T):
    """Per-example CA-MKD KD term: sum_k w_k * kd(t_k, s, T), shape (N,).

    Zhang et al., ICASSP 2022: L_KD = sum_k w_k^KD * L_KL(teacher k, student), a weighted mean
    since the weights sum to 1. Reference-code note: the CA-MKD repo (helper/loops.py) computes
    sum_{n,k} w * KD / (N * M), i.e. it divides by M once more; its per-example value is this
    function's divided by M. This function gives the paper's weighted mean.
    """
    return np.sum(camkd_weights(tm, y) * _per_teacher_kd(tm, s, T), axis=1)
