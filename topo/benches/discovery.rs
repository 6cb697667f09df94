//! Times sysfs discovery of this machine, hwloc XML import and export, NCCL XML import and
//! synthetic construction. Compare with `lstopo-no-graphics --of xml` (see
//! `bench/results/topo.md` for how).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use oxccl_topo::sources::{hwloc_xml, hwloc_xml_export, nccl_xml, synthetic, sysfs};
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/topologies"
    ))
    .join(rel);
    p.is_file().then_some(p)
}

fn benches(c: &mut Criterion) {
    let root = Path::new("/");
    let live = sysfs::discover(root).expect("discover this machine");
    c.bench_function("sysfs_discover_this_machine", |b| {
        b.iter(|| sysfs::discover(black_box(root)).expect("discover"))
    });

    let live_xml = hwloc_xml_export::to_string(&live);
    c.bench_function("hwloc_xml_import_this_machine", |b| {
        b.iter(|| hwloc_xml::parse("live.xml", black_box(live_xml.as_bytes())).expect("import"))
    });
    c.bench_function("hwloc_xml_export_this_machine", |b| {
        b.iter(|| hwloc_xml_export::to_string(black_box(&live)))
    });

    for rel in [
        "hwloc-xml/llnl-lassen-ibm-ac922-power9-4xV100.xml",
        "hwloc-xml/amd-zen4-2xepyc9654.xml",
    ] {
        let Some(p) = shared(rel) else {
            println!("skipping {rel}: shared topologies not found");
            continue;
        };
        let data = std::fs::read(&p).expect("read");
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        c.bench_function(&format!("hwloc_xml_import_{name}"), |b| {
            b.iter(|| hwloc_xml::parse("f.xml", black_box(&data)).expect("import"))
        });
    }
    if let Some(p) = shared("nccl-xml/ibm-cloud-gx3d-8xh100.xml") {
        let data = std::fs::read(&p).expect("read");
        c.bench_function("nccl_xml_import_gx3d_8xh100", |b| {
            b.iter(|| nccl_xml::parse("n.xml", black_box(&data)).expect("import"))
        });
    }
    c.bench_function("synthetic_2pack_2numa_8core_smt2", |b| {
        b.iter(|| synthetic::parse(black_box("pack:2 numa:2 core:8 pu:2")).expect("synthetic"))
    });
}

criterion_group! {
    name = topo;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(topo);
