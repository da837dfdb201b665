//! The two kinds of fit the CAB analysis uses, and CAB's efficiency length.
//!
//! - [`Poly`]: ordinary least squares of `y = c₀ + c₁·S + … + c_k·S^k` (with an intercept), what CAB's
//!   script does with scikit-learn (`LinearRegression` over `PolynomialFeatures(2)` for vanilla
//!   attention, plain `LinearRegression` for an efficient one).
//! - [`PowerLaw`]: `y = a·S^b` by least squares on (ln S, ln y). Not CAB's: its exponent `b` says how a
//!   backend's cost grows (2 = quadratic) and is reported as a separate figure.
//! - [`efficiency_length`]: where CAB's quadratic baseline fit and a backend's linear fit cross.

/// `y = Σ coef[k]·S^k`, fitted by least squares.
#[derive(Debug, Clone, PartialEq)]
pub struct Poly {
    /// Coefficients from the constant term up, in the units of y per token^k.
    pub coef: Vec<f64>,
    /// Coefficient of determination on the fitted points (what scikit-learn's `score` returns).
    pub r2: f64,
    /// Points used.
    pub n: usize,
}

impl Poly {
    pub fn eval(&self, s: f64) -> f64 {
        self.coef.iter().rev().fold(0.0, |acc, c| acc * s + c)
    }

    fn c(&self, k: usize) -> f64 {
        self.coef.get(k).copied().unwrap_or(0.0)
    }
}

/// Least-squares polynomial of `degree` through `points` (S, y); `None` with fewer distinct lengths
/// than coefficients. Solved on S scaled to (0, 1] (the normal equations of S⁴ at S = 1M would lose
/// every digit otherwise), then scaled back.
pub fn fit_poly(points: &[(f64, f64)], degree: usize) -> Option<Poly> {
    let k = degree + 1;
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.len() < k {
        return None;
    }
    let scale = points.iter().map(|p| p.0.abs()).fold(0.0, f64::max);
    if scale <= 0.0 || !scale.is_finite() {
        return None;
    }
    // Normal equations G·c = r with G[i][j] = Σ x^(i+j), r[i] = Σ x^i·y.
    let mut g = vec![vec![0.0; k + 1]; k];
    for &(s, y) in points {
        let x = s / scale;
        for (i, row) in g.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().take(k).enumerate() {
                *cell += x.powi((i + j) as i32);
            }
            row[k] += x.powi(i as i32) * y;
        }
    }
    let scaled = solve(g)?;
    let coef: Vec<f64> = scaled.iter().enumerate().map(|(i, c)| c / scale.powi(i as i32)).collect();
    let fit = Poly { coef, r2: 0.0, n: points.len() };
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let ss_res: f64 = points.iter().map(|p| (p.1 - fit.eval(p.0)).powi(2)).sum();
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 };
    Some(Poly { r2, ..fit })
}

/// Gaussian elimination with partial pivoting on an augmented k×(k+1) matrix.
fn solve(mut m: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = m.len();
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (cell, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *cell -= f * p;
                }
            }
        }
    }
    let x: Vec<f64> = (0..k).map(|i| m[i][k] / m[i][i]).collect();
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// `y = a · S^b`, fitted by least squares on (ln S, ln y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    pub a: f64,
    /// Growth exponent: 1 linear, 2 quadratic in the sequence length.
    pub b: f64,
    /// Coefficient of determination of the log-log fit.
    pub r2: f64,
    /// Points used.
    pub n: usize,
}

impl PowerLaw {
    pub fn eval(&self, s: f64) -> f64 {
        self.a * s.powf(self.b)
    }
}

/// Fits `y = a·S^b` to the points with positive coordinates; `None` with fewer than two lengths.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let logs: Vec<(f64, f64)> = points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0).map(|(x, y)| (x.ln(), y.ln())).collect();
    let line = fit_poly(&logs, 1)?;
    Some(PowerLaw { a: line.c(0).exp(), b: line.c(1), r2: line.r2, n: line.n })
}

/// CAB's efficiency length of one backend against the baseline, for one quantity (time or memory).
#[derive(Debug, Clone, PartialEq)]
pub enum EffLen {
    /// The backend's fit is below the baseline's beyond this many tokens (the larger crossing).
    Tokens(f64),
    /// Cheaper at every length: the fits do not cross at a positive length. The reason says which.
    Always(String),
    /// No length beyond which the backend stays cheaper. The reason says why.
    Never(String),
    /// Not computable (too few points, no baseline). The reason says what is missing.
    Unknown(String),
}

/// CAB's efficiency length: the larger root of `q(S) = l(S)`, where `q(S) = a·S² + b·S + c` is the
/// baseline's quadratic fit and `l(S) = d·S + e` the backend's linear fit; CAB's script takes
/// `(−(b−d) + √((b−d)² − 4a(c−e))) / 2a`. With a > 0 the backend's line is below the parabola for
/// every S beyond that root, so it is "the length beyond which the efficient attention stays
/// cheaper". What CAB's script leaves undefined is answered with a reason instead of a number:
/// no real root (the line is below the parabola everywhere: always), both roots below one token
/// (always: no sequence is that short),
/// a ≤ 0 (the parabola does not outgrow the line: never, unless a = 0 and the baseline's slope is
/// larger).
pub fn efficiency_length(baseline: &Poly, backend: &Poly) -> EffLen {
    let (a, b, c) = (baseline.c(2), baseline.c(1), baseline.c(0));
    let (d, e) = (backend.c(1), backend.c(0));
    if a < 0.0 {
        return EffLen::Never(format!("the baseline's quadratic fit bends down (S² coefficient {a:.3e} < 0), so it ends below any line"));
    }
    if a == 0.0 {
        if b <= d {
            return EffLen::Never("the baseline's fit grows no faster than this backend's".into());
        }
        let root = (e - c) / (b - d);
        return if root >= 1.0 { EffLen::Tokens(root) } else { EffLen::Always(format!("the fits cross only below one token (S = {root:.2})")) };
    }
    let disc = (b - d).powi(2) - 4.0 * a * (c - e);
    if disc < 0.0 {
        return EffLen::Always("the fits never cross: the baseline's quadratic lies above this backend's line at every length".into());
    }
    let root = (-(b - d) + disc.sqrt()) / (2.0 * a);
    if root < 1.0 {
        return EffLen::Always(format!("the fits cross only below one token (S = {root:.2})"));
    }
    EffLen::Tokens(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CAB's raw measurements of vanilla attention and ABC (Shark-NLP/CAB, commit 0e49696,
    /// `scripts/efficiency_length/cost.xlsx`, sheets `time` in ms and `memory` in MiB; see
    /// tests/fixtures/cab_abc/SOURCE.md). CAB publishes ABC's efficiency length as 1,877 tokens
    /// (time) and 70 (memory) in its README's "Efficiency Length" table.
    const S: [f64; 6] = [256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];
    const VANILLA_MS: [f64; 6] = [0.472, 0.628, 0.721, 0.981, 3.67, 18.437];
    const ABC_MS: [f64; 6] = [0.648, 0.59, 0.602, 0.91, 1.006, 1.509];
    const VANILLA_MIB: [f64; 6] = [81.0, 265.0, 952.0, 3604.0, 14020.0, 55300.0];
    const ABC_MIB: [f64; 6] = [42.0, 80.0, 156.0, 308.0, 612.0, 1220.0];

    fn pts(y: &[f64]) -> Vec<(f64, f64)> {
        S.iter().copied().zip(y.iter().copied()).collect()
    }

    #[test]
    fn reproduces_cabs_published_efficiency_lengths_for_abc() {
        let time_base = fit_poly(&pts(&VANILLA_MS), 2).unwrap();
        // Time: CAB leaves the efficient model's shortest length (256) out of its linear fit.
        let time_abc = fit_poly(&pts(&ABC_MS)[1..], 1).unwrap();
        let EffLen::Tokens(t) = efficiency_length(&time_base, &time_abc) else { panic!() };
        assert_eq!(t.round(), 1877.0, "{t}");
        let mem_base = fit_poly(&pts(&VANILLA_MIB), 2).unwrap();
        let mem_abc = fit_poly(&pts(&ABC_MIB), 1).unwrap();
        let EffLen::Tokens(m) = efficiency_length(&mem_base, &mem_abc) else { panic!() };
        assert_eq!(m.round(), 70.0, "{m}");
        // The same numbers in other units (s instead of ms, bytes instead of MiB): a crossing
        // does not depend on the unit.
        let scaled = |y: &[f64], f: f64| pts(&y.iter().map(|v| v * f).collect::<Vec<_>>());
        let EffLen::Tokens(m2) =
            efficiency_length(&fit_poly(&scaled(&VANILLA_MIB, 1048576.0), 2).unwrap(), &fit_poly(&scaled(&ABC_MIB, 1048576.0), 1).unwrap())
        else {
            panic!()
        };
        assert!((m2 - m).abs() < 1e-6, "{m2} vs {m}");
    }

    #[test]
    fn poly_fit_recovers_exact_coefficients() {
        let p: Vec<(f64, f64)> = [1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0].iter().map(|&s: &f64| (s, 3.0 + 2e-3 * s + 5e-9 * s * s)).collect();
        let f = fit_poly(&p, 2).unwrap();
        assert!((f.coef[0] - 3.0).abs() < 1e-6 && (f.coef[1] / 2e-3 - 1.0).abs() < 1e-9 && (f.coef[2] / 5e-9 - 1.0).abs() < 1e-9, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!(fit_poly(&p[..2], 2).is_none(), "two lengths do not determine a quadratic");
    }

    #[test]
    fn power_law_fit_recovers_the_exponent() {
        let p: Vec<(f64, f64)> = [1024.0, 2048.0, 4096.0, 8192.0].iter().map(|&s: &f64| (s, 3e-7 * s.powf(1.9))).collect();
        let f = fit_power_law(&p).unwrap();
        assert!((f.b - 1.9).abs() < 1e-9 && (f.a / 3e-7 - 1.0).abs() < 1e-6 && (f.r2 - 1.0).abs() < 1e-12, "{f:?}");
        assert!(fit_power_law(&p[..1]).is_none());
    }

    #[test]
    fn efficiency_length_cases_with_reasons() {
        let quad = |a: f64, b: f64, c: f64| Poly { coef: vec![c, b, a], r2: 1.0, n: 6 };
        let line = |d: f64, e: f64| Poly { coef: vec![e, d], r2: 1.0, n: 5 };
        // 1e-6·S² vs 1e-3·S: equal at S = 1000, the line below beyond it.
        match efficiency_length(&quad(1e-6, 0.0, 0.0), &line(1e-3, 0.0)) {
            EffLen::Tokens(s) => assert!((s - 1000.0).abs() < 1e-6, "{s}"),
            other => panic!("{other:?}"),
        }
        // A line under the parabola everywhere.
        assert!(matches!(efficiency_length(&quad(1e-6, 0.0, 10.0), &line(1e-3, 0.0)), EffLen::Always(_)));
        // Crossings at negative lengths only.
        assert!(matches!(efficiency_length(&quad(1.0, 10.0, 0.0), &line(1.0, 0.0)), EffLen::Always(r) if r.contains("below one token")));
        // A concave baseline fit never stays above a line.
        assert!(matches!(efficiency_length(&quad(-1e-9, 1e-3, 0.0), &line(1e-4, 0.0)), EffLen::Never(r) if r.contains("bends down")));
    }
}
