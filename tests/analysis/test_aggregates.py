"""The one-scan aggregation: shifted power sums against DuckDB's own statistics, numpy and scipy.

The query computes plain sums of shifted values (`aggregates.compute_moments`); these tests pin that
path to independent references (DuckDB's avg/var_samp/covar_samp, the functions the previous
Welford-style query used, numpy and scipy.stats.skew) on fixed data, including offset columns that
make the naive sum-of-squares formula cancel, constant columns, NULL arms and segment levels.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analysis.aggregates as agg
from analysis import AnalysisConfig, AnalysisError, MeanMetric, ProportionMetric, analyze
from analysis.aggregates import AggregateSpec, GroupKey, compute_moments, open_source
from analysis.power import power_two_sample

COLS = ["y", "y_pre", "num", "den"]


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 3000
    arm = rng.choice(np.array(["c", "t", "x"]), n).astype(object)
    arm[:7] = None  # rows without an arm
    pre = rng.gamma(2.0, 10.0, n)
    den = rng.poisson(4.0, n) + 1.0
    return pd.DataFrame({
        "arm": arm, "seg": rng.choice(np.array(["a", "b"]), n),
        "y": pre * rng.lognormal(0, 0.3, n), "y_pre": pre,
        "num": 1e6 + den * rng.gamma(2.0, 1.0, n),  # offset: sum of squares would cancel
        "den": den,
    })


def _spec() -> AggregateSpec:
    return AggregateSpec.from_blocks([["y", "y_pre"], ["num", "den"]], tail_columns=["y", "num"],
                                     range_columns=["den"])


def _run(table, sample_shift=True, **kw):
    con = duckdb.connect()
    src = open_source(con, table)
    if not sample_shift:
        src = f"(SELECT * FROM {src})"
    return compute_moments(con, src, arm_col="arm", arms=kw.get("arms"), segments=kw.get("segments", ["seg"]),
                           spec=_spec(), sample_shift=sample_shift)


def _reference(frame: pd.DataFrame) -> dict[tuple, dict]:
    """Per (arm, seg) group: DuckDB avg / var_samp / covar_samp (the old query's aggregates)."""
    con = duckdb.connect()
    con.register("f", frame)
    sel = ", ".join([f"avg({c})" for c in COLS] + [f"var_samp({c})" for c in COLS]
                    + ["covar_samp(y, y_pre)", "covar_samp(num, den)", "count(*)"])
    out = {}
    for seg_sel, grp in (("'all'", "arm"), ("seg", "arm, seg")):
        for r in con.execute(f"SELECT arm, {seg_sel}, {sel} FROM f GROUP BY {grp}").fetchall():
            out[(r[0] or "(null)", r[1])] = {"mean": r[2:6], "var": r[6:10], "cov": r[10:12], "n": r[12]}
    return out


@pytest.mark.parametrize("source", ["pandas", "parquet", "subquery"])
def test_shifted_sums_equal_duckdb_welford_aggregates(frame, tmp_path, source):
    """Every group (arms incl. NULL, arm x segment level) matches the old covar_samp numbers to 1e-9."""
    table = frame
    if source == "parquet":
        table = tmp_path / "f.parquet"
        frame.to_parquet(table)
    moments, counts = _run(table, sample_shift=source != "subquery")
    ref = _reference(frame)
    assert len(moments) == len(ref) == 4 + 4 * 2
    for key, m in moments.items():
        r = ref[(key.arm, key.level)]
        assert float(m.n) == r["n"] and (counts[key] == r["n"]).all()
        assert m.mean == pytest.approx(np.array(r["mean"]), rel=1e-12)
        cov = m.cov()
        assert np.diag(cov) == pytest.approx(np.array(r["var"]), rel=1e-9)
        assert (cov[0, 1], cov[2, 3]) == pytest.approx(r["cov"], rel=1e-9)
        assert np.isnan(cov[0, 2])  # a cross product no metric needs is not computed


def test_skewness_and_range_against_scipy(frame):
    moments, _ = _run(frame, segments=[])
    for arm in ("c", "t"):
        part = frame[frame.arm == arm]
        m = moments[GroupKey(arm, "all", "all")]
        assert m.skewness("y") == pytest.approx(stats.skew(part.y), rel=1e-9)
        assert m.skewness("num") == pytest.approx(stats.skew(part.num), rel=1e-6)  # offset 1e6: cubes cancel more
        i = m.columns.index("den")
        assert (m.minimum[i], m.maximum[i]) == (part.den.min(), part.den.max())
        assert np.isnan(m.minimum[m.columns.index("y")])  # no range asked for


def test_badly_offset_column_is_recomputed_with_its_mean(frame, monkeypatch):
    """Shift 0 on a column 1e9 + N(0, 1) cancels every digit; the second pass centres it."""
    calls = []
    real = agg._moments_query
    monkeypatch.setattr(agg, "_moments_query", lambda *a, **k: calls.append(a[6].copy()) or real(*a, **k))
    df = frame.assign(y_pre=1e9 + np.random.default_rng(3).normal(0, 1, len(frame)))
    moments, _ = _run(df, sample_shift=False, segments=[])
    assert len(calls) == 2 and calls[0][1] == 0 and abs(calls[1][1] - 1e9) < 1
    part = df[df.arm == "c"]
    m = moments[GroupKey("c", "all", "all")]
    assert m.cov()[:2, :2] == pytest.approx(np.cov(part.y, part.y_pre), rel=1e-9)
    calls.clear()
    _run(df, segments=[])  # shift from the first rows: one pass suffices
    assert len(calls) == 1


def test_parquet_footer_hints(tmp_path):
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"a": rng.gamma(2.0, 1.0, 100), "b": 5e8 + rng.normal(0, 1, 100), "c": -rng.random(100) - 1e3,
                       "d": pd.array([1.0] * 99 + [None], dtype="Float64")})
    path = tmp_path / "h.parquet"
    df.to_parquet(path)
    con = duckdb.connect()
    shift, nullable = agg._shifts(con, open_source(con, path), ["a", "b", "c", "d"])
    assert shift[0] == 0.0  # range reaches 0: no shift needed
    assert (shift[1], shift[2]) == (df.b.min(), df.c.max())  # offset: the endpoint nearest 0
    assert list(nullable) == [False, False, False, True]


def test_column_missing_from_one_parquet_file_counts_as_null(tmp_path):
    """union_by_name fills a column absent from one file with NULLs: the footers must not hide that."""
    (tmp_path / "d").mkdir()
    rng = np.random.default_rng(0)
    for i, cols in enumerate((["y", "z"], ["y"])):
        n = 50
        pd.DataFrame({"arm": np.where(np.arange(n) % 2, "c", "t"),
                      **{c: rng.random(n) for c in cols}}).to_parquet(tmp_path / "d" / f"p{i}.parquet")
    r = analyze(tmp_path / "d", arm_col="arm", control="c", metrics=["y"], config=AnalysisConfig(cuped="none"))
    assert r.lift("y").n_control == 50
    with pytest.raises(AnalysisError, match=r"column 'z' has 25 missing"):
        analyze(tmp_path / "d", arm_col="arm", control="c", metrics=["z"], config=AnalysisConfig(cuped="none"))


def test_constant_columns_have_exactly_zero_variance():
    """0.1 is not a binary fraction: sum-of-squares rounding must not turn a constant into noise."""
    n = 10_001
    df = pd.DataFrame({"arm": ["c"] * n + ["t"] * n, "y": [0.1] * n + [0.3] * n})
    r = analyze(df, arm_col="arm", control="c", metrics=["y"], config=AnalysisConfig(cuped="none")).lift("y")
    assert r.abs_se == 0.0 and "zero variance" in r.notes
    assert r.abs_diff == pytest.approx(0.2, rel=1e-12)
    moments, _ = _run(df.assign(seg="a", y_pre=df.y, num=1.0, den=1.0), sample_shift=False, segments=[])
    assert moments[GroupKey("c", "all", "all")].comoment[0, 0] == 0.0


def test_single_scan_arm_counts_and_unused_arm_nulls(frame):
    """Arm counts come from the moments scan (NULL arm included); NULLs in an unanalysed arm are fine."""
    df = frame.copy()
    df.loc[df.arm == "x", "y"] = np.nan  # pandas NaN -> NULL in DuckDB, only in arm x
    r = analyze(df, arm_col="arm", control="c", treatment="t", metrics=[MeanMetric("y")])
    want = df.arm.fillna("(null)").value_counts().to_dict()
    assert r.arm_counts == want and list(r.arm_counts) == ["c", "t", "x", "(null)"]
    assert "7 row(s) with a missing arm ignored" in r.lift("y").notes
    with pytest.raises(AnalysisError, match=r"column 'y' has \d+ missing .* in arm 'x'"):
        analyze(df, arm_col="arm", control="c", metrics=[MeanMetric("y")])


def test_proportion_range_and_overflow_messages():
    df = pd.DataFrame({"arm": ["c", "t"] * 50, "p": [0.0, 1.0] * 25 + [1.0, 0.0] * 25})
    r = analyze(df, arm_col="arm", control="c", metrics=[ProportionMetric("p")], config=AnalysisConfig(cuped="none"))
    check = next(c for c in r.checks if c.check == "proportion_range")
    assert check.passed and "[0, 1]" in check.message
    big = pd.DataFrame({"arm": ["c", "t"] * 4, "y": [1e200, -1e200, 3e200, 1.0] * 2})
    with pytest.raises(AnalysisError, match=r"column 'y' has values too large to square"):
        analyze(big, arm_col="arm", control="c", metrics=["y"], config=AnalysisConfig(cuped="none"))


@pytest.mark.parametrize("test", ["z", "t"])
def test_power_matches_scipy_distributions(test):
    """The scipy.special fast path equals the scipy.stats formula it replaced (to 1e-12)."""
    for d, n, ratio, alpha in [(0.0, 50, 1.0, 0.05), (0.2, 200, 1.5, 0.05), (0.01, 5e6, 1.0, 0.01), (1.0, 10, 0.5, 0.1)]:
        s = np.sqrt(1 / n + 1 / (ratio * n))
        if test == "z":
            crit = stats.norm.isf(alpha / 2)
            want = stats.norm.sf(crit - d / s) + stats.norm.cdf(-crit - d / s)
        else:
            df = n + ratio * n - 2
            crit = stats.t.isf(alpha / 2, df)
            want = stats.nct.sf(crit, df, d / s) + stats.nct.cdf(-crit, df, d / s)
        assert power_two_sample(d, n, ratio=ratio, alpha=alpha, test=test) == pytest.approx(want, abs=1e-12)
