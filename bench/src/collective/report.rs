//! What rank 0 prints: nccl-tests' table (the same columns, widths and summary lines, so the
//! scripts written for nccl-tests read it), CSV, or one JSON object per row.

/// One half of a row: out of place or in place.
#[derive(Clone, Copy, Debug)]
pub struct Half {
    pub time_us: f64,
    pub algbw: f64,
    pub busbw: f64,
    /// Wrong elements over all ranks; `None` when not checked (`-c 0`), printed `N/A`.
    pub wrong: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Row {
    pub collective: &'static str,
    pub ranks: usize,
    pub size: usize,
    pub count: usize,
    pub dtype: &'static str,
    pub redop: &'static str,
    pub root: i64,
    pub out_of_place: Half,
    pub in_place: Half,
    pub algo: String,
    pub iters: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// The column header of nccl-tests (`common.cu`), with the optional algorithm column after the
/// last standard one, so parsers that pick columns by position keep working.
pub fn table_header(show_algo: bool) -> String {
    let (a1, a2) = if show_algo {
        (format!("  {:>8}", "algo"), format!("  {:>8}", ""))
    } else {
        (String::new(), String::new())
    };
    format!(
        "#\n# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}           out-of-place                       in-place          \n\
         # {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6} {:>6}  {:>7}  {:>6}  {:>6} {:>6}{a1}\n\
         # {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>5}  {:>7}  {:>6}  {:>6}  {:>5}{a2}",
        "", "", "", "", "",
        "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
        "algbw", "busbw", "#wrong",
        "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
        "(GB/s)", ""
    )
}

/// nccl-tests' time format: fewer decimals as the time grows, always 7 wide.
fn time_str(us: f64) -> String {
    if us >= 10000.0 {
        format!("{us:7.0}")
    } else if us >= 100.0 {
        format!("{us:7.1}")
    } else {
        format!("{us:7.2}")
    }
}

fn wrong_str(w: Option<u64>) -> String {
    match w {
        Some(w) => format!("{w:5}"),
        None => format!("{:>5}", "N/A"),
    }
}

pub fn table_row(r: &Row, show_algo: bool) -> String {
    let mut s = format!(
        "{:12}  {:12}  {:>8}  {:>6}  {:6}",
        r.size, r.count, r.dtype, r.redop, r.root
    );
    for h in [&r.out_of_place, &r.in_place] {
        s += &format!(
            "  {}  {:6.2}  {:6.2}  {}",
            time_str(h.time_us),
            h.algbw,
            h.busbw,
            wrong_str(h.wrong)
        );
    }
    if show_algo {
        s += &format!("  {:>8}", r.algo);
    }
    s
}

pub const CSV_HEADER: &str = "collective,ranks,size,count,type,redop,root,\
time_us,algbw_gbps,busbw_gbps,wrong,\
time_us_in_place,algbw_gbps_in_place,busbw_gbps_in_place,wrong_in_place,algo";

pub fn csv_row(r: &Row) -> String {
    let w = |h: &Half| h.wrong.map(|w| w.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{:.3},{:.6},{:.6},{},{:.3},{:.6},{:.6},{},{}",
        r.collective,
        r.ranks,
        r.size,
        r.count,
        r.dtype,
        r.redop,
        r.root,
        r.out_of_place.time_us,
        r.out_of_place.algbw,
        r.out_of_place.busbw,
        w(&r.out_of_place),
        r.in_place.time_us,
        r.in_place.algbw,
        r.in_place.busbw,
        w(&r.in_place),
        r.algo
    )
}

/// One JSON object; `bytes`, `time_us` and `busbw_gbps` (out of place) are what
/// `shared/peers/compare.sh` and `oxccl-bench plot` read.
pub fn json_row(r: &Row) -> String {
    serde_json::json!({
        "collective": r.collective, "algo": r.algo, "ranks": r.ranks, "bytes": r.size,
        "count": r.count, "dtype": r.dtype, "op": r.redop, "root": r.root,
        "time_us": r.out_of_place.time_us, "algbw_gbps": r.out_of_place.algbw,
        "busbw_gbps": r.out_of_place.busbw, "wrong": r.out_of_place.wrong,
        "time_us_in_place": r.in_place.time_us, "algbw_gbps_in_place": r.in_place.algbw,
        "busbw_gbps_in_place": r.in_place.busbw, "wrong_in_place": r.in_place.wrong,
        "iters": r.iters,
    })
    .to_string()
}

/// `# Algorithm: tree 8-4096, ring 8192-33554432`: the tuner's choice by size, one comment line
/// per sweep (it may change with the size, so it cannot be a header field).
pub fn algo_line(rows: &[Row]) -> String {
    let mut parts: Vec<(String, usize, usize)> = Vec::new();
    for r in rows {
        match parts.last_mut() {
            Some((a, _, hi)) if *a == r.algo => *hi = r.size,
            _ => parts.push((r.algo.clone(), r.size, r.size)),
        }
    }
    let list: Vec<String> = parts
        .iter()
        .map(|(a, lo, hi)| {
            if lo == hi {
                format!("{a} {lo}")
            } else {
                format!("{a} {lo}-{hi}")
            }
        })
        .collect();
    format!("# Algorithm (by size in B): {}", list.join(", "))
}

/// The two summary lines of nccl-tests, with its spacing (scripts grep for them).
pub fn summary(wrong: u64, avg_busbw: f64) -> String {
    format!(
        "# Out of bounds values : {wrong} {}\n# Avg bus bandwidth    : {} \n#",
        if wrong == 0 { "OK" } else { "FAILED" },
        fmt_g(avg_busbw)
    )
}

/// C's `%g`: 6 significant digits, trailing zeros dropped, exponent form outside 1e-4..1e6.
pub fn fmt_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    let exp = v.abs().log10().floor() as i32;
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..6).contains(&exp) {
        let s = format!("{v:.5e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        format!(
            "{}e{}{:02}",
            trim(m.to_string()),
            if e < 0 { '-' } else { '+' },
            e.abs()
        )
    } else {
        trim(format!("{v:.*}", (5 - exp).max(0) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_g_matches_c() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (48.0521, "48.0521"),
            (0.123456789, "0.123457"),
            (123456.7, "123457"),
            (1234567.0, "1.23457e+06"),
            (0.00001234, "1.234e-05"),
            (0.5, "0.5"),
        ] {
            assert_eq!(fmt_g(v), want, "{v}");
        }
    }

    fn row() -> Row {
        let h = Half {
            time_us: 12.345,
            algbw: 1.5,
            busbw: 1.5,
            wrong: Some(0),
        };
        Row {
            collective: "all-reduce",
            ranks: 2,
            size: 1024,
            count: 256,
            dtype: "float",
            redop: "sum",
            root: -1,
            out_of_place: h,
            in_place: Half { wrong: None, ..h },
            algo: "ring".into(),
            iters: 20,
        }
    }

    #[test]
    fn table_row_has_nccl_tests_columns() {
        let s = table_row(&row(), false);
        let cols: Vec<&str> = s.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "1024", "256", "float", "sum", "-1", "12.35", "1.50", "1.50", "0", "12.35", "1.50",
                "1.50", "N/A"
            ]
        );
        // The algorithm column comes last, after the thirteen standard ones.
        assert!(table_row(&row(), true).ends_with("ring"));
        // The header's column names line up with the values' positions.
        let h = table_header(false);
        let names: Vec<&str> = h
            .lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .skip(1)
            .collect();
        assert_eq!(names.len(), cols.len());
    }

    #[test]
    fn algorithm_ranges() {
        let mut a = row();
        let mut rows = vec![a.clone()];
        a.size = 2048;
        rows.push(a.clone());
        a.size = 4096;
        a.algo = "rhd".into();
        rows.push(a);
        assert_eq!(
            algo_line(&rows),
            "# Algorithm (by size in B): ring 1024-2048, rhd 4096"
        );
    }
}
