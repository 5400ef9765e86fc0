//! The churn report as an SVG picture: ROC curves (champion against the BTYD baseline),
//! the calibration table against the diagonal, and the profit curve with the chosen
//! threshold, each with numbered axes. Plain SVG text, no plotting crate.

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
        lx = ox - 30.0,
        my = oy + H / 2.0,
    );
    (ox, oy)
}

/// Tick values for an axis over [lo, hi]: multiples of 1, 2 or 5 × 10^k, about five.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return vec![lo];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick value as text: no more decimals than the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let text = format!("{v:.decimals$}");
    if text.starts_with('-') && text.trim_start_matches(['-', '0', '.']).is_empty() {
        text[1..].to_owned()
    } else {
        text
    }
}

/// Numbered ticks on the left and bottom edges of a panel showing [x0, x1] × [y0, y1].
fn axes(out: &mut String, o: (f64, f64), range: [f64; 4]) {
    let [x0, x1, y0, y1] = range;
    let xs = ticks(x0, x1);
    let ys = ticks(y0, y1);
    let step = |t: &[f64]| t.get(1).zip(t.first()).map_or(1.0, |(b, a)| b - a);
    let (xstep, ystep) = (step(&xs), step(&ys));
    for x in xs {
        let px = o.0 + (x - x0) / (x1 - x0).max(1e-12) * W;
        let py = o.1 + H;
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" y1="{py}" x2="{px:.1}" y2="{t}" stroke="#999"/><text x="{px:.1}" y="{l}" font-size="9" text-anchor="middle">{}</text>"##,
            tick_label(x, xstep),
            t = py + 4.0,
            l = py + 13.0,
        );
    }
    for y in ys {
        let py = o.1 + H - (y - y0) / (y1 - y0).max(1e-12) * H;
        let _ = write!(
            out,
            r##"<line x1="{t}" y1="{py:.1}" x2="{x}" y2="{py:.1}" stroke="#999"/><text x="{l}" y="{b:.1}" font-size="9" text-anchor="end">{}</text>"##,
            tick_label(y, ystep),
            x = o.0,
            t = o.0 - 4.0,
            l = o.0 - 6.0,
            b = py + 3.0,
        );
    }
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
    axes(&mut out, o, UNIT);
    line(&mut out, o, &DIAGONAL, UNIT, r##"stroke="#ccc""##);
    line(
        &mut out,
        o,
        &e.btyd_roc,
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
        &format!("BTYD P(no purchase) AUC {}", fmt(e.btyd_auc)),
    );

    let o = frame(
        &mut out,
        1,
        "Calibration",
        "predicted churn probability",
        "observed churn rate",
    );
    axes(&mut out, o, UNIT);
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
    axes(&mut out, o, range);
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
            btyd_auc: Some(0.75),
            btyd_log_loss: 0.5,
            one_minus_p_alive_auc: Some(0.3),
            calibration: calibration(&p, &y, 10),
            calibration_error: 0.1,
            roc: roc(&p, &y, 10),
            btyd_roc: roc(&[0.5, 0.6, 0.4, 0.9], &y, 10),
            profit_curve: profit_curve(&p, &y, &[10.0; 4], Offer::default()),
        };
        let s = svg("gbt(depth=3)", &e, 0.5);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 3 + 2 + 4);
        assert!(s.contains("gbt AUC 1.000") && s.contains("BTYD P(no purchase) AUC 0.750"));
        assert!(!s.contains("NaN"));
        // Every panel has numbers on both axes: 0 … 1 on the unit panels, the profit
        // range on the third.
        assert!(s.matches(">0.2</text>").count() >= 4, "{s}");
        assert!(s.matches(">1.0</text>").count() >= 5, "{s}");
        assert!(s.matches("<line ").count() >= 3 * 2 * 3, "{s}");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let close = |a: Vec<f64>, b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
        };
        assert!(close(ticks(0.0, 1.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]));
        assert!(close(ticks(-30.0, 170.0), &[0.0, 50.0, 100.0, 150.0]));
        assert!(close(ticks(-1234.0, -2.0), &[-1000.0, -500.0]));
        assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(tick_label(-0.0, 50.0), "0");
        assert_eq!(tick_label(1500.0, 500.0), "1500");
    }
}
