//! Bus bandwidth against message size, one line per run, as SVG or PNG (by the file's
//! extension), with plotters. Runs come from this process, from `--json` files of
//! `oxccl-bench` (or anything with `bytes` and `busbw_gbps` keys), or from nccl-tests-style
//! text (the `busbw` column of the header; rows start with the size).
//!
//! Text needs a TrueType font: `OXCCL_PLOT_FONT`, else the first DejaVu/Liberation/Arial sans
//! font found in the usual system folders.

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A run to draw: its legend label and (bytes, busbw GB/s) points.
pub type Curve = (String, Vec<(u64, f64)>);

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

const SIZE: (u32, u32) = (960, 560);

fn font_candidates() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::env::var_os("OXCCL_PLOT_FONT")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/Library/Fonts/Arial.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ] {
        v.push(PathBuf::from(p));
    }
    v
}

/// Registers a system font as plotters' `sans-serif` once per process.
fn register_font() -> anyhow::Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        for p in font_candidates() {
            if let Ok(bytes) = std::fs::read(&p) {
                // The font lives as long as the process: plotters keeps a 'static reference.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(
            "no TrueType font found for the plot's text; set OXCCL_PLOT_FONT=/path/to/font.ttf"
                .into(),
        )
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// `8`, `64K`, `32M`, `1G`: sizes as people write them.
fn human(bytes: f64) -> String {
    let b = bytes.round() as u64;
    for (unit, name) in [(1u64 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")] {
        if b >= unit && b % unit == 0 {
            return format!("{}{name}", b / unit);
        }
    }
    b.to_string()
}

/// Writes the chart to `path` (`.svg` or `.png`).
pub fn write(path: &Path, title: &str, curves: &[Curve]) -> anyhow::Result<()> {
    if curves.iter().all(|(_, pts)| pts.is_empty()) {
        bail!("nothing to plot: no run has a point");
    }
    register_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let result = match ext.as_deref() {
        Some("svg") => draw(
            SVGBackend::new(path, SIZE).into_drawing_area(),
            title,
            curves,
        ),
        Some("png") => draw(
            BitMapBackend::new(path, SIZE).into_drawing_area(),
            title,
            curves,
        ),
        _ => bail!("{}: the plot is written as .svg or .png", path.display()),
    };
    result.with_context(|| format!("drawing {}", path.display()))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    curves: &[Curve],
) -> anyhow::Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let pts = curves.iter().flat_map(|(_, p)| p.iter());
    let (mut xmin, mut xmax, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(b, y) in pts {
        let x = (b.max(1) as f64).log2();
        xmin = xmin.min(x.floor());
        xmax = xmax.max(x.ceil());
        ymax = ymax.max(y);
    }
    if xmax <= xmin {
        xmax = xmin + 1.0;
    }
    let ytop = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin..xmax, 0.0..ytop)
        .map_err(err)?;
    let span = (xmax - xmin) as usize;
    chart
        .configure_mesh()
        .x_desc("message size (bytes, log scale)")
        .y_desc("bus bandwidth (GB/s)")
        .x_labels(span.min(16) + 1)
        .x_label_formatter(&|x| human(2f64.powf(*x)))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let xy: Vec<(f64, f64)> = points
            .iter()
            .map(|&(b, y)| ((b.max(1) as f64).log2(), y))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        chart
            .draw_series(xy.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The runs in one file: JSON lines (grouped by collective and rank count) or nccl-tests-style
/// text. Labels start with the file's stem so two files stay apart in the legend.
pub fn read_runs(path: &Path) -> anyhow::Result<Vec<Curve>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runs = parse_runs(&text, &stem);
    if runs.iter().all(|(_, p)| p.is_empty()) {
        bail!(
            "{}: no rows with a size and a bus bandwidth (expected --json lines or nccl-tests' table)",
            path.display()
        );
    }
    Ok(runs)
}

fn parse_runs(text: &str, stem: &str) -> Vec<Curve> {
    let mut runs: Vec<Curve> = Vec::new();
    let mut busbw_col = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('{') {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(t) else {
                continue;
            };
            let (Some(b), Some(bw)) = (v["bytes"].as_u64(), v["busbw_gbps"].as_f64()) else {
                continue;
            };
            let mut label = stem.to_string();
            if let Some(c) = v["collective"].as_str() {
                label += &format!(" {c}");
            }
            if let Some(n) = v["ranks"].as_u64() {
                label += &format!(" ({n} ranks)");
            }
            if let Some(d) = v["dtype"].as_str().filter(|d| *d != "float") {
                label += &format!(" {d}");
            }
            match runs.iter_mut().find(|(l, _)| *l == label) {
                Some((_, pts)) => pts.push((b, bw)),
                None => runs.push((label, vec![(b, bw)])),
            }
        } else if let Some(h) = t.strip_prefix('#') {
            let cols: Vec<&str> = h.split_whitespace().collect();
            if let Some(i) = cols.iter().position(|c| c.starts_with("busbw")) {
                busbw_col = Some(i);
            }
        } else if let Some(i) = busbw_col {
            let cols: Vec<&str> = t.split_whitespace().collect();
            let (Some(b), Some(bw)) = (
                cols.first().and_then(|c| c.parse::<u64>().ok()),
                cols.get(i).and_then(|c| c.parse::<f64>().ok()),
            ) else {
                continue;
            };
            match runs.last_mut() {
                Some((l, pts)) if l == stem => pts.push((b, bw)),
                _ => runs.push((stem.to_string(), vec![(b, bw)])),
            }
        }
    }
    runs
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The chart to write (.svg or .png).
    #[arg(short, long)]
    output: PathBuf,
    /// The chart's title.
    #[arg(long, default_value = "bus bandwidth")]
    title: String,
    /// Runs to draw: `oxccl-bench ... --json` output, or nccl-tests-style text (nccl-tests
    /// itself, `shared/peers/mpi_allreduce`).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

/// `oxccl-bench plot -o chart.png a.json b.txt`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut curves = Vec::new();
    for f in &args.runs {
        curves.extend(read_runs(f)?);
    }
    write(&args.output, &args.title, &curves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nccl_tests_text_and_json() {
        let nccl = "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong\n\
                    #        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)\n\
                    8  2  float  sum  -1  10.59  0.00  0.01  0  10.41  0.00  0.00  0\n\
                    1048576  262144  float  sum  -1  100.0  10.49  15.73  0  99.0  10.59  15.89  0\n\
                    # Avg bus bandwidth    : 7.9\n";
        let runs = parse_runs(nccl, "nccl");
        assert_eq!(
            runs,
            vec![("nccl".to_string(), vec![(8, 0.01), (1048576, 15.73)])]
        );
        // shared/peers/mpi_allreduce's columns: busbw is the sixth.
        let mpi = "# size(B) count type time(us) algbw busbw iters wrong\n  1024 256 float 5.0 0.2 0.3 100 0\n";
        assert_eq!(parse_runs(mpi, "mpi")[0].1, vec![(1024, 0.3)]);
        let json =
            r#"{"collective":"all-reduce","ranks":2,"bytes":64,"busbw_gbps":0.5,"dtype":"float"}"#;
        assert_eq!(
            parse_runs(json, "ox")[0],
            ("ox all-reduce (2 ranks)".to_string(), vec![(64, 0.5)])
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(8.0), "8");
        assert_eq!(human(65536.0), "64K");
        assert_eq!(human(33554432.0), "32M");
        assert_eq!(human(3000.0), "3000");
    }
}
