//! Comparisons with hwloc itself, run when `lstopo-no-graphics` is on PATH (Debian package
//! `hwloc`); each test prints why it skips otherwise.

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use oxccl_topo::sources::{self, hwloc_xml, hwloc_xml_export, synthetic, sysfs};
use oxccl_topo::{ObjAttr, ObjType, Topology};
use std::path::Path;
use std::process::Command;

fn lstopo() -> Option<std::path::PathBuf> {
    let p = common::which("lstopo-no-graphics");
    if p.is_none() {
        skip!("skipping: lstopo-no-graphics not on PATH (install Debian's hwloc package)");
    }
    p
}

/// Runs `lstopo-no-graphics ARGS --of xml` and imports its output.
fn hwloc_xml_of(bin: &Path, args: &[&str]) -> Topology {
    let out = Command::new(bin)
        .args(args)
        .args(["--of", "xml"])
        .output()
        .expect("run lstopo-no-graphics");
    assert!(
        out.status.success(),
        "lstopo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    hwloc_xml::parse("lstopo-output.xml", &out.stdout).expect("import lstopo's XML")
}

fn cpu_counts(t: &Topology) -> Vec<(ObjType, usize)> {
    [
        ObjType::Package,
        ObjType::NUMANode,
        ObjType::Core,
        ObjType::PU,
        ObjType::L1Cache,
        ObjType::L1iCache,
        ObjType::L2Cache,
        ObjType::L3Cache,
    ]
    .iter()
    .map(|k| (*k, t.count(*k)))
    .collect()
}

#[test]
fn live_discovery_matches_lstopo() {
    let Some(bin) = lstopo() else { return };
    if !Path::new("/sys/devices/system/cpu").is_dir() {
        skip!("skipping: no /sys/devices/system/cpu (not Linux?)");
        return;
    }
    let ours = sysfs::discover(Path::new("/")).expect("discover this machine");
    let theirs = hwloc_xml_of(&bin, &[]);
    assert_eq!(cpu_counts(&ours), cpu_counts(&theirs));
}

/// What we write, hwloc reads back with the same counts (I/O included).
#[test]
fn our_xml_reads_back_in_lstopo() {
    let Some(bin) = lstopo() else { return };
    let mut cases: Vec<(String, Topology)> = vec![
        (
            "live".into(),
            sysfs::discover(Path::new("/")).expect("discover"),
        ),
        (
            "synthetic".into(),
            synthetic::parse("pack:2 [numa(memory=64GiB)] l3:2(size=16MiB) core:4 pu:2")
                .expect("synthetic"),
        ),
    ];
    if let Some(root) = common::shared_dir() {
        for rel in [
            "hwloc-xml/llnl-lassen-ibm-ac922-power9-4xV100.xml",
            "hwloc-xml/nvidia-dgx2h-16xV100-nvswitch.xml",
            "hwloc-xml/intel-knl-7250-snc4-flat.xml",
            "hwloc-xml/sgi-uv-192em64t-12gr2n8c2t.xml",
            "nccl-xml/ibm-cloud-gx3d-8xh100.xml",
        ] {
            cases.push((
                rel.into(),
                sources::load_topology_file(&root.join(rel)).expect(rel),
            ));
        }
    }
    let tmp = common::TempDir::new("roundtrip");
    for (name, t) in cases {
        let file = tmp.0.join("ours.xml");
        std::fs::write(&file, hwloc_xml_export::to_string(&t)).expect("write");
        let back = hwloc_xml_of(
            &bin,
            &["-i", file.to_str().expect("utf8 path"), "--whole-io"],
        );
        assert_eq!(
            back.counts(),
            t.counts(),
            "{name}: counts after lstopo read our XML"
        );
        assert_eq!(
            back.distances.len(),
            t.distances.len(),
            "{name}: distance matrices"
        );
        assert_eq!(back.links.len(), t.links.len(), "{name}: links");
    }
}

/// A normalized dump: type, indexes, sets and sizes of every object in DFS order.
fn structure(t: &Topology) -> Vec<String> {
    t.dfs()
        .into_iter()
        .map(|id| {
            let o = t.obj(id);
            let extra = match &o.attr {
                ObjAttr::Numa { local_memory, .. } => format!("mem={local_memory}"),
                ObjAttr::Cache(c) => format!("size={} type={:?}", c.size, c.cache_type),
                _ => String::new(),
            };
            format!(
                "{} L#{} P#{:?} cpuset={} nodeset={} parent={:?} {extra}",
                o.kind,
                o.logical_index,
                o.os_index,
                o.cpuset,
                o.nodeset,
                o.parent.map(|p| t.obj(p).kind)
            )
        })
        .collect()
}

#[test]
fn synthetic_structure_equals_hwloc() {
    let Some(bin) = lstopo() else { return };
    for s in [
        "pack:2 numa:2 core:8 pu:2",
        "pack:2 [numa(memory=128GiB)] l3:4(size=32MiB) l2:4(size=512KiB) l1d:1(size=32KiB) l1i:1(size=32KiB) core:1 pu:2",
        "pack:1 group:4 [numa(memory=24GiB)] [numa(memory=4GiB)] l2:9(size=1MiB) l1d:2(size=32KiB) core:1 pu:4",
        "pack:2 core:2 pu:1",
        "numa:2 pack:2 core:1 pu:1",
        "pack:2 group:2 numa:1 core:1 pu:1",
        "pack:1 l5:1 l4:1 l3:2 l2:1 l1i:1 core:1 pu:2",
    ] {
        let ours = structure(&synthetic::parse(s).expect(s));
        let theirs = structure(&hwloc_xml_of(&bin, &["-i", s]));
        assert_eq!(ours, theirs, "synthetic {s:?}");
    }
}
