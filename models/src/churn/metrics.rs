//! How good churn probabilities are: AUC, log-loss, Brier score, a calibration table,
//! the ROC curve and the realised profit of targeting above each threshold.

use serde::Serialize;

use super::Offer;

/// Area under the ROC curve (the Mann–Whitney statistic, ties counted half); `None`
/// when one class is missing.
pub fn auc(p: &[f64], churned: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..p.len().min(churned.len())).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let (mut rank_sum, mut pos) = (0.0, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let rank = (i + j + 2) as f64 / 2.0;
        for &k in &idx[i..=j] {
            if churned[k] {
                rank_sum += rank;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = idx.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let (pos, neg) = (pos as f64, neg as f64);
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Mean negative log-likelihood, probabilities clamped to [1e-15, 1 − 1e-15].
pub fn log_loss(p: &[f64], churned: &[bool]) -> f64 {
    let n = p.len().min(churned.len()).max(1) as f64;
    p.iter()
        .zip(churned)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            -(if y { p.ln() } else { (1.0 - p).ln() })
        })
        .sum::<f64>()
        / n
}

/// Mean squared error of the probabilities.
pub fn brier(p: &[f64], churned: &[bool]) -> f64 {
    let n = p.len().min(churned.len()).max(1) as f64;
    p.iter()
        .zip(churned)
        .map(|(&p, &y)| (p - f64::from(u8::from(y))).powi(2))
        .sum::<f64>()
        / n
}

/// One bin of a calibration table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// Predictions in `bins` equal-width bins of probability; empty bins are left out.
pub fn calibration(p: &[f64], churned: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut acc = vec![(0usize, 0.0, 0usize); bins];
    for (&p, &y) in p.iter().zip(churned) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += p;
        acc[b].2 += usize::from(y);
    }
    acc.iter()
        .enumerate()
        .filter(|(_, a)| a.0 > 0)
        .map(|(i, &(n, sum, pos))| CalibrationBin {
            lower: i as f64 / bins as f64,
            upper: (i + 1) as f64 / bins as f64,
            count: n,
            mean_predicted: sum / n as f64,
            observed_rate: pos as f64 / n as f64,
        })
        .collect()
}

/// Expected calibration error: the count-weighted mean |predicted − observed| of a
/// calibration table.
pub fn calibration_error(table: &[CalibrationBin]) -> f64 {
    let n: usize = table.iter().map(|b| b.count).sum();
    if n == 0 {
        return 0.0;
    }
    table
        .iter()
        .map(|b| b.count as f64 * (b.mean_predicted - b.observed_rate).abs())
        .sum::<f64>()
        / n as f64
}

/// ROC curve points (false positive rate, true positive rate) at `points` thresholds.
pub fn roc(p: &[f64], churned: &[bool], points: usize) -> Vec<(f64, f64)> {
    let pos = churned.iter().filter(|&&y| y).count().max(1) as f64;
    let neg = churned.iter().filter(|&&y| !y).count().max(1) as f64;
    let points = points.max(2);
    (0..=points)
        .map(|i| {
            let t = 1.0 - i as f64 / points as f64;
            let (mut tp, mut fp) = (0.0, 0.0);
            for (&p, &y) in p.iter().zip(churned) {
                if p >= t {
                    if y {
                        tp += 1.0;
                    } else {
                        fp += 1.0;
                    }
                }
            }
            (fp / neg, tp / pos)
        })
        .collect()
}

/// Targeting every customer at or above one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProfitPoint {
    pub threshold: f64,
    pub targeted: usize,
    /// Σ over the targeted of (churned · acceptance · CLV − cost): what the offer would
    /// have earned given who really churned.
    pub realised_profit: f64,
    /// Σ over the targeted of the model's expected profit.
    pub expected_profit: f64,
}

/// The profit curve over thresholds 0.00, 0.01, …, 1.00.
pub fn profit_curve(p: &[f64], churned: &[bool], clv: &[f64], offer: Offer) -> Vec<ProfitPoint> {
    let mut curve: Vec<ProfitPoint> = (0..=100)
        .map(|i| ProfitPoint {
            threshold: i as f64 / 100.0,
            targeted: 0,
            realised_profit: 0.0,
            expected_profit: 0.0,
        })
        .collect();
    for ((&p, &y), &v) in p.iter().zip(churned).zip(clv) {
        let kept = if y {
            offer.acceptance * v.max(0.0)
        } else {
            0.0
        };
        let expected = offer.expected_profit(p, v);
        // Every threshold ≤ p targets this customer.
        let top = ((p.clamp(0.0, 1.0) * 100.0).floor() as usize).min(100);
        for point in &mut curve[..=top] {
            point.targeted += 1;
            point.realised_profit += kept - offer.cost;
            point.expected_profit += expected;
        }
    }
    curve
}

/// The threshold of the highest realised profit (1.0, nobody, when no threshold gains).
pub fn best_threshold(curve: &[ProfitPoint]) -> f64 {
    curve
        .iter()
        .filter(|c| c.realised_profit > 0.0)
        .max_by(|a, b| a.realised_profit.total_cmp(&b.realised_profit))
        .map_or(1.0, |c| c.threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let y = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &y), Some(1.0));
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &y), Some(0.0));
        assert_eq!(auc(&[0.5; 4], &y), Some(0.5));
        // One of the four positive-negative pairs misordered.
        assert_eq!(auc(&[0.1, 0.6, 0.5, 0.9], &y), Some(0.75));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn log_loss_brier_and_calibration() {
        let y = [true, false];
        assert!((log_loss(&[0.5, 0.5], &y) - 2f64.ln()).abs() < 1e-12);
        assert!(log_loss(&[1.0, 0.0], &y) < 1e-12);
        assert!((brier(&[0.5, 0.5], &y) - 0.25).abs() < 1e-12);
        let t = calibration(&[0.05, 0.15, 0.95, 0.99], &[false, true, true, true], 10);
        assert_eq!(t.len(), 3);
        assert_eq!(t[2].count, 2);
        assert_eq!(t[2].observed_rate, 1.0);
        let e = calibration_error(&t);
        assert!((e - (0.05 + 0.85 + 0.05 + 0.01) / 4.0).abs() < 1e-12, "{e}");
    }

    #[test]
    fn profit_curve_targets_the_right_customers() {
        let offer = Offer {
            cost: 1.0,
            acceptance: 0.5,
        };
        // A churner worth 10 at p 0.9, a stayer at p 0.2.
        let curve = profit_curve(&[0.9, 0.2], &[true, false], &[10.0, 10.0], offer);
        assert_eq!(curve[0].targeted, 2);
        assert!((curve[0].realised_profit - (5.0 - 2.0)).abs() < 1e-12);
        assert_eq!(curve[50].targeted, 1);
        assert!((curve[50].realised_profit - 4.0).abs() < 1e-12);
        assert!((curve[50].expected_profit - (0.9 * 0.5 * 10.0 - 1.0)).abs() < 1e-12);
        assert_eq!(curve[100].targeted, 0);
        let t = best_threshold(&curve);
        assert!(t > 0.2 && t <= 0.9, "{t}");
        let r = roc(&[0.9, 0.2], &[true, false], 10);
        assert_eq!(r.first(), Some(&(0.0, 0.0)));
        assert_eq!(r.last(), Some(&(1.0, 1.0)));
    }
}
