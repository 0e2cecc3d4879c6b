//! Small dense linear algebra for the weight fit: a 4x4 symmetric system and
//! its exact non-negative least-squares solution.
//!
//! The fit minimises `Psi(w) = w'Aw - 2b'w (+ const)` subject to `w >= 0`,
//! where `A = sum E'E` (plus a ridge term) and `b = sum E'v`. With four
//! unknowns the exact solution is found by enumerating all 16 active sets:
//! for every subset S of free variables solve `A_SS w_S = b_S`, keep the
//! solutions that are non-negative, and return the one with the smallest
//! objective. Because the problem is convex, the constrained optimum is one
//! of these candidates (its free set solves the reduced system), and every
//! candidate is feasible, so the smallest feasible candidate is the optimum.

// Index loops read best in the matrix code.
#![allow(clippy::needless_range_loop)]

/// Number of unknowns: one weight per resource.
pub const K: usize = crate::resources::R;

/// Solves `A_SS x = b_S` for the variables in `mask` (bit j set = variable j
/// free) by Gaussian elimination with partial pivoting. Variables outside the
/// mask are zero. Returns `None` if the reduced system is (numerically)
/// singular or the result is not finite.
pub fn solve_subset(a: &[[f64; K]; K], b: &[f64; K], mask: u8) -> Option<[f64; K]> {
    let idx: Vec<usize> = (0..K).filter(|j| mask & (1 << j) != 0).collect();
    let m = idx.len();
    let mut out = [0.0; K];
    if m == 0 {
        return Some(out);
    }
    // Augmented reduced matrix, at most 4x5.
    let mut mat = [[0.0f64; K + 1]; K];
    for (r, &i) in idx.iter().enumerate() {
        for (c, &j) in idx.iter().enumerate() {
            mat[r][c] = a[i][j];
        }
        mat[r][m] = b[i];
    }
    let scale = idx
        .iter()
        .map(|&i| a[i][i].abs())
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    for col in 0..m {
        let piv = (col..m)
            .max_by(|&x, &y| mat[x][col].abs().total_cmp(&mat[y][col].abs()))
            .unwrap_or(col);
        if mat[piv][col].abs() <= scale * 1e-13 {
            return None;
        }
        mat.swap(col, piv);
        for r in 0..m {
            if r != col {
                let f = mat[r][col] / mat[col][col];
                if f != 0.0 {
                    for c in col..=m {
                        mat[r][c] -= f * mat[col][c];
                    }
                }
            }
        }
    }
    for (r, &i) in idx.iter().enumerate() {
        let v = mat[r][m] / mat[r][r];
        if !v.is_finite() {
            return None;
        }
        out[i] = v;
    }
    Some(out)
}

/// `w'Aw - 2b'w`: the least-squares objective up to a constant.
pub fn objective(a: &[[f64; K]; K], b: &[f64; K], w: &[f64; K]) -> f64 {
    let mut q = 0.0;
    for i in 0..K {
        for j in 0..K {
            q += w[i] * a[i][j] * w[j];
        }
        q -= 2.0 * b[i] * w[i];
    }
    q
}

/// Exact non-negative least squares for the normal equations `A w = b`,
/// restricted to the variables in `allowed` (others stay zero). Always
/// returns a finite, non-negative vector (all zeros when nothing better
/// exists, e.g. `b <= 0`).
pub fn nnls(a: &[[f64; K]; K], b: &[f64; K], allowed: u8) -> [f64; K] {
    let mut best = [0.0; K];
    let mut best_obj = 0.0; // objective of w = 0
    for mask in 1u8..(1 << K) {
        if mask & !allowed != 0 {
            continue;
        }
        let Some(w) = solve_subset(a, b, mask) else {
            continue;
        };
        if w.iter().any(|&x| x < 0.0) {
            continue;
        }
        let obj = objective(a, b, &w);
        if obj.is_finite() && obj < best_obj {
            best_obj = obj;
            best = w;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ata(rows: &[[f64; K]]) -> [[f64; K]; K] {
        let mut a = [[0.0; K]; K];
        for r in rows {
            for i in 0..K {
                for j in 0..K {
                    a[i][j] += r[i] * r[j];
                }
            }
        }
        a
    }

    #[test]
    fn solves_identity() {
        let mut a = [[0.0; K]; K];
        for (i, row) in a.iter_mut().enumerate() {
            row[i] = 2.0;
        }
        let w = solve_subset(&a, &[2.0, 4.0, 6.0, 8.0], 0b1111).unwrap();
        assert_eq!(w, [1.0, 2.0, 3.0, 4.0]);
        let w = solve_subset(&a, &[2.0, 4.0, 6.0, 8.0], 0b0101).unwrap();
        assert_eq!(w, [1.0, 0.0, 3.0, 0.0]);
    }

    #[test]
    fn singular_subset_is_none() {
        let a = ata(&[[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]]);
        assert!(solve_subset(&a, &[1.0, 1.0, 0.0, 0.0], 0b0011).is_none());
        // but each variable alone is fine
        assert!(solve_subset(&a, &[1.0, 1.0, 0.0, 0.0], 0b0001).is_some());
    }

    #[test]
    fn nnls_clamps_negative_component() {
        // Unconstrained solution would be (1, -1); NNLS must return a
        // non-negative vector with a lower objective than zero.
        let rows = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0, 0.0],
        ];
        let v = [1.0, -1.0, 0.0];
        let a = ata(&rows);
        let mut b = [0.0; K];
        for (r, vv) in rows.iter().zip(v) {
            for j in 0..K {
                b[j] += r[j] * vv;
            }
        }
        let w = nnls(&a, &b, 0b0011);
        assert!(w.iter().all(|&x| x >= 0.0));
        assert!((w[0] - 0.5).abs() < 1e-12, "{w:?}");
        assert_eq!(w[1], 0.0);
    }

    #[test]
    fn nnls_zero_rhs_is_zero() {
        let a = ata(&[[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]);
        assert_eq!(nnls(&a, &[0.0; K], 0b1111), [0.0; K]);
    }
}
