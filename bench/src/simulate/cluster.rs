//! Reading cluster description files (TOML, or JSON when the name ends in `.json`).

use anyhow::Context;
use oxccl_collectives::sim::{ClusterSpec, Network};
use std::path::Path;

/// Parses and validates `path`, with `nodes` overriding the file's node count.
pub fn load(path: &Path, nodes: Option<usize>) -> anyhow::Result<(ClusterSpec, Network)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading cluster file {}", path.display()))?;
    let mut spec = parse(&text, path)?;
    if let Some(n) = nodes {
        spec.nodes = n;
    }
    let net = Network::new(&spec).with_context(|| format!("cluster file {}", path.display()))?;
    Ok((spec, net))
}

/// Deserializes a description; errors name the file, the line and the field.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<ClusterSpec> {
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        serde_json::from_str(text).with_context(|| format!("cluster file {}", path.display()))
    } else {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "cluster file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }
}

/// Writes `spec` as TOML.
pub fn save(spec: &ClusterSpec, path: &Path) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(spec).context("serializing cluster description")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters")
    }

    #[test]
    fn shipped_clusters_load() {
        for name in [
            "ddl-2017.toml",
            "ddl-2017-2nic.toml",
            "facebook-2017.toml",
            "dgx-h100-pod.toml",
            "ethernet-1g.toml",
        ] {
            let (spec, net) = load(&clusters().join(name), None).unwrap();
            assert!(net.devices() >= 16, "{name}: {}", spec.name);
        }
    }

    #[test]
    fn malformed_files_name_the_field() {
        let text = std::fs::read_to_string(clusters().join("ddl-2017.toml")).unwrap();
        let p = Path::new("x.toml");
        let typo = text.replacen("bandwidth_gb_s", "bandwith_gb_s", 1);
        let e = parse(&typo, p).unwrap_err().to_string();
        assert!(e.contains("bandwith_gb_s"), "{e}");
        let missing = text.replacen("reduce_gb_s", "# reduce_gb_s", 1);
        let e = parse(&missing, p).unwrap_err().to_string();
        assert!(e.contains("reduce_gb_s"), "{e}");
        let zero = text.replacen("bandwidth_gb_s = 12.5", "bandwidth_gb_s = 0.0", 1);
        let spec = parse(&zero, p).unwrap();
        let e = Network::new(&spec).unwrap_err().to_string();
        assert!(e.contains("node.nics[0].bandwidth_gb_s"), "{e}");
        let neg = text.replacen("latency_us = 1.0", "latency_us = -1.0", 1);
        assert_ne!(neg, text);
        let spec = parse(&neg, p).unwrap();
        let e = Network::new(&spec).unwrap_err().to_string();
        assert!(e.contains("latency_us") && e.contains(">= 0"), "{e}");
    }
}
