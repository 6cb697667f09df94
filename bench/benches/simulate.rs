//! Simulator throughput: a 256-rank all-reduce of ResNet-50's gradients on DDL's cluster, per
//! algorithm. (The 4096-rank x 128 MiB ring is timed through the CLI; see
//! bench/results/simulator.md.)

use criterion::{criterion_group, criterion_main, Criterion};
use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::sim::{simulate, ClusterSpec, Network};
use serde::Deserialize;

fn ddl() -> Network {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters/ddl-2017.toml");
    let text = std::fs::read_to_string(&path).expect("bench/clusters/ddl-2017.toml");
    let mut table: toml::Table = toml::from_str(&text).expect("valid TOML");
    // The `[device]` table is for `--model`, not part of the network description.
    table.remove("device");
    let spec = ClusterSpec::deserialize(toml::Value::Table(table)).expect("valid cluster file");
    Network::new(&spec).expect("valid cluster")
}

fn bench(c: &mut Criterion) {
    let net = ddl();
    let mut g = c.benchmark_group("simulate/ddl-2017/256 ranks/102.4 MB");
    g.sample_size(10);
    for name in ["ring", "tree", "hier:4x8x8"] {
        let algo: Algorithm = name.parse().expect("algorithm name");
        let s = algo
            .schedule(Collective::AllReduce, 256, 4)
            .expect("schedule");
        g.bench_function(name, |b| {
            b.iter(|| simulate(&net, &s, 102_400_000, 4).expect("simulation"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
