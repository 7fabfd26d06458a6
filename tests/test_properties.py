"""Property tests: quantizer error bounds, and the engine against a dict model."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, initialize

from shard.config import CollectionConfig, IndexConfig, QuantizationConfig
from shard.engine import ShardEngine
from shard.quantization.binary import BinaryQuantizer
from shard.quantization.product import ProductQuantizer, allocate_axes
from shard.quantization.scalar import ScalarQuantizer

finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 60), st.integers(1, 40)), elements=finite))
def test_scalar_reconstruction_error_within_half_step(x):
    """With quantile 1.0 nothing is clipped: every value is within step/2."""
    sq = ScalarQuantizer(x.shape[1], quantile=1.0)
    sq.fit(x)
    codes, _ = sq.encode(x, np.zeros_like(x))
    recon = sq.lo + sq.step * codes.astype(np.float32)
    assert np.all(np.abs(recon - x) <= sq.step * 0.5 + 1e-3 * (1 + np.abs(x)))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([64, 100, 256]),
       st.sampled_from(["one_bit", "one_and_half_bits", "two_bits"]))
def test_binary_estimator_error_bound(seed, dim, encoding):
    """RaBitQ's bound: |est - <r, v>| <= ~ c ||r|| ||v|| / sqrt(D) with high
    probability; check at 6 sigma so the test never flakes, over many pairs."""
    rng = np.random.default_rng(seed)
    bq = BinaryQuantizer(dim, encoding, "scalar8bits", seed=seed)
    bq.fit(None)
    r = rng.standard_normal((200, dim)).astype(np.float32)
    c = np.zeros((1, dim), np.float32)
    codes, factors = bq.encode(r, np.zeros_like(r))
    v = rng.standard_normal((1, dim)).astype(np.float32)
    est = bq.reference_scores(v, np.zeros(200, np.int64), c, codes, factors)[0]
    exact = r @ v[0]
    bound = 6.0 * np.linalg.norm(r, axis=1) * np.linalg.norm(v) / np.sqrt(bq.D)
    assert np.all(np.abs(est - exact) <= bound)
    # and unbiased: the mean error is small against the bound
    assert abs(np.mean(est - exact)) < bound.mean() / 3


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1000), st.sampled_from(["x4", "x8", "x16"]))
def test_product_codes_are_nearest_codewords(seed, compression):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    pq = ProductQuantizer(16, compression, seed=seed)
    pq.fit(x)
    codes, _ = pq.encode(x, np.zeros_like(x))
    xs = pq.rotate(x).reshape(300, pq.M, pq.dsub)  # the coordinates the codebooks are in
    d_all = ((xs[:, :, None, :] - pq.codebooks[None]) ** 2).sum(-1)  # (n, M, K)
    chosen = np.take_along_axis(d_all, codes[:, :, None].astype(np.int64), 2)[..., 0]
    assert np.all(chosen <= d_all.min(-1) + 1e-4)


def _pq_error(pq, x):
    codes, _ = pq.encode(x, None)
    return float(((x - pq.decode(codes)) ** 2).sum(1).mean())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1000), st.sampled_from(["x4", "x8", "x16", "x32"]), st.floats(0.5, 2.0))
def test_product_refit_from_previous_never_codes_worse(seed, compression, spread):
    """A retrain fits from the previous quantizer's rotation and codebooks (fewer
    iterations) when the rotation was learned from at least as many residuals:
    k-means steps never raise the error, so the new codebooks code the new
    sample at most as badly as the previous ones do, and the previous stays as it was."""
    rng = np.random.default_rng(seed)
    old = rng.standard_normal((900, 32)).astype(np.float32)
    new = (spread * rng.standard_normal((600, 32)) + 0.3).astype(np.float32)
    prev = ProductQuantizer(32, compression, seed=seed)
    prev.fit(old)
    kept = prev.codebooks.copy()
    pq = ProductQuantizer(32, compression, seed=seed)
    pq.fit(new, prev)
    assert pq.codebooks.shape == kept.shape
    np.testing.assert_array_equal(prev.codebooks, kept)
    assert pq.rotation is prev.rotation
    assert _pq_error(pq, new) <= _pq_error(prev, new) * (1 + 1e-5)


def test_product_refit_from_a_smaller_sample_learns_a_new_rotation():
    """A rotation learned from fewer residuals than the new sample (a growing
    shard's first fits) is replaced: the new one is the new sample's own."""
    rng = np.random.default_rng(4)
    scales = np.linspace(0.2, 3.0, 32).astype(np.float32)
    small = rng.standard_normal((300, 32)).astype(np.float32)
    big = (rng.standard_normal((900, 32)) * scales).astype(np.float32)
    prev = ProductQuantizer(32, "x16", seed=0)
    prev.fit(small)
    pq, own = ProductQuantizer(32, "x16", seed=0), ProductQuantizer(32, "x16", seed=0)
    pq.fit(big, prev)
    own.fit(big)
    assert pq.rotation_n == 900 and prev.rotation_n == 300
    np.testing.assert_array_equal(pq.rotation, own.rotation)
    np.testing.assert_array_equal(pq.codebooks, own.codebooks)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([(8, 2), (16, 4), (6, 8), (3, 16)]))
def test_product_rotation_is_orthogonal_and_deals_variance_evenly(seed, shape):
    """allocate_axes: an orthogonal matrix (inner products kept), each subspace
    gets dsub principal axes, and no subspace's product of variances exceeds
    another's by more than the largest single variance ratio allows."""
    M, dsub = shape
    w = M * dsub
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((max(2 * w, 64), w)) * rng.uniform(0.05, 4.0, w)).astype(np.float32)
    R = allocate_axes(x, M, dsub)
    np.testing.assert_allclose(R.T @ R, np.eye(w), atol=2e-5)
    var = ((x @ R).astype(np.float64) ** 2).mean(0)  # variance along each rotated axis
    log_prod = np.log(var.reshape(M, dsub)).sum(1)
    spread = np.log(var.max() / var.min())
    assert log_prod.max() - log_prod.min() <= spread + 1e-6


def test_product_state_without_a_rotation_scores_as_written():
    """A shard written before product codes were rotated holds codebooks of the
    dimensions as they come and no rotation: it loads unrotated and scores as
    its codes were made (the reference reconstruction, no rotation)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    fitted = ProductQuantizer(24, "x32", seed=0)
    fitted.fit(x)
    books = fitted.codebooks  # any (M, K, dsub) codebooks stand for the earlier ones
    state = {"codebooks": books}  # the earlier format: no rotation keys
    pq = ProductQuantizer(24, "x32", seed=0)
    pq.load_state(state)
    assert pq.rotation is None
    codes, _ = pq.encode(x, None)
    recon = books[np.arange(pq.M)[None, :], codes.astype(np.int64)].reshape(len(x), -1)[:, :24]
    np.testing.assert_allclose(pq.decode(codes), recon)
    q = rng.standard_normal((3, 24)).astype(np.float32)
    lut, _ = pq.prepare(q)
    est = lut[:, np.arange(pq.M)[None, :], codes.astype(np.int64)].sum(-1)
    np.testing.assert_allclose(est, q @ recon.T, rtol=1e-4, atol=1e-4)


def test_product_refit_ignores_a_previous_of_another_shape():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 32)).astype(np.float32)
    other = ProductQuantizer(32, "x8", seed=0)
    other.fit(x)
    cold, warm = ProductQuantizer(32, "x16", seed=0), ProductQuantizer(32, "x16", seed=0)
    cold.fit(x)
    warm.fit(x, other)
    np.testing.assert_array_equal(cold.codebooks, warm.codebooks)


class EngineMatchesDict(RuleBasedStateMachine):
    """Random upsert/delete sequences leave the engine equal to a dict model,
    including after a reopen."""

    dim = 8

    @initialize()
    def setup(self):
        import tempfile
        self.dir = tempfile.mkdtemp()
        self.path = self.dir + "/s"
        cfg = CollectionConfig(dim=self.dim, distance="dot",
                               quantization=QuantizationConfig(kind="scalar"),
                               index=IndexConfig(full_scan_threshold=40, retrain_growth=2.0))
        self.eng = ShardEngine.create(self.path, cfg)
        self.model: dict[int, tuple[np.ndarray, dict | None]] = {}

    @rule(ids=st.lists(st.integers(0, 60), min_size=1, max_size=12), seed=st.integers(0, 10**6),
          with_payload=st.booleans())
    def upsert(self, ids, seed, with_payload):
        x = np.random.default_rng(seed).standard_normal((len(ids), self.dim)).astype(np.float32)
        payloads = [{"id": i, "s": seed} for i in ids] if with_payload else None
        self.eng.upsert(np.array(ids, np.uint64), x, payloads)
        for j, i in enumerate(ids):
            self.model[i] = (x[j], payloads[j] if payloads else None)

    @rule(ids=st.lists(st.integers(0, 60), max_size=10))
    def delete(self, ids):
        n = self.eng.delete(np.array(ids, np.uint64))
        assert n == len(set(ids) & set(self.model))
        for i in ids:
            self.model.pop(i, None)

    @rule()
    def reopen(self):
        self.eng.close()
        self.eng = ShardEngine.open(self.path)

    @invariant()
    def same_points(self):
        assert self.eng.count() == len(self.model)
        ids = np.array(sorted(self.model), np.uint64)
        rec = self.eng.retrieve(np.arange(61, dtype=np.uint64), with_payload=True, with_vector=True)
        assert rec.ids.tolist() == ids.tolist()
        for i, p, v in zip(rec.ids.tolist(), rec.payloads, rec.vectors):
            np.testing.assert_array_equal(v, self.model[i][0])
            assert p == self.model[i][1]
        if self.model:
            q = np.ones(self.dim, np.float32)
            hits = self.eng.search(q, limit=len(self.model), exact=True)
            assert sorted(hits.ids.tolist()) == ids.tolist()
            approx = self.eng.search(q, limit=1, oversampling=min(16, len(self.model)))
            assert set(approx.ids.tolist()) <= set(ids.tolist())

    def teardown(self):
        self.eng.close()


EngineMatchesDict.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
TestEngineMatchesDict = EngineMatchesDict.TestCase
