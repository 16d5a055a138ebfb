//! The statistics behind the lab's verdicts and `tracer diff`'s, written out so a reviewer can
//! read them in one sitting: intervals of a mean (Student's t, the exact
//! Poisson interval of Garwood 1936), the exact conditional test of two
//! Poisson counts (a binomial test on one count given their sum), and the
//! Mann–Whitney U rank test. Each definition follows scipy's where scipy has
//! one (`scipy.stats.binomtest`, `mannwhitneyu`, `t.ppf`, `chi2.ppf`) —
//! except that small samples with ties get the exact permutation
//! distribution where scipy falls back to the normal approximation — and
//! the unit tests hold values from scipy's documentation, textbook tables
//! and mpmath.
//!
//! The special functions (log-gamma, regularized incomplete gamma and beta)
//! are the Lanczos approximation and the series / continued fractions of
//! Numerical Recipes (3rd ed., §6.1, §6.2, §6.4): relative error ~1e-10,
//! far below what a 95 % decision needs.

/// Two-sided level of every interval and test.
pub const ALPHA: f64 = 0.05;

/// Mean of `values` (0 for none).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample variance (n − 1 in the denominator; 0 below two values).
pub fn variance(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64
}

/// Student's t interval of the mean at level 1 − [`ALPHA`]; `None` below
/// two values (no spread to estimate).
pub fn t_interval(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let half = t_quantile(1.0 - ALPHA / 2.0, (n - 1) as f64) * (variance(values) / n as f64).sqrt();
    let m = mean(values);
    Some((m - half, m + half))
}

/// Garwood's exact interval for the mean of a Poisson count observed as
/// `total` (the chi-square form: `chi2.ppf(α/2, 2x)/2`,
/// `chi2.ppf(1 − α/2, 2x + 2)/2`, found here by bisection on the Poisson
/// distribution function).
pub fn poisson_interval(total: u64) -> (f64, f64) {
    let x = total as f64;
    let tail = ALPHA / 2.0;
    // P(X ≥ x; λ) = P(x, λ), rising in λ: the lower end has it at α/2.
    let lower = if total == 0 {
        0.0
    } else {
        bisect(|l| gamma_p(x, l) - tail, 0.0, upper_bracket(x))
    };
    // P(X ≤ x; λ) = 1 − P(x + 1, λ), falling in λ: the upper end has it at α/2.
    let upper = bisect(
        |l| tail - (1.0 - gamma_p(x + 1.0, l)),
        0.0,
        upper_bracket(x),
    );
    (lower, upper)
}

fn upper_bracket(x: f64) -> f64 {
    x + 20.0 * (x + 1.0).sqrt() + 20.0
}

/// Two-sided exact binomial test of `k` successes in `n` trials against
/// probability `p`: the probability of every outcome no more likely than
/// `k` (scipy's `binomtest(k, n, p).pvalue`, with its 1 + 1e-7 tolerance).
pub fn binomial_test(k: u64, n: u64, p: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let observed = ln_binomial_pmf(k, n, p);
    let limit = observed + (1.0 + 1e-7_f64).ln();
    let total: f64 = (0..=n)
        .map(|i| ln_binomial_pmf(i, n, p))
        .filter(|&l| l <= limit)
        .map(f64::exp)
        .sum();
    total.min(1.0)
}

fn ln_binomial_pmf(k: u64, n: u64, p: f64) -> f64 {
    let (k, n) = (k as f64, n as f64);
    let ln_choose = ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0);
    let term = |count: f64, prob: f64| {
        if count == 0.0 { 0.0 } else { count * prob.ln() }
    };
    ln_choose + term(k, p) + term(n - k, 1.0 - p)
}

/// The exact conditional test of two Poisson counts (Przyborowski and
/// Wilenski 1940): given their sum, `a` is binomial with probability
/// `exposure_a / (exposure_a + exposure_b)` when both have the same rate
/// per unit of exposure (runs, lookups, frames sent).
pub fn poisson_conditional_test(a: u64, exposure_a: f64, b: u64, exposure_b: f64) -> f64 {
    let share = exposure_a / (exposure_a + exposure_b);
    if !share.is_finite() || share <= 0.0 || share >= 1.0 {
        return 1.0;
    }
    binomial_test(a, a + b, share)
}

/// The same comparison for counts that vary more between runs than a
/// Poisson count would (dispersion `phi` > 1, the quasi-Poisson model):
/// the score statistic of the conditional test with its variance scaled by
/// `phi`, two-sided against the normal distribution.
pub fn quasi_poisson_test(a: u64, exposure_a: f64, b: u64, exposure_b: f64, phi: f64) -> f64 {
    let share = exposure_a / (exposure_a + exposure_b);
    let n = (a + b) as f64;
    if !share.is_finite() || share <= 0.0 || share >= 1.0 || n == 0.0 {
        return 1.0;
    }
    let z = (a as f64 - n * share) / (phi.max(1.0) * n * share * (1.0 - share)).sqrt();
    (2.0 * normal_sf(z.abs())).min(1.0)
}

/// Pearson's dispersion of per-run counts around each group's Poisson
/// expectation (exposure × the group's rate), pooled over the groups:
/// (Σ (x − e)² / e, over df = Σ (runs − 1)) and df. ~1 for Poisson counts;
/// `None` when no group has two runs.
pub fn dispersion(groups: &[(&[f64], &[f64])]) -> Option<(f64, usize)> {
    let mut chi2 = 0.0;
    let mut df = 0usize;
    for (counts, exposures) in groups {
        if counts.len() < 2 {
            continue;
        }
        let rate = counts.iter().sum::<f64>() / exposures.iter().sum::<f64>();
        df += counts.len() - 1;
        for (x, e) in counts.iter().zip(exposures.iter()) {
            let expected = rate * e;
            if expected > 0.0 {
                chi2 += (x - expected).powi(2) / expected;
            }
        }
    }
    (df > 0).then(|| (chi2 / df as f64, df))
}

/// Upper tail of the chi-square distribution with `df` degrees of freedom.
pub fn chi_square_sf(x: f64, df: f64) -> f64 {
    1.0 - gamma_p(df / 2.0, x / 2.0)
}

/// Largest pooled sample for which [`mann_whitney`] enumerates every
/// split (C(20, 10) = 184 756 of them).
const EXACT_MAX: usize = 20;

/// The Mann–Whitney U test of two independent samples, two-sided. Up to
/// [`EXACT_MAX`] values in all: the exact permutation distribution of U
/// given the pooled ranks, ties included (what scipy's `mannwhitneyu`
/// computes with `method="exact"` for untied data, and its permutation test
/// for tied); above: the normal approximation with the tie correction and
/// a continuity correction (scipy's `method="asymptotic"`). Returns (U of
/// `x`, p).
pub fn mann_whitney(x: &[f64], y: &[f64]) -> (f64, f64) {
    let (m, n) = (x.len(), y.len());
    if m == 0 || n == 0 {
        return (0.0, 1.0);
    }
    let (ranks, ties) = ranks(x.iter().chain(y).copied().collect());
    let (mf, nf) = (m as f64, n as f64);
    let u_of = |rank_sum: f64| rank_sum - mf * (mf + 1.0) / 2.0;
    let u1 = u_of(ranks[..m].iter().sum());
    let center = mf * nf / 2.0;
    let p = if m + n <= EXACT_MAX {
        let observed = (u1 - center).abs() - 1e-9;
        let (mut extreme, mut all) = (0u64, 0u64);
        for_each_rank_sum(&ranks, m, 0.0, &mut |sum| {
            all += 1;
            extreme += u64::from((u_of(sum) - center).abs() >= observed);
        });
        extreme as f64 / all as f64
    } else {
        let total = mf + nf;
        let tie_term: f64 = ties.iter().map(|&t| t.powi(3) - t).sum::<f64>();
        let sd = (mf * nf / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)))).sqrt();
        if sd == 0.0 {
            1.0
        } else {
            2.0 * normal_sf(((u1 - center).abs() - 0.5) / sd)
        }
    };
    (u1, p.min(1.0))
}

/// Calls `f` with the rank sum of every choice of `pick` of `ranks`.
fn for_each_rank_sum(ranks: &[f64], pick: usize, sum: f64, f: &mut impl FnMut(f64)) {
    if pick == 0 {
        f(sum);
        return;
    }
    if ranks.len() < pick {
        return;
    }
    for_each_rank_sum(&ranks[1..], pick - 1, sum + ranks[0], f);
    for_each_rank_sum(&ranks[1..], pick, sum, f);
}

/// Average ranks (1-based) of `values`, and the sizes of the groups of
/// equal values.
fn ranks(values: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        if j > i {
            ties.push((j - i + 1) as f64);
        }
        i = j + 1;
    }
    (ranks, ties)
}

/// Holm's step-down adjustment of p-values for testing them together
/// (family-wise error ≤ α); the result is in the input's order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; p.len()];
    let mut running = 0.0_f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((p.len() - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Upper tail of the standard normal distribution.
pub fn normal_sf(z: f64) -> f64 {
    // erfc(x) = Q(1/2, x²) for x ≥ 0.
    let x = z / std::f64::consts::SQRT_2;
    let upper = 1.0 - gamma_p(0.5, x * x);
    if z >= 0.0 {
        upper / 2.0
    } else {
        1.0 - upper / 2.0
    }
}

/// The `p` quantile of Student's t distribution with `df` degrees of
/// freedom (`scipy.stats.t.ppf`), for p ≥ 0.5.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    // P(T ≤ t) = 1 − I_{df/(df+t²)}(df/2, 1/2) / 2 for t ≥ 0.
    let cdf = |t: f64| 1.0 - beta_inc(df / 2.0, 0.5, df / (df + t * t)) / 2.0;
    bisect(|t| cdf(t) - p, 0.0, 1e4)
}

/// Root of an increasing `f` on [lo, hi].
fn bisect(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if f(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-12 * hi.abs().max(1.0) {
            break;
        }
    }
    (lo + hi) / 2.0
}

/// ln Γ(x), x > 0 (Lanczos, g = 7, 9 terms).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized lower incomplete gamma function P(a, x).
pub fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // Series: P = e^front Σ x^n / (a (a+1) … (a+n)).
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..100_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (sum.ln() + front).exp().min(1.0)
    } else {
        // Continued fraction for Q (modified Lentz).
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (1.0 - (front.exp() * h)).max(0.0)
    }
}

/// The regularized incomplete beta function I_x(a, b).
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1)/(a + b + 2);
    // else use I_x(a, b) = 1 − I_{1−x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let clamp = |v: f64| if v.abs() < tiny { tiny } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / clamp(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / clamp(1.0 + even * d);
        c = clamp(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / clamp(1.0 + odd * d);
        c = clamp(1.0 + odd / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) {
        assert!(
            (got - want).abs() <= rel * want.abs().max(1e-12),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn special_functions_match_tables() {
        // Γ(5) = 24; Γ(1/2) = √π.
        close(ln_gamma(5.0), 24.0_f64.ln(), 1e-12);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12);
        // Standard normal table: P(Z > 1.959964) = 0.025, P(Z > 1) = 0.158655.
        close(normal_sf(1.959_963_985), 0.025, 1e-8);
        close(normal_sf(1.0), 0.158_655_253_931_457, 1e-9);
        close(normal_sf(-1.0), 0.841_344_746_068_543, 1e-9);
        // I_x(a, 1) = x^a.
        close(beta_inc(3.0, 1.0, 0.4), 0.064, 1e-10);
    }

    #[test]
    fn t_quantiles_match_the_table() {
        // Student's t table, two-sided 95 % (scipy.stats.t.ppf(0.975, df)).
        for (df, want) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (9.0, 2.262_157_163),
            (30.0, 2.042_272_456),
        ] {
            close(t_quantile(0.975, df), want, 1e-8);
        }
    }

    #[test]
    fn t_interval_of_a_mean() {
        // 5 runs 1..5: mean 3, s = √2.5, half-width 2.776445 · √(2.5/5).
        let (lo, hi) = t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        close(lo, 3.0 - 1.963_243_161, 1e-8);
        close(hi, 3.0 + 1.963_243_161, 1e-8);
        assert_eq!(t_interval(&[7.0]), None);
    }

    #[test]
    fn garwood_intervals_match_the_chi_square_form() {
        // chi2.ppf(0.025, 2x)/2 and chi2.ppf(0.975, 2x+2)/2, the values of
        // Garwood's table (e.g. Ulm 1990, Am J Epidemiol 131:373), here to
        // 10 digits from mpmath's regularized incomplete gamma (30 digits).
        for (x, lo, hi) in [
            (0, 0.0, 3.688_879_454_11),
            (1, 0.025_317_807_984_3, 5.571_643_390_94),
            (5, 1.623_486_390_12, 11.668_332_079_3),
            (10, 4.795_388_696_13, 18.390_356_042),
        ] {
            let (l, h) = poisson_interval(x);
            close(l, lo, 1e-7);
            close(h, hi, 1e-7);
        }
    }

    #[test]
    fn binomial_test_is_scipys() {
        // Exact sums by hand: 2·(1+10+45+120)/1024 for 3 of 10.
        close(binomial_test(3, 10, 0.5), 352.0 / 1024.0, 1e-12);
        close(binomial_test(2, 2, 0.5), 0.5, 1e-12);
        // scipy.stats.binomtest docs: 3 of 15 with p = 0.1 gives
        // 0.18406106910639114 (their one-sided example; two-sided is the
        // same, as no count below 3 is as unlikely as 3 — checked with
        // exact fractions in Python).
        close(binomial_test(3, 15, 0.1), 0.184_061_069_106_391_14, 1e-9);
        assert_eq!(binomial_test(0, 0, 0.5), 1.0);
    }

    #[test]
    fn conditional_poisson_test() {
        // 10 vs 0 events in equal exposure: 2 · 0.5^10.
        close(
            poisson_conditional_test(10, 5.0, 0, 5.0),
            2.0 / 1024.0,
            1e-12,
        );
        // 2 vs 0 cannot decide at 5 %.
        close(poisson_conditional_test(2, 5.0, 0, 5.0), 0.5, 1e-12);
        // Exposure matters: 10 vs 5 events with twice the exposure on the
        // first side is exactly the null rate.
        assert!(poisson_conditional_test(10, 2.0, 5, 1.0) > 0.99);
    }

    #[test]
    fn quasi_poisson_widens_with_dispersion() {
        let plain = quasi_poisson_test(940, 1.0, 970, 1.0, 1.0);
        let wide = quasi_poisson_test(940, 1.0, 970, 1.0, 13.0);
        // z = −15 / √477.5 = −0.686 → p = 0.4924337 (erfc, Python math).
        close(plain, 0.492_433_706_576, 1e-9);
        assert!(wide > plain);
        // Poisson counts disperse ~1; equal counts do not disperse at all.
        let runs = [3.0, 3.0, 3.0];
        let ones = [1.0, 1.0, 1.0];
        assert_eq!(dispersion(&[(&runs, &ones)]), Some((0.0, 2)));
        let runs = [0.0, 10.0];
        // (0−5)²/5 + (10−5)²/5 over 1 degree of freedom.
        assert_eq!(dispersion(&[(&runs, &ones[..2])]), Some((10.0, 1)));
        // chi2.sf(3.841459, 1) = 0.05 (the chi-square table).
        close(chi_square_sf(3.841_458_820_694_124, 1.0), 0.05, 1e-9);
    }

    #[test]
    fn mann_whitney_matches_scipy_docs() {
        // scipy.stats.mannwhitneyu docs (Conover's example): males vs
        // females, U1 = 17, exact p = 0.1111111111111111, asymptotic
        // (with continuity) p = 0.11134688653314041.
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        let (u, p) = mann_whitney(&males, &females);
        assert_eq!(u, 17.0);
        close(p, 0.111_111_111_111_111_1, 1e-12);
        // Complete separation of 5 and 5: 2 / C(10, 5).
        let (u, p) = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(u, 0.0);
        close(p, 2.0 / 252.0, 1e-12);
        // 3 and 3 can never reach 5 %: the smallest p is 2 / C(6, 3).
        close(
            mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).1,
            0.1,
            1e-12,
        );
    }

    #[test]
    fn mann_whitney_with_ties() {
        // Small and tied: the exact permutation test. Five zeros against
        // five positives are still 2 of the C(10, 5) = 252 splits.
        let (u, p) = mann_whitney(&[4.0, 5.0, 6.0, 7.0, 8.0], &[0.0; 5]);
        assert_eq!(u, 25.0);
        close(p, 2.0 / 252.0, 1e-12);
        // Three ones against three zeros: 2 of C(6, 3) = 20 splits (the
        // normal approximation would say 0.047).
        close(mann_whitney(&[1.0; 3], &[0.0; 3]).1, 0.1, 1e-12);
        // Large and tied: normal with tie and continuity correction. 11
        // zeros against 4..=14: U = 121, σ² = 121/12 · (23 − 1320/462),
        // z = 60/σ → p = 2.553e-5 (erfc, Python math; scipy's asymptotic
        // method computes the same).
        let high: Vec<f64> = (4..=14).map(f64::from).collect();
        let (u, p) = mann_whitney(&high, &[0.0; 11]);
        assert_eq!(u, 121.0);
        close(p, 2.552_988_611_111_557_4e-5, 1e-9);
        // Everything equal: no evidence.
        assert_eq!(mann_whitney(&[1.0, 1.0], &[1.0, 1.0]).1, 1.0);
    }

    #[test]
    fn holm_adjusts_in_steps() {
        // p = (0.01, 0.04, 0.03): 3·0.01, max(0.03, 2·0.03), max(0.06, 0.04).
        let adjusted = holm(&[0.01, 0.04, 0.03]);
        for (got, want) in adjusted.iter().zip([0.03, 0.06, 0.06]) {
            close(*got, want, 1e-12);
        }
    }
}
