//! Malformed, truncated and random input: always an error naming the input and a
//! position, never a panic or a hang.

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use oxccl_topo::sources::{self, hwloc_xml, nccl_xml, nvidia_smi, synthetic};
use oxccl_topo::TopoError;
use proptest::prelude::*;

fn assert_positioned(e: &TopoError, file: &str) {
    match e {
        TopoError::Parse {
            file: f,
            line,
            column,
            ..
        } => {
            assert_eq!(f, file);
            assert!(*line >= 1 && *column >= 1);
        }
        TopoError::NcclGraphFile { file: f } => assert_eq!(f, file),
        other => panic!("expected a positioned parse error, got {other}"),
    }
}

#[test]
fn truncated_shared_files_fail_cleanly() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    for rel in [
        "hwloc-xml/llnl-lassen-ibm-ac922-power9-4xV100.xml",
        "hwloc-xml/intel-knl-7250-snc4-flat.xml",
        "nccl-xml/ibm-cloud-gx3d-8xh100.xml",
    ] {
        let data = std::fs::read(root.join(rel)).expect("read");
        // Cut at many points: every cut is an error (the root is never closed).
        for cut in (1..data.len() - 20).step_by(data.len() / 97 + 1) {
            let r = sources::load_bytes("cut.xml", &data[..cut]);
            match r {
                Ok(_) => panic!("{rel} cut at {cut} accepted"),
                Err(e) => {
                    if matches!(e, TopoError::Parse { .. }) {
                        assert_positioned(&e, "cut.xml");
                    }
                }
            }
        }
    }
}

#[test]
fn synthetic_pu_count_is_bounded() {
    // Found by the `synthetic` fuzz target: 82,820 PUs took over 10 s (cost grows with the
    // square of the PU count).
    let e = synthetic::parse("p:4 pu:20705").unwrap_err();
    assert!(e.to_string().contains("more than 16384 PUs"), "{e}");
    assert!(synthetic::parse("pack:2 core:4 pu:2").is_ok());
}

#[test]
fn objects_below_many_numa_nodes_get_their_node() {
    // The shape of a slow input the `synthetic` fuzz target found (`pack:53 numa:7 core:6
    // pu:6` took 50 s in a debug build when each nodeset was tested against every NUMA node).
    let t = synthetic::parse("pack:4 numa:8 core:2 pu:2").unwrap();
    let mut nodes = oxccl_topo::NodeSet::new();
    for (_, o) in t.iter().filter(|(_, o)| o.kind == oxccl_topo::ObjType::PU) {
        assert_eq!(o.nodeset.weight(), Some(1), "{o:?}");
        nodes.or_assign(&o.nodeset);
    }
    assert_eq!(nodes.weight(), Some(32));
}

#[test]
fn malformed_xml_names_line_and_column() {
    let e = hwloc_xml::parse("m.xml", b"<topology version=\"2.0\">\n<object type=\"Machine\">\n<object type=\"Banana\"/>\n</object>\n</topology>").unwrap_err();
    assert!(e.to_string().starts_with("m.xml:3:1:"), "{e}");
    let e = hwloc_xml::parse(
        "m.xml",
        b"<topology>\n<object type=\"Machine\" cpuset=\"0xZZ\"/>\n</topology>",
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("m.xml:2:1:"), "{e}");
    let e = nccl_xml::parse(
        "n.xml",
        b"<system version=\"1\">\n  <cpu numaid=\"x\"/>\n</system>",
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("n.xml:2:3:"), "{e}");
    let e =
        hwloc_xml::parse("a.xml", b"<topology><object type=\"Machine\"></topology>").unwrap_err();
    assert_positioned(&e, "a.xml");
    let e = synthetic::parse("pack:2 core:x pu:1").unwrap_err();
    assert!(e.to_string().starts_with("<synthetic>:1:13:"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 300 } else { 3000 }, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = sources::load_bytes("rand", &data);
        let _ = hwloc_xml::parse("rand", &data);
        let _ = nccl_xml::parse("rand", &data);
        if let Ok(s) = std::str::from_utf8(&data) {
            let _ = nvidia_smi::parse("rand", s);
            let _ = synthetic::parse(s);
        }
    }

    #[test]
    fn random_xml_like_text_never_panics(s in "(<topology( version=\"2.0\")?>|<system>|<object type=\"(Machine|Package|PU|NUMANode|Bridge|PCIDev|OSDev|L2Cache)\"( os_index=\"[0-9]{1,3}\")?( cpuset=\"0x[0-9a-f]{1,8}\")?( pci_busid=\"0000:0[0-9]:00.0\")?( bridge_type=\"[01]-1\")?( osdev_type=\"[0-9]\")?/?>|</object>|</topology>|<pci busid=\"0000:0[0-3]:00.0\" class=\"0x0[2-6]0[0-4]00\"/?>|</pci>|<cpu numaid=\"[0-3]\" affinity=\"[0-9a-f]{1,8}\">|</cpu>|<gpu dev=\"[0-9]\">|<nvlink target=\"0000:0[0-3]:00.0\" count=\"[0-9]\"/>|</gpu>| |\n){0,40}") {
        let _ = sources::load_bytes("gen.xml", s.as_bytes());
        let _ = hwloc_xml::parse("gen.xml", s.as_bytes());
        let _ = nccl_xml::parse("gen.xml", s.as_bytes());
    }

    #[test]
    fn random_synthetic_never_panics(s in "((pack|core|pu|numa|l[1-3][di]?|group|die|foo):[0-9](\\(size=[0-9]{1,3}[KMG]i?B\\))? |\\[numa(\\(memory=[0-9]GiB\\))?\\] ){0,5}") {
        if let Ok(t) = synthetic::parse(&s) {
            prop_assert!(t.counts().pus >= 1);
        }
    }

    #[test]
    fn random_matrix_text_never_panics(s in "(\t?(GPU[0-3]|NIC[0-2]|mlx5_[0-3])|\t( X |NV[0-9]{1,2}|PIX|PXB|PHB|NODE|SYS|SOC|[0-9,-]{1,6})|\n|CPU Affinity|NIC Legend:|  NIC0: mlx5_0){0,60}") {
        let _ = nvidia_smi::parse("gen.txt", &s);
    }
}

/// A container or VM exposes a partial /sys: discovery degrades, it never fails or panics.
#[test]
fn sysfs_with_missing_files_degrades() {
    let empty = common::TempDir::new("empty-sysfs");
    let t = sources::sysfs::discover(&empty.0).expect("an empty root still gives a topology");
    let c = t.counts();
    assert_eq!((c.pus, c.numa_nodes), (1, 1));
    assert!(sources::sysfs::discover(std::path::Path::new("/nonexistent-root")).is_err());

    let Some(root) = common::shared_dir() else {
        return;
    };
    let tmp = common::TempDir::new("holey-sysfs");
    let top = match common::extract(
        &root.join("sysfs/nvidia-dgx-spark-gb10-arm.tar.bz2"),
        &tmp.0,
    ) {
        Ok(t) => t,
        Err(e) => {
            skip!("skipping the holey-tree part: {e}");
            return;
        }
    };
    let mut files = Vec::new();
    let mut stack = vec![top.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(ft) if ft.is_dir() => stack.push(p),
                Ok(ft) if ft.is_file() => files.push(p),
                _ => {}
            }
        }
    }
    files.sort();
    // Remove a deterministic pseudo-random third of the files, then truncate another tenth.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for f in &files {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        match (x >> 33) % 10 {
            0..=2 => {
                let _ = std::fs::remove_file(f);
            }
            3 => {
                let _ = std::fs::write(f, b"\x00garbage\xff");
            }
            _ => {}
        }
    }
    let t = sources::sysfs::discover(&top).expect("holey tree");
    assert!(t.counts().pus >= 1);
    let _ = oxccl_topo::render::tree(&t);
    let _ = sources::hwloc_xml_export::to_string(&t);
}
