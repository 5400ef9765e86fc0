//! The churn report as an SVG picture: ROC curves (champion against BG/NBD), the
//! calibration table against the diagonal, and the profit curve with the chosen
//! threshold. Plain SVG text, no plotting crate.

use std::fmt::Write;

use super::train::Evaluation;

const W: f64 = 300.0;
const H: f64 = 260.0;
const PAD: f64 = 40.0;
/// The unit square, the range of the ROC and calibration panels.
const UNIT: [f64; 4] = [0.0, 1.0, 0.0, 1.0];
/// The chance line of ROC and the perfect-calibration line.
const DIAGONAL: [(f64, f64); 2] = [(0.0, 0.0), (1.0, 1.0)];

/// One panel's frame, title and axis labels; returns the panel's origin.
fn frame(out: &mut String, k: usize, title: &str, x: &str, y: &str) -> (f64, f64) {
    let (ox, oy) = (k as f64 * (W + PAD) + PAD, PAD);
    let _ = write!(
        out,
        r##"<rect x="{ox}" y="{oy}" width="{W}" height="{H}" fill="none" stroke="#999"/><text x="{tx}" y="{ty}" font-size="14" text-anchor="middle">{title}</text><text x="{tx}" y="{by}" font-size="11" text-anchor="middle">{x}</text><text x="{lx}" y="{my}" font-size="11" text-anchor="middle" transform="rotate(-90 {lx} {my})">{y}</text>"##,
        tx = ox + W / 2.0,
        ty = oy - 10.0,
        by = oy + H + 28.0,
        lx = ox - 22.0,
        my = oy + H / 2.0,
    );
    (ox, oy)
}

/// A polyline through `points` scaled from [x0, x1] × [y0, y1] into the panel.
fn line(out: &mut String, o: (f64, f64), points: &[(f64, f64)], range: [f64; 4], style: &str) {
    let [x0, x1, y0, y1] = range;
    let sx = |x: f64| o.0 + (x - x0) / (x1 - x0).max(1e-12) * W;
    let sy = |y: f64| o.1 + H - (y - y0) / (y1 - y0).max(1e-12) * H;
    let pts: Vec<String> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
        .collect();
    let _ = write!(
        out,
        r#"<polyline fill="none" {style} points="{}"/>"#,
        pts.join(" ")
    );
}

fn legend(out: &mut String, o: (f64, f64), row: usize, colour: &str, text: &str) {
    let y = o.1 + 16.0 + row as f64 * 14.0;
    let _ = write!(
        out,
        r#"<rect x="{x}" y="{r}" width="10" height="3" fill="{colour}"/><text x="{t}" y="{y}" font-size="10">{text}</text>"#,
        x = o.0 + W - 150.0,
        r = y - 4.0,
        t = o.0 + W - 136.0,
    );
}

/// The three panels of a report on one evaluation set.
pub fn svg(name: &str, e: &Evaluation, threshold: f64) -> String {
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif">"#,
        3.0 * (W + PAD) + PAD,
        H + 2.0 * PAD + 20.0
    );
    let fmt = |a: Option<f64>| a.map_or("n/a".to_owned(), |a| format!("{a:.3}"));

    let o = frame(
        &mut out,
        0,
        "ROC",
        "false positive rate",
        "true positive rate",
    );
    line(&mut out, o, &DIAGONAL, UNIT, r##"stroke="#ccc""##);
    line(
        &mut out,
        o,
        &e.bgnbd_roc,
        UNIT,
        r##"stroke="#e69f00" stroke-width="2""##,
    );
    line(
        &mut out,
        o,
        &e.roc,
        UNIT,
        r##"stroke="#0072b2" stroke-width="2""##,
    );
    legend(
        &mut out,
        o,
        0,
        "#0072b2",
        &format!("{} AUC {}", short(name), fmt(e.auc)),
    );
    legend(
        &mut out,
        o,
        1,
        "#e69f00",
        &format!("BG/NBD AUC {}", fmt(e.bgnbd_auc)),
    );

    let o = frame(
        &mut out,
        1,
        "Calibration",
        "predicted churn probability",
        "observed churn rate",
    );
    line(&mut out, o, &DIAGONAL, UNIT, r##"stroke="#ccc""##);
    let cal: Vec<(f64, f64)> = e
        .calibration
        .iter()
        .map(|b| (b.mean_predicted, b.observed_rate))
        .collect();
    line(
        &mut out,
        o,
        &cal,
        UNIT,
        r##"stroke="#0072b2" stroke-width="2""##,
    );
    legend(
        &mut out,
        o,
        0,
        "#0072b2",
        &format!("ECE {:.3}", e.calibration_error),
    );

    let o = frame(
        &mut out,
        2,
        "Profit by threshold",
        "churn probability threshold",
        "profit",
    );
    let realised: Vec<(f64, f64)> = e
        .profit_curve
        .iter()
        .map(|p| (p.threshold, p.realised_profit))
        .collect();
    let expected: Vec<(f64, f64)> = e
        .profit_curve
        .iter()
        .map(|p| (p.threshold, p.expected_profit))
        .collect();
    let (lo, hi) = realised
        .iter()
        .chain(&expected)
        .fold((0.0f64, 0.0f64), |(lo, hi), (_, y)| {
            (lo.min(*y), hi.max(*y))
        });
    let range = [0.0, 1.0, lo, hi.max(lo + 1.0)];
    line(
        &mut out,
        o,
        &[(0.0, 0.0), (1.0, 0.0)],
        range,
        r##"stroke="#ccc""##,
    );
    line(
        &mut out,
        o,
        &[(threshold, lo), (threshold, hi)],
        range,
        r##"stroke="#009e73" stroke-dasharray="4 3""##,
    );
    line(
        &mut out,
        o,
        &expected,
        range,
        r##"stroke="#e69f00" stroke-width="2""##,
    );
    line(
        &mut out,
        o,
        &realised,
        range,
        r##"stroke="#0072b2" stroke-width="2""##,
    );
    legend(&mut out, o, 0, "#0072b2", "realised");
    legend(&mut out, o, 1, "#e69f00", "expected");
    legend(
        &mut out,
        o,
        2,
        "#009e73",
        &format!("threshold {threshold:.2}"),
    );
    out.push_str("</svg>\n");
    out
}

/// A candidate name without its settings, escaped for SVG text.
fn short(name: &str) -> String {
    name.split('(')
        .next()
        .unwrap_or(name)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::churn::metrics::{calibration, profit_curve, roc};
    use crate::churn::Offer;

    #[test]
    fn three_panels_with_every_series() {
        let p = [0.1, 0.4, 0.8, 0.9];
        let y = [false, false, true, true];
        let e = Evaluation {
            rows: 4,
            churn_rate: 0.5,
            auc: Some(1.0),
            log_loss: 0.2,
            bgnbd_auc: Some(0.75),
            bgnbd_log_loss: 0.5,
            calibration: calibration(&p, &y, 10),
            calibration_error: 0.1,
            roc: roc(&p, &y, 10),
            bgnbd_roc: roc(&[0.5, 0.6, 0.4, 0.9], &y, 10),
            profit_curve: profit_curve(&p, &y, &[10.0; 4], Offer::default()),
        };
        let s = svg("gbt(depth=3)", &e, 0.5);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 3 + 2 + 4);
        assert!(s.contains("gbt AUC 1.000") && s.contains("BG/NBD AUC 0.750"));
        assert!(!s.contains("NaN"));
    }
}
