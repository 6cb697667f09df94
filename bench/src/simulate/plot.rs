//! A hand-written SVG line plot: busbw (GB/s, linear) against size (bytes, log2), one line per
//! algorithm. No plotting crate: the chart is a few dozen SVG elements.

use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;

const W: f64 = 800.0;
const H: f64 = 480.0;
const L: f64 = 70.0;
const R: f64 = 150.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// `curves`: (label, [(bytes, busbw GB/s)]).
pub fn write_svg(
    path: &Path,
    title: &str,
    curves: &[(String, Vec<(u64, f64)>)],
) -> anyhow::Result<()> {
    std::fs::write(path, svg(title, curves)).with_context(|| format!("writing {}", path.display()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(title: &str, curves: &[(String, Vec<(u64, f64)>)]) -> String {
    let pts = curves.iter().flat_map(|(_, p)| p.iter());
    let (mut xmin, mut xmax, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(b, y) in pts {
        let x = (b.max(1) as f64).log2();
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymax = ymax.max(y);
    }
    if !xmin.is_finite() {
        (xmin, xmax) = (0.0, 1.0);
    }
    if xmax <= xmin {
        xmax = xmin + 1.0;
    }
    let ystep = nice_step(ymax.max(1e-9) / 5.0);
    let ytop = (ymax / ystep).ceil().max(1.0) * ystep;
    let px = |x: f64| L + (x - xmin) / (xmax - xmin) * (W - L - R);
    let py = |y: f64| H - B - y / ytop * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        (L + W - R) / 2.0,
        escape(title)
    );
    // Grid and axes.
    let mut y = 0.0;
    while y <= ytop + ystep * 0.01 {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            x2 = W - R,
            yy = py(y),
            tx = L - 6.0,
            ty = py(y) + 4.0,
            label = fmt_num(y)
        );
        y += ystep;
    }
    let xstep = ((xmax - xmin) / 10.0).ceil().max(1.0);
    let mut x = xmin.ceil();
    while x <= xmax + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{T}" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            px(x),
            H - B,
            H - B + 18.0,
            size_label(x)
        );
        x += xstep;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - L - R,
        H - T - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">message size (bytes)</text>"#,
        (L + W - R) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">busbw (GB/s)</text>"#,
        (T + H - B) / 2.0
    );
    // Lines and legend.
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(b, y)| format!("{:.1},{:.1}", px((b.max(1) as f64).log2()), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" x2="{1}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{2}" y="{3}">{4}</text>"#,
            W - R + 10.0,
            W - R + 34.0,
            W - R + 40.0,
            ly + 4.0,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

fn fmt_num(y: f64) -> String {
    if y == y.round() {
        format!("{y:.0}")
    } else {
        format!("{y:.2}")
    }
}

fn size_label(log2: f64) -> String {
    let b = 2f64.powf(log2).round() as u64;
    super::human(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_has_one_line_per_algorithm_and_escapes_labels() {
        let curves = vec![
            ("ring".to_string(), vec![(1024, 0.5), (1 << 20, 10.0)]),
            ("a<b".to_string(), vec![(1024, 0.1), (1 << 20, 3.0)]),
        ];
        let s = svg("t & t", &curves);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("a&lt;b") && s.contains("t &amp; t"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(0.12), 0.2);
    }
}
