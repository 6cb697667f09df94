//! `nvidia-smi topo -m` (and the older `topo --matrix`) text: the GPU/NIC matrix only.
//! Columns may be separated by tabs or spaces; the legacy `SOC` code is kept as printed.

use crate::error::TopoError;
use crate::matrix::PathMatrix;
use crate::query::PathClass;

/// Whether `text` looks like `nvidia-smi topo -m` output.
pub fn looks_like(text: &str) -> bool {
    text.lines().any(|l| {
        let mut w = l.split_whitespace();
        w.next() == Some("GPU0") || l.trim_start().starts_with("GPU0\t") || l.contains("\tGPU0")
    }) && text
        .lines()
        .any(|l| l.split_whitespace().next() == Some("GPU0"))
}

/// Parses the matrix; `file` names the input in errors.
pub fn parse(file: &str, text: &str) -> Result<PathMatrix, TopoError> {
    let data = text.as_bytes();
    let mut offset = 0usize;
    let mut lines: Vec<(usize, &str)> = Vec::new();
    for l in text.split_inclusive('\n') {
        lines.push((offset, l.trim_end_matches(['\n', '\r'])));
        offset += l.len();
    }
    let err = |off: usize, msg: String| TopoError::at_offset(file, data, off, msg);
    let hidx = lines
        .iter()
        .position(|(_, l)| {
            !l.trim_start().starts_with('#') && l.split_whitespace().next() == Some("GPU0")
        })
        .ok_or_else(|| {
            err(
                0,
                "no header line starting with GPU0 (not nvidia-smi topo -m output?)".into(),
            )
        })?;
    let (hoff, header) = lines[hidx];
    let words: Vec<&str> = header.split_whitespace().collect();
    let mut labels: Vec<String> = Vec::new();
    let mut extra: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let rest = &words[i..];
        if rest.starts_with(&["CPU", "Affinity"]) {
            extra.push("cpu");
            i += 2;
        } else if rest.starts_with(&["NUMA", "Affinity"]) {
            extra.push("numa");
            i += 2;
        } else if rest.starts_with(&["GPU", "NUMA", "ID"]) {
            extra.push("gpunuma");
            i += 3;
        } else if extra.is_empty() {
            labels.push(w.to_string());
            i += 1;
        } else {
            return Err(err(
                hoff,
                format!("unexpected header word {w:?} after the affinity columns"),
            ));
        }
    }
    let n = labels.len();
    let n_gpus = labels.iter().take_while(|l| l.starts_with("GPU")).count();
    if labels[n_gpus..].iter().any(|l| l.starts_with("GPU")) {
        return Err(err(hoff, "GPU columns must come before NIC columns".into()));
    }
    let mut cells: Vec<Vec<PathClass>> = vec![Vec::new(); n];
    let mut seen = vec![false; n];
    let mut cpu = vec![None; n_gpus];
    let mut numa = vec![None; n_gpus];
    let mut gpunuma = vec![String::from("N/A"); n_gpus];
    let mut nic_names: Vec<String> = labels[n_gpus..].to_vec();
    let mut in_nic_legend = false;
    for &(off, line) in &lines[hidx + 1..] {
        let t = line.trim();
        if t.starts_with("Legend") {
            in_nic_legend = false;
            continue;
        }
        if t.starts_with("NIC Legend") {
            in_nic_legend = true;
            continue;
        }
        if in_nic_legend {
            if let Some((k, v)) = t.split_once(':') {
                if let Some(p) = labels[n_gpus..].iter().position(|l| l == k.trim()) {
                    nic_names[p] = v.trim().to_string();
                }
            }
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = toks.first() else { continue };
        let Some(row) = labels.iter().position(|l| l == first) else {
            continue;
        };
        if seen[row] {
            continue;
        }
        if toks.len() < n + 1 {
            return Err(err(
                off,
                format!("row {first} has {} cells, expected {n}", toks.len() - 1),
            ));
        }
        let mut from = line.find(first).unwrap_or(0) + first.len();
        for (j, tok) in toks[1..=n].iter().enumerate() {
            let pos = line[from..].find(tok).map(|p| p + from).unwrap_or(from);
            from = pos + tok.len();
            let col_off = off + pos;
            let c: PathClass = tok.parse().map_err(|m: String| err(col_off, m))?;
            if (j == row) != (c == PathClass::Same) {
                return Err(err(
                    col_off,
                    format!("{first}: X must be on the diagonal only"),
                ));
            }
            cells[row].push(c);
        }
        if row < n_gpus {
            for (k, what) in extra.iter().enumerate() {
                let v = toks.get(n + 1 + k).map(|s| s.to_string());
                match *what {
                    "cpu" => cpu[row] = v,
                    "numa" => numa[row] = v,
                    _ => gpunuma[row] = v.unwrap_or_else(|| "N/A".into()),
                }
            }
        }
        seen[row] = true;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(err(text.len(), format!("no row for {}", labels[missing])));
    }
    Ok(PathMatrix {
        gpu_labels: labels[..n_gpus].to_vec(),
        nic_labels: labels[n_gpus..].to_vec(),
        nic_names,
        cells,
        cpu_affinity: cpu,
        numa_affinity: numa,
        gpu_numa_id: extra.contains(&"gpunuma").then_some(gpunuma),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let txt = "\tGPU0\tGPU1\tNIC0\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tNV2\tPIX\t0-3\t0\nGPU1\tNV2\t X \tSYS\t4-7\t1\nNIC0\tPIX\tSYS\t X \n\nNIC Legend:\n\n  NIC0: mlx5_0\n";
        let m = parse("t", txt).unwrap();
        assert_eq!(m.nic_names, vec!["mlx5_0"]);
        assert_eq!(m.block(true, false), vec![vec!["PIX"], vec!["SYS"]]);
        let again = parse("r", &m.render()).unwrap();
        assert_eq!(again, m);
        let e = parse("bad.txt", "\tGPU0\tGPU1\nGPU0\t X \tFOO\nGPU1\tSYS\t X \n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.txt:2:"), "{e}");
        assert!(parse("short.txt", "\tGPU0\tGPU1\nGPU0\t X \n").is_err());
        assert!(parse("none.txt", "hello").is_err());
    }
}
