//! Reading cluster description files (TOML, or JSON when the name ends in `.json`).
//!
//! A file may add a `[device]` table (how fast each device trains, for `--model`); it is read
//! here, beside the collectives crate's `ClusterSpec`, which describes only the network.

use anyhow::Context;
use oxccl_collectives::sim::{ClusterSpec, Network};
use serde::Deserialize;
use std::path::Path;

/// A cluster file's `[device]` table: the training speed of one device.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// The device's name, printed with predictions.
    pub name: String,
    /// Dense peak of the math a mixed-precision training step runs on (16-bit tensor cores
    /// where the device has them), in TFLOP/s.
    pub peak_tflops: f64,
    /// Fraction of that peak a training step sustains (model FLOPs utilisation).
    pub utilization: f64,
    /// Device memory in GB.
    pub memory_gb: f64,
}

impl DeviceSpec {
    /// Sustained training FLOP/s.
    pub fn flops(&self) -> f64 {
        self.peak_tflops * 1e12 * self.utilization
    }

    fn validate(&self) -> anyhow::Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !(ok(self.peak_tflops) && ok(self.memory_gb)) {
            anyhow::bail!("device.peak_tflops and device.memory_gb must be > 0");
        }
        if !(ok(self.utilization) && self.utilization <= 1.0) {
            anyhow::bail!("device.utilization must be in (0, 1]");
        }
        Ok(())
    }
}

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

/// Deserializes a description; errors name the file, the line (unless the file has a
/// `[device]` table) and the field.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<ClusterSpec> {
    Ok(parse_with_device(text, path)?.0)
}

/// [`parse`], plus the file's `[device]` table if it has one.
pub fn parse_with_device(
    text: &str,
    path: &Path,
) -> anyhow::Result<(ClusterSpec, Option<DeviceSpec>)> {
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let context = || format!("cluster file {}", path.display());
    let (spec, device) = if json {
        let mut value: serde_json::Value = serde_json::from_str(text).with_context(context)?;
        let device = value.as_object_mut().and_then(|o| o.remove("device"));
        let device = device
            .map(serde_json::from_value::<DeviceSpec>)
            .transpose()
            .with_context(context)?;
        (serde_json::from_value(value).with_context(context)?, device)
    } else {
        let toml_error =
            |e: toml::de::Error| anyhow::anyhow!("{}: {}", context(), e.to_string().trim_end());
        let mut table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        match table.remove("device") {
            // Without a device table, parse the text itself, so errors carry line numbers.
            None => (toml::from_str(text).map_err(toml_error)?, None),
            Some(device) => (
                ClusterSpec::deserialize(toml::Value::Table(table)).map_err(toml_error)?,
                Some(DeviceSpec::deserialize(device).map_err(toml_error)?),
            ),
        }
    };
    if let Some(d) = &device {
        d.validate().with_context(context)?;
    }
    Ok((spec, device))
}

/// The `[device]` table of the cluster file at `path`, if it has one.
pub fn device(path: &Path) -> anyhow::Result<Option<DeviceSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading cluster file {}", path.display()))?;
    Ok(parse_with_device(&text, path)?.1)
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
    fn device_tables_are_read_beside_the_network() {
        for (name, peak) in [("ddl-2017.toml", 21.2), ("dgx-h100-pod.toml", 989.4)] {
            let d = device(&clusters().join(name)).unwrap().unwrap();
            assert_eq!(d.peak_tflops, peak, "{name}");
        }
        assert_eq!(device(&clusters().join("ethernet-1g.toml")).unwrap(), None);
        // The same file as JSON carries its device table too.
        let text = std::fs::read_to_string(clusters().join("ddl-2017.toml")).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let json = serde_json::to_string(&table).unwrap();
        let (spec, dev) = parse_with_device(&json, Path::new("x.json")).unwrap();
        assert_eq!(spec, parse(&text, Path::new("x.toml")).unwrap());
        assert_eq!(dev.unwrap().name, "Tesla P100 SXM2");
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
        let bad = text.replacen("utilization = 0.", "utilization = 1.", 1);
        let e = parse(&bad, p).unwrap_err();
        assert!(format!("{e:#}").contains("device.utilization"), "{e:#}");
        let neg = text.replacen("latency_us = 1.0", "latency_us = -1.0", 1);
        assert_ne!(neg, text);
        let spec = parse(&neg, p).unwrap();
        let e = Network::new(&spec).unwrap_err().to_string();
        assert!(e.contains("latency_us") && e.contains(">= 0"), "{e}");
    }
}
