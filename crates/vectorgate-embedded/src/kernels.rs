//! Scoring kernels: SimSIMD's runtime-dispatched SIMD routines (AVX-512,
//! AVX2, NEON, SVE...) turned into the project's score convention, where a
//! larger score always means "more similar" (see [`vectorgate::Metric`]).
//!
//! | metric | kernel | score |
//! |---|---|---|
//! | cosine | `dot(q, v)` | `dot · ‖q‖⁻¹ · ‖v‖⁻¹` (similarity, not SimSIMD's cosine *distance*) |
//! | inner product | `dot(q, v)` | `dot` |
//! | L2 | `l2sq(q, v)` (the *squared* distance) | `-sqrt(l2sq)` |
//!
//! Why cosine goes through `dot` and not SimSIMD's `cos`: `cos` recomputes
//! both norms on every call (three multiply-adds per element instead of one)
//! and normalises with an approximate reciprocal square root. The index
//! stores every row's inverse norm once, at write time, and the query's is
//! computed once per search, so the hot loop is a single dot product and the
//! normalisation uses a correctly rounded square root in f64.

use simsimd::SpatialSimilarity;
use vectorgate::Metric;

/// `1 / ‖v‖`, or 0 for the zero vector, so that its cosine score is 0 like
/// [`Metric::reference_score`] says (validation refuses zero vectors for
/// cosine indexes anyway; this only keeps the arithmetic total).
pub(crate) fn inverse_norm(v: &[f32]) -> f64 {
    let squared = f32::dot(v, v).unwrap_or(0.0);
    if squared > 0.0 && squared.is_finite() {
        1.0 / squared.sqrt()
    } else {
        0.0
    }
}

/// A query prepared for scoring many rows of one index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scorer<'q> {
    metric: Metric,
    query: &'q [f32],
    /// `1 / ‖query‖`, used by cosine only.
    query_inverse_norm: f64,
}

impl<'q> Scorer<'q> {
    /// Prepares `query` (already validated to the index dimension).
    pub(crate) fn new(metric: Metric, query: &'q [f32]) -> Self {
        let query_inverse_norm = match metric {
            Metric::Cosine => inverse_norm(query),
            Metric::InnerProduct | Metric::L2 => 0.0,
        };
        Scorer {
            metric,
            query,
            query_inverse_norm,
        }
    }

    /// The score of one stored row. `row_inverse_norm` is the row's
    /// [`inverse_norm`]; only cosine reads it.
    ///
    /// SimSIMD only fails on slices of different lengths, which the index
    /// rules out by construction; such a row would score `-inf` (never
    /// preferred) rather than panic.
    #[inline]
    pub(crate) fn score(&self, row: &[f32], row_inverse_norm: f64) -> f32 {
        let score = self.raw_score(row, row_inverse_norm);
        // Only overflowing inputs (|x| near f32::MAX) can produce NaN; rank
        // it last instead of letting `total_cmp` put it first.
        if score.is_nan() {
            f32::NEG_INFINITY
        } else {
            score
        }
    }

    #[inline]
    fn raw_score(&self, row: &[f32], row_inverse_norm: f64) -> f32 {
        match self.metric {
            Metric::Cosine => match f32::dot(self.query, row) {
                // Rounding can push |cos| a hair past 1; the convention is [-1, 1].
                Some(dot) => {
                    (dot * self.query_inverse_norm * row_inverse_norm).clamp(-1.0, 1.0) as f32
                }
                None => f32::NEG_INFINITY,
            },
            Metric::InnerProduct => {
                f32::dot(self.query, row).map_or(f32::NEG_INFINITY, |d| d as f32)
            }
            Metric::L2 => f32::l2sq(self.query, row)
                .map_or(f32::NEG_INFINITY, |d| -(d.max(0.0).sqrt()) as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() <= 1e-4 * b.abs().max(1.0)
    }

    #[test]
    fn scores_follow_the_project_convention() {
        let q = [1.0_f32, 2.0, 3.0, -1.0, 0.5];
        let v = [0.5_f32, -1.0, 2.0, 4.0, 1.5];
        for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
            let got = Scorer::new(metric, &q).score(&v, inverse_norm(&v));
            let want = metric.reference_score(&q, &v);
            assert!(close(got, want), "{metric}: got {got}, want {want}");
        }
    }

    #[test]
    fn l2_is_negative_distance_not_squared() {
        let got = Scorer::new(Metric::L2, &[0.0, 0.0]).score(&[3.0, 4.0], 0.0);
        assert!((got + 5.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn cosine_is_similarity_and_bounded() {
        let v = [0.3_f32; 17];
        let same = Scorer::new(Metric::Cosine, &v).score(&v, inverse_norm(&v));
        assert!((same - 1.0).abs() < 1e-6 && same <= 1.0, "{same}");
        let opposite: Vec<f32> = v.iter().map(|x| -x).collect();
        let score = Scorer::new(Metric::Cosine, &v).score(&opposite, inverse_norm(&opposite));
        assert!((score + 1.0).abs() < 1e-6 && score >= -1.0, "{score}");
        assert_eq!(inverse_norm(&[0.0; 4]), 0.0);
    }

    #[test]
    fn mismatched_lengths_never_win() {
        let s = Scorer::new(Metric::InnerProduct, &[1.0, 1.0]);
        assert_eq!(s.score(&[1.0], 1.0), f32::NEG_INFINITY);
    }
}
