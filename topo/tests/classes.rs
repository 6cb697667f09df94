//! Path classes computed from XML agree with published `nvidia-smi topo -m` output for the
//! same machine models, and NV# is counted from NVLink bandwidth or NCCL `nvlink` entries.

mod common;

use oxccl_topo::sources::{self, nvidia_smi};
use oxccl_topo::{PathClass, Topology};
use std::path::Path;

fn load(root: &Path, rel: &str) -> Topology {
    sources::load_topology_file(&root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// IBM AC922: PCIe/NUMA classes of LLNL Lassen's hwloc XML against Princeton Traverse's
/// nvidia-smi output (same model, different hosts: GPUs and mlx5 NICs compared by name).
#[test]
fn ac922_xml_classes_match_published_matrix() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let t = load(&root, "hwloc-xml/llnl-lassen-ibm-ac922-power9-4xV100.xml");
    let text = std::fs::read_to_string(root.join("nvidia-smi/ibm-ac922-traverse-4xv100-4nic.txt"))
        .expect("read txt");
    let published = nvidia_smi::parse("traverse", &text).expect("parse txt");
    let ours = t.matrix();
    assert_eq!(ours.n_gpus(), published.n_gpus());
    assert_eq!(ours.nic_names, published.nic_names, "NIC order");
    let mut compared = 0;
    for i in 0..ours.cells.len() {
        for j in 0..ours.cells.len() {
            let want = published.cells[i][j];
            if matches!(want, PathClass::NvLink(_)) {
                continue; // Lassen's XML carries no NVLink data.
            }
            assert_eq!(ours.cells[i][j], want, "cell {i},{j}");
            compared += 1;
        }
    }
    assert!(compared >= 60, "only {compared} cells compared");
    // CPU affinity: GPUs 0-1 on the first socket, 2-3 on the second, as published.
    assert_eq!(
        ours.numa_affinity,
        vec![
            Some("0".into()),
            Some("0".into()),
            Some("8".into()),
            Some("8".into())
        ]
    );
}

/// S822LC "Minsky": P100s paired by two NVLink 1.0 links (40 GB/s) -> NV2, else SYS.
#[test]
fn s822lc_nvlink_bandwidth_gives_nv2() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let t = load(&root, "hwloc-xml/ibm-s822lc-power8-4xP100-nvlink.xml");
    let g = t.gpus();
    assert_eq!(g.len(), 4);
    assert_eq!(t.path_class(g[0], g[1]), PathClass::NvLink(2));
    assert_eq!(t.path_class(g[2], g[3]), PathClass::NvLink(2));
    assert_eq!(t.path_class(g[0], g[2]), PathClass::Sys);
    assert_eq!(t.path_bandwidth(g[0], g[1]), Some(40.0));
}

/// DGX-2H: every V100 reaches every other through 6 NVSwitches, one link each -> NV6.
#[test]
fn dgx2h_nvswitch_gives_nv6_everywhere() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let t = load(&root, "hwloc-xml/nvidia-dgx2h-16xV100-nvswitch.xml");
    let g = t.gpus();
    assert_eq!(g.len(), 16);
    for a in &g {
        for b in &g {
            let want = if a == b {
                PathClass::Same
            } else {
                PathClass::NvLink(6)
            };
            assert_eq!(t.path_class(*a, *b), want);
        }
    }
    assert_eq!(t.path_bandwidth(g[0], g[15]), Some(150.0));
}

/// NCCL XML nvlink entries: IBM Cloud H100 (5+5+4+4 links to 4 NVSwitches) -> NV18, the
/// value published for HGX H100/H20 systems; PIX between each GPU and its NIC.
#[test]
fn nccl_nvlink_entries_give_nv18() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let t = load(&root, "nccl-xml/ibm-cloud-gx3d-8xh100.xml");
    let m = t.matrix();
    let text =
        std::fs::read_to_string(root.join("nvidia-smi/hgx-h20-8gpu-11nic.txt")).expect("read txt");
    let published = nvidia_smi::parse("h20", &text).expect("parse");
    assert_eq!(
        m.block(true, true),
        published.block(true, true),
        "GPU-GPU block of an HGX H100 8-GPU board"
    );
    let g = t.gpus();
    let nic = t.nearest_nic(g[0]).expect("a NIC");
    assert_eq!(t.device_name(nic), "mlx5_7");
    assert_eq!(t.path_class(g[0], nic), PathClass::Pix);
}

/// Queries on the Pascal node: both P100s and the IB NIC sit under one PCIe switch tree.
#[test]
fn nearest_nic_and_local_cpus() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let t = load(&root, "hwloc-xml/llnl-pascal-broadwell-2xP100-ib.xml");
    let g = t.gpus();
    let nic = t.nearest_nic(g[0]).expect("nic");
    assert_eq!(t.device_name(nic), "mlx5_0");
    assert!(matches!(
        t.path_class(g[0], nic),
        PathClass::Pix | PathClass::Pxb
    ));
    let cpus = t.local_cpuset(g[0]);
    assert_eq!(
        cpus.to_list_string(),
        t.obj(t.objects_of_type(oxccl_topo::ObjType::Package)[0])
            .cpuset
            .to_list_string()
    );
    assert!(t.path_bandwidth(g[0], nic).is_some_and(|b| b > 1.0));
}

/// A cluster of DGX-2H-like nodes: 16 GPUs per node, 8 nodes per leaf, 4 leaves.
#[test]
fn cluster_dimensions_from_real_nodes() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let node = load(&root, "hwloc-xml/nvidia-dgx2h-16xV100-nvswitch.xml");
    let tier = |name: &str, fanout| oxccl_topo::NetworkTier {
        name: name.into(),
        fanout,
        bandwidth_gbs: 12.5,
        latency_us: 1.5,
    };
    let c = oxccl_topo::Cluster::uniform(node, 32, vec![tier("leaf", 8), tier("spine", 4)])
        .expect("cluster");
    assert_eq!(c.dimensions().expect("dims"), vec![16, 8, 4]);
    assert_eq!(c.world_size(), 512);
    assert_eq!(c.intra_node_bandwidth(), Some(150.0));
}

/// hwloc XML -> NCCL XML -> import keeps GPUs, NICs, NVLink counts and the classes NCCL's
/// format can express (it has no host bridges, so PHB between root ports becomes NODE).
#[test]
fn nccl_export_round_trip_keeps_classes() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    for rel in [
        "hwloc-xml/llnl-lassen-ibm-ac922-power9-4xV100.xml",
        "hwloc-xml/nvidia-dgx2h-16xV100-nvswitch.xml",
        "hwloc-xml/llnl-pascal-broadwell-2xP100-ib.xml",
    ] {
        let t = load(&root, rel);
        let xml = sources::nccl_xml::to_string(&t);
        let back = sources::nccl_xml::parse("exported.xml", xml.as_bytes())
            .unwrap_or_else(|e| panic!("{rel}: {e}\n{xml}"));
        assert_eq!(back.gpus().len(), t.gpus().len(), "{rel}");
        assert_eq!(back.nics().len(), t.nics().len(), "{rel}");
        let (a, b) = (t.matrix(), back.matrix());
        assert_eq!(a.nic_names, b.nic_names, "{rel}");
        for i in 0..a.cells.len() {
            for j in 0..a.cells.len() {
                let want = match a.cells[i][j] {
                    PathClass::Phb => PathClass::Node,
                    c => c,
                };
                assert_eq!(b.cells[i][j], want, "{rel}: cell {i},{j}");
            }
        }
    }
}
